"""The layouts a published children set comes in, each read into one list of `Found` children (where each
child is, which parent it names, its caption index and caption when the set says them). Nothing is decoded
here: stages.importing.children checks and copies the images.

    cocofake    <root>/<split folder>/<parent file stem>/<child files>   (COCOFake: train2014/, val2014/)
                the caption index is read from a file name ending in `_<i>` or `-<i>` (or named `<i>.<ext>`),
                with i of one or two digits, 0-based; other names: unknown
    per_parent  <root>[/<generator>]/<split folder>/<parent id>.<ext>     (DRCT-2M: <generator>/train2017/...)
                one child per parent, caption index unknown
    manifest    a CSV, JSONL or Parquet file, one row per child: `path` (relative to the manifest's folder) or
                `image` (Parquet: the bytes, or a struct<bytes, path>), `parent`, and optionally
                `caption_index` (empty or negative: unknown), `caption`, `generator`
    hf_parquet  a local Hugging Face dataset: a folder of Parquet files, or a `save_to_disk` folder of Arrow
                files, with an Image column (struct<bytes, path>; `image` or the first such column), a parent
                column and optionally the manifest's other columns

The parent column is the first of PARENT_COLUMNS a table has. Split folder names are not read: a child's split
is its parent's. Names starting with "." (.DS_Store, hidden folders) are ignored. `generator` selects one
generator of a set that holds several: the folder of per_parent, the rows whose `generator` column equals it
in manifest and hf_parquet; empty: the whole set. In the folder layouts (cocofake, per_parent) a link may point
anywhere inside the root (or into the DVC cache); one leading out of it is never followed: it is a child with
that problem (named, or a counted skip). Special files (a FIFO, a device) are refused before they are opened.
"""

from __future__ import annotations

import bisect
import io
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from stages.contracts.errors import InputError


class Layout(StrEnum):
    cocofake = "cocofake"
    per_parent = "per_parent"
    manifest = "manifest"
    hf_parquet = "hf_parquet"


PARENT_COLUMNS = ("parent", "source_id", "parent_id", "image_id", "coco_id")
IMAGE_COLUMNS = ("path", "image")
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
# A caption index carried by a file name: the last one or two digits after a separator, or the whole stem.
NAMED_INDEX = re.compile(r"(?:^|[_-])(\d{1,2})$")
# The largest child file read: an uncompressed 8-bit RGBA image at stages.imaging.load's pixel limit (8192 x 8192
# x 4 bytes). Any image within that limit fits (bar 16-bit uncompressed ones); a larger file is refused by its
# size before a byte is read, so a huge or sparse file never fills the memory.
MAX_CHILD_BYTES = 256 * 2**20
# Content digests are read in blocks of this size: memory stays bounded whatever the file's size.
DIGEST_BLOCK = 2**20


@dataclass(frozen=True)
class Found:
    """One child of the set, as its layout names it.

    `original`: its path below the root (or the manifest's folder), or "<file>#<row>" for bytes held in a table;
    `file` and `row`: where its bytes are (row None: the whole file); `problem`: why it cannot be read, when the
    layout already knows (a link leading out of the root)."""

    original: str
    parent: str
    caption_index: int | None
    caption: str | None
    file: Path
    row: int | None = None
    column: str = ""
    problem: str | None = None


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _homes(root: Path) -> tuple[str, ...]:
    """Where a link below `root` may lead: the root, and the DVC cache of the repository holding it (`dvc add`
    with the symlink cache type turns every file into a link there)."""
    real = Path(os.path.realpath(root))
    repository = next((f for f in (real, *real.parents) if (f / ".dvc").is_dir()), None)
    return (str(real),) + ((os.path.realpath(repository / ".dvc" / "cache"),) if repository else ())


def _outside(path: Path, root: Path, homes: tuple[str, ...]) -> str | None:
    """Why `path` is not read as part of the set at `root`: a link whose target lies outside it (and outside
    the DVC cache); else None."""
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    if any(target.is_relative_to(home) for home in homes):
        return None
    return f"is a link leading out of the set's root {root} (to {target}); not followed"


def _walk(root: Path, folder: Path, depth: int) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The visible entries `depth` levels below `folder`, sorted, reached through folders only (files above that
    depth are not children); and the links leading out of `root` met on the way, each with its problem (neither
    entered nor listed)."""
    level: list[Path] = [folder]
    outside: list[tuple[Path, str]] = []
    homes = _homes(root)
    for _ in range(depth):
        below = []
        for path in level:
            if not path.is_dir():
                continue
            for entry in _visible(path):
                problem = _outside(entry, root, homes)
                if problem:
                    outside.append((entry, problem))
                else:
                    below.append(entry)
        level = below
    return level, outside


def named_index(stem: str) -> int | None:
    """The caption index a COCOFake child's file name carries (`..._3`, `...-3`, `3`), else None."""
    match = NAMED_INDEX.search(stem)
    return int(match.group(1)) if match else None


def _folder(root: Path, what: str) -> Path:
    if not root.is_dir():
        raise InputError(str(root), f"not a folder; the {what} layout reads a folder")
    return root


