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
in manifest and hf_parquet; empty: the whole set.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

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


@dataclass(frozen=True)
class Found:
    """One child of the set, as its layout names it.

    `original`: its path below the root (or the manifest's folder), or "<file>#<row>" for bytes held in a table;
    `stamp`: (size, mtime in ns) of the file holding it, so a shard is remade when its sources change;
    `file` and `row`: where its bytes are (row None: the whole file)."""

    original: str
    parent: str
    caption_index: int | None
    caption: str | None
    stamp: tuple[int, int]
    file: Path
    row: int | None = None
    column: str = ""


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def named_index(stem: str) -> int | None:
    """The caption index a COCOFake child's file name carries (`..._3`, `...-3`, `3`), else None."""
    match = NAMED_INDEX.search(stem)
    return int(match.group(1)) if match else None


def _folder(root: Path, what: str) -> Path:
    if not root.is_dir():
        raise InputError(str(root), f"not a folder; the {what} layout reads a folder")
    return root


def read_cocofake(root: Path) -> list[Found]:
    """Every file of <root>/<split>/<parent stem>/; entries at other depths are not children and are left out."""
    found = []
    for split in _visible(_folder(root, "cocofake")):
        if not split.is_dir():
            continue
        for parent in _visible(split):
            if not parent.is_dir():
                continue
            for child in _visible(parent):
                found.append(Found(child.relative_to(root).as_posix(), parent.name, named_index(child.stem), None,
                                   _stamp(child) if child.is_file() else (0, 0), child))
    return found


def read_per_parent(root: Path, generator: str) -> list[Found]:
    """Every file of <root>[/<generator>]/<split>/, named by its parent id."""
    base = _folder(root / generator if generator else root, "per_parent")
    found = []
    for split in _visible(base):
        if not split.is_dir():
            continue
        for child in _visible(split):
            found.append(Found(child.relative_to(root).as_posix(), child.stem, None, None,
                               _stamp(child) if child.is_file() else (0, 0), child))
    return found


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
    stamp = _stamp(file)
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
            found.append(Found(relative, parent, index, caption, _stamp(path) if path.is_file() else (0, 0), path))
        else:
            found.append(Found(original(int(row)), parent, index, caption, stamp, file, int(row), image_column))
    return found


def read_manifest(path: Path, generator: str) -> list[Found]:
    """The rows of a CSV, JSONL or Parquet manifest."""
    import pandas as pd
    import pyarrow.parquet as pq

    if not path.is_file():
        raise InputError(str(path), "no manifest file here; the manifest layout reads a CSV, JSONL or Parquet file")
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
    return files


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


class Reader:
    """Reads a child's encoded bytes: a whole file, or one row of a table file. Table files are read a row group
    (Parquet) or a memory-mapped file (Arrow) at a time, the last few kept, so reading in table order is cheap."""

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

    def read(self, found: Found) -> bytes:
        """The bytes of one child; OSError or InputError when they cannot be had."""
        if found.row is None:
            return found.file.read_bytes()
        starts = self._starts(found.file)
        group = bisect.bisect_right(starts, found.row) - 1
        value = self._group(found.file, found.column, group)[found.row - starts[group]].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise InputError(f"{found.file} row {found.row}", f"column {found.column!r} holds no image bytes")
        return bytes(data)