def read_cocofake(root: Path) -> list[Found]:
    """Every file of <root>/<split>/<parent stem>/; entries at other depths are not children and are left out.
    A link leading out of the root (a split or parent folder, or a child) is one child with that problem."""
    children, outside = _walk(root, _folder(root, "cocofake"), 3)
    return [Found(path.relative_to(root).as_posix(), path.parent.name, named_index(path.stem), None, path,
                  problem=problem) for path, problem in [(c, None) for c in children] + outside]


def read_per_parent(root: Path, generator: str) -> list[Found]:
    """Every file of <root>[/<generator>]/<split>/, named by its parent id (a link leading out of the root: one
    child with that problem)."""
    children, outside = _walk(root, _folder(root / generator if generator else root, "per_parent"), 2)
    return [Found(path.relative_to(root).as_posix(), path.stem, None, None, path, problem=problem)
            for path, problem in [(c, None) for c in children] + outside]


def _table_rows(frame, where: str, generator: str, *, file: Path, folder: Path, original: Callable[[int], str],
                image_column: str | None) -> list[Found]:
    """Found children of a table's rows (a pandas DataFrame without the image bytes)."""
    import pandas as pd

    parent_column = next((c for c in PARENT_COLUMNS if c in frame.columns), None)
    if parent_column is None:
        raise InputError(where, f"has no parent column; expected one of {list(PARENT_COLUMNS)}, found "
                                f"{list(frame.columns)}")
    if generator:
        if "generator" not in frame.columns:
            raise InputError(where, f"has no `generator` column to select {generator!r} by",
                             "set the import's generator to '' to take every row")
        frame = frame[frame["generator"].astype(str) == generator]
    found = []
    for row, record in zip(frame.index, frame.to_dict("records"), strict=True):
        index = record.get("caption_index")
        if index is None or pd.isna(index) or str(index).strip() == "":
            index = None
        else:
            try:
                number = float(index)
            except (TypeError, ValueError):
                number = math.nan
            if not number.is_integer():
                raise InputError(f"{where} row {row}", f"caption_index is {index!r}; expected an integer or empty")
            index = int(number) if number >= 0 else None  # negative: unknown, as the children contract has it
        caption = record.get("caption")
        caption = None if caption is None or (not isinstance(caption, str) and pd.isna(caption)) else str(caption)
        parent = record[parent_column]
        parent = "" if parent is None or (not isinstance(parent, str) and pd.isna(parent)) else parent
        parent = str(int(parent)) if isinstance(parent, float) and parent.is_integer() else str(parent)
        if image_column is None:  # a path column
            relative = str(record["path"])
            path = Path(relative) if Path(relative).is_absolute() else folder / relative
            found.append(Found(relative, parent, index, caption, path))
        else:
            found.append(Found(original(int(row)), parent, index, caption, file, int(row), image_column))
    return found


def read_manifest(path: Path, generator: str) -> list[Found]:
    """The rows of a CSV, JSONL or Parquet manifest."""
    import pandas as pd
    import pyarrow.parquet as pq

    if not path.exists():
        raise InputError(str(path), "no manifest file here; the manifest layout reads a CSV, JSONL or Parquet file")
    _regular([path])
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise InputError(str(path), f"unknown manifest type {suffix!r}; expected one of {list(MANIFEST_SUFFIXES)}")
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        else:
            names = pq.read_schema(path).names
            frame = pd.read_parquet(path, columns=[n for n in names if n != "image"])
    except (ValueError, OSError) as error:
        raise InputError(str(path), f"not a readable {suffix[1:]} manifest ({error})") from error
    if "path" in frame.columns:
        image_column = None
    elif suffix == ".parquet" and "image" in pq.read_schema(path).names:
        image_column = "image"
    else:
        raise InputError(str(path), "has no `path` column" + (" nor `image` column" if suffix == ".parquet" else ""),
                         "name each child's file (relative to the manifest's folder) in `path`")
    return _table_rows(frame, str(path), generator, file=path, folder=path.parent,
                       original=lambda row: f"{path.name}#{row}", image_column=image_column)


def _image_column(schema, where: str) -> str:
    import pyarrow as pa

    def is_image(field) -> bool:
        return pa.types.is_struct(field.type) and {"bytes", "path"} <= {f.name for f in field.type}

    if "image" in schema.names and is_image(schema.field("image")):
        return "image"
    for field in schema:
        if is_image(field):
            return field.name
    raise InputError(where, "has no Image column (a struct<bytes, path>)")


def hf_files(root: Path) -> list[Path]:
    """The table files of a local Hugging Face dataset: its Parquet files, else its Arrow files."""
    files = sorted(p for p in _folder(root, "hf_parquet").rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        files = sorted(p for p in root.rglob("*.arrow") if not p.name.startswith("."))
    if not files:
        raise InputError(str(root), "holds no .parquet or .arrow files (a Hugging Face dataset folder is expected)")
    _regular(files)
    return files


def _regular(files: list[Path]) -> None:
    """Refuse, before opening any, a table file that is not a regular file (reading a FIFO waits for ever)."""
    from stages.imaging.load import special_kind

    for file in files:
        kind = special_kind(file)
        if kind:
            raise InputError(str(file), f"not a regular file ({kind}); not read")


def read_arrow(path: Path):
    """An Arrow file a `datasets` save_to_disk wrote (the streaming format), memory-mapped, else the file format."""
    import pyarrow as pa

    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        return pa.ipc.open_file(source).read_all()


def read_hf(root: Path, generator: str) -> list[Found]:
    """The rows of every table file of the dataset, in file order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    found = []
    for file in hf_files(root):
        where = str(file)
        try:
            if file.suffix == ".parquet":
                schema = pq.read_schema(file)
                column = _image_column(schema, where)
                frame = pq.read_table(file, columns=[n for n in schema.names if n != column]).to_pandas()
            else:
                table = read_arrow(file)
                column = _image_column(table.schema, where)
                frame = table.drop_columns([column]).to_pandas()
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(where, f"not a readable table ({error})") from error
        relative = file.relative_to(root).as_posix()
        found += _table_rows(frame, where, generator, file=file, folder=root,
                             original=lambda row, relative=relative: f"{relative}#{row}", image_column=column)
    return found


def read_layout(layout: Layout, root: Path, generator: str) -> list[Found]:
    """Every child the layout holds (bad ones included: they are judged when matched and decoded)."""
    if layout is Layout.cocofake:
        if generator:
            raise InputError("generator", f"is {generator!r}; the cocofake layout holds one generator, leave it ''")
        return read_cocofake(root)
    if layout is Layout.per_parent:
        return read_per_parent(root, generator)
    if layout is Layout.manifest:
        return read_manifest(root, generator)
    return read_hf(root, generator)


def open_child_file(path: Path, where: str, limit: int = MAX_CHILD_BYTES) -> BinaryIO:
    """A child's file opened to read, or an InputError naming it: what is not a regular file (a FIFO, a socket,
    a device, a folder, a broken link) is refused from its status before it is opened (opening a FIFO waits for
    a writer, for ever), and so is a file over `limit` bytes. The open itself never waits (O_NONBLOCK), and what
    it opened is checked again, so a file swapped for a FIFO meanwhile is refused too."""
    from stages.imaging.load import special_kind

    kind = special_kind(path)
    if kind:
        raise InputError(where, f"not a regular file ({kind}); not read")
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError as error:
        raise InputError(where, "file not found") from error
    except OSError as error:
        raise InputError(where, f"cannot be read ({error.strerror or error})") from error
    status = os.fstat(descriptor)
    problem = None if stat.S_ISREG(status.st_mode) else "not a regular file; not read"
    if problem is None and status.st_size > limit:
        problem = f"is {status.st_size} bytes, over the limit of {limit} for one image; not read"
    if problem:
        os.close(descriptor)
        raise InputError(where, problem)
    return os.fdopen(descriptor, "rb")


class Reader:
    """Reads a child's encoded bytes: a file, or one row of a table file. Files are opened by open_child_file
    (regular files of bounded size only). Table files are read a row group (Parquet) or a memory-mapped file
    (Arrow) at a time, the last few kept, so reading in table order is cheap."""

    def __init__(self, cached: int = 4) -> None:
        self._group = lru_cache(maxsize=cached)(self._read_group)
        self._starts = lru_cache(maxsize=64)(self._row_group_starts)

    @staticmethod
    def _read_group(file: Path, column: str, group: int):
        import pyarrow.parquet as pq

        if file.suffix == ".arrow":
            return read_arrow(file).column(column).combine_chunks()
        return pq.ParquetFile(file).read_row_group(group, columns=[column]).column(column).combine_chunks()

    @staticmethod
    def _row_group_starts(file: Path) -> list[int]:
        import pyarrow.parquet as pq

        if file.suffix == ".arrow":
            return [0]
        metadata = pq.ParquetFile(file).metadata
        starts = [0]
        for k in range(metadata.num_row_groups):
            starts.append(starts[-1] + metadata.row_group(k).num_rows)
        return starts[:-1]

    def open(self, found: Found, where: str) -> BinaryIO:
        """A stream of one child's bytes; OSError or InputError when they cannot be had."""
        if found.problem:
            raise InputError(where, found.problem)
        if found.row is None:
            return open_child_file(found.file, where)
        starts = self._starts(found.file)
        group = bisect.bisect_right(starts, found.row) - 1
        value = self._group(found.file, found.column, group)[found.row - starts[group]].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise InputError(f"{found.file} row {found.row}", f"column {found.column!r} holds no image bytes")
        return io.BytesIO(data)

    def read(self, found: Found, where: str) -> bytes:
        """All the bytes of one child (at most MAX_CHILD_BYTES of a file, however it grew since opened)."""
        with self.open(found, where) as stream:
            data = stream.read(MAX_CHILD_BYTES + 1)
        if len(data) > MAX_CHILD_BYTES:
            raise InputError(where, f"grew over the limit of {MAX_CHILD_BYTES} bytes for one image while read")
        return data
