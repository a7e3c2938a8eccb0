"""An external labelled image set as a list of entries (path, label, generator), from one of four layouts.

    forensynths  <root>/<generator>/0_real, <root>/<generator>/1_fake (ForenSynths, UniversalFakeDetect); the
                 class folders may sit deeper (ForenSynths' progan/<category>/0_real) or at the root itself (one
                 generator, named after the root folder)
    genimage     <root>/<generator>/nature, <root>/<generator>/ai (GenImage), or <root>/<generator>/{train,val}/
                 {nature,ai}: `split` keeps one of them
    real_fake    <root>/real and <root>/fake; the reals are shared by every generator, and the fakes' first
                 subfolder names their generator (fake/<generator>/...; files directly in fake/ are the root
                 folder's name)
    manifest     a CSV, TSV or JSON-lines file (`manifest`, relative to `root`) with a path column and a label
                 (MANIFEST_COLUMNS)

The folder layouts look for their class folders only as deep as CLASS_DEPTH says (GenImage's
<generator>/<subset>/<split>/ai is the deepest), so a root is never walked further; the filesystem's root `/` is
refused by name, and so is a root holding no class folder within that depth.

Generators: in the folder layouts, the first folder under the root names the generator of every image below it
(reals included: ForenSynths pairs each generator with its own reals). A real whose generator is SHARED (`real/`
at the root, a manifest real with no generator) joins every generator's group. `split` (folder layouts) keeps
the class folders with a folder of that name on their path ('' keeps all).

Files are found by detect's walk (stages.shipped.wild.expand_inputs): hidden files skipped, links followed once,
and files that are not images (by suffix), special files and broken links left out and counted in `skips`.
Nothing is opened here: reading happens when scoring, where an unreadable file becomes an error, not a crash.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from stages.contracts.errors import InputError, Skips
from stages.contracts.labels import FAKE, REAL
from stages.shipped.wild import expand_inputs

SHARED = ""  # the generator of a real that every generator's group holds


class Layout(StrEnum):
    forensynths = "forensynths"
    genimage = "genimage"
    real_fake = "real_fake"
    manifest = "manifest"


# folder name -> label, per folder layout
CLASS_FOLDERS = {Layout.forensynths: {"0_real": REAL, "1_fake": FAKE},
                 Layout.genimage: {"nature": REAL, "ai": FAKE},
                 Layout.real_fake: {"real": REAL, "fake": FAKE}}
# how many folders below the root a class folder may sit, per folder layout (forensynths: progan/<category>/0_real;
# genimage: <generator>/<subset>/<split>/ai, as GenImage ships; real_fake: real/ and fake/ at the root)
CLASS_DEPTH = {Layout.forensynths: 3, Layout.genimage: 4, Layout.real_fake: 1}
# manifest columns (names compared without case): the first present of each
MANIFEST_COLUMNS = {"path": ("path", "file", "file_name", "filename", "image", "image_path"),
                    "label": ("label",), "generator": ("generator",), "kind": ("kind",)}
LABEL_VALUES = {"0": REAL, "real": REAL, "nature": REAL, "1": FAKE, "fake": FAKE, "ai": FAKE, "generated": FAKE}
MANIFEST_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".jsonl": None, ".ndjson": None}


@dataclass(frozen=True)
class Entry:
    """One image of a benchmark: its path as shown, REAL or FAKE, its generator (SHARED: a real of every
    generator), and why it cannot be read when that is known before opening it (a missing file)."""

    path: str
    label: int
    generator: str
    problem: str | None = None


def read_set(layout: Layout, root: Path, *, manifest: str = "", split: str = "",
             skips: Skips | None = None) -> list[Entry]:
    """Every entry of the set, in a stable order (sorted folders; the manifest's rows). Raises InputError naming
    the root, the manifest row or the parameter when the set is not what `layout` expects."""
    skips = skips if skips is not None else Skips(skip=True)
    if not root.exists():
        raise InputError(str(root), "not found", "the benchmark's root: a folder")
    if not root.is_dir():
        raise InputError(str(root), "is not a folder", "the benchmark's root is the folder holding the set")
    if os.path.realpath(root) == os.path.realpath(os.sep):
        raise InputError(str(root), "is the filesystem's root; not walked",
                         "the benchmark's root is the folder holding the set")
    if layout is Layout.manifest:
        if not manifest:
            raise InputError("manifest", "is empty; layout manifest reads the file it names (relative to root)")
        if split:
            raise InputError("split", f"is {split!r}; it keeps class folders of the folder layouts: leave it '' "
                             "for a manifest")
        return read_manifest(root / manifest, skips)
    if manifest:
        raise InputError("manifest", f"is {manifest!r}; only layout manifest reads one: leave it ''")
    entries = _read_folders(layout, root, split, skips)
    if not any(e.label == FAKE for e in entries) and not any(e.label == REAL for e in entries):
        raise InputError(str(root), f"holds no image under its {' / '.join(CLASS_FOLDERS[layout])} folders")
    return entries


def _read_folders(layout: Layout, root: Path, split: str, skips: Skips) -> list[Entry]:
    names = CLASS_FOLDERS[layout]
    folders = _class_folders(root, set(names), CLASS_DEPTH[layout])
    if split:
        folders = [f for f in folders if split in f.relative_to(root).parts[:-1]]
    if not folders:
        expected = {Layout.forensynths: "<generator>/0_real and <generator>/1_fake",
                    Layout.genimage: "<generator>/nature and <generator>/ai (or <generator>/<split>/...)",
                    Layout.real_fake: "real/ and fake/"}[layout]
        where = f" with a folder {split!r} on their path" if split else ""
        depth = CLASS_DEPTH[layout]
        raise InputError(str(root), f"no folder named {' or '.join(names)}{where} within {depth} "
                                    f"level{'s' if depth > 1 else ''} under it",
                         f"layout {layout.value} expects {expected}")
    entries = []
    for folder in folders:
        above = folder.relative_to(root).parts[:-1]
        label = names[folder.name]
        for item in expand_inputs([str(folder)], skips):
            if item.path == str(folder):  # an empty class folder holds nothing to score
                continue
            entries.append(Entry(item.path, label, _generator(layout, root, folder, above, label, Path(item.path)),
                                 item.problem))
    return entries


def _generator(layout: Layout, root: Path, folder: Path, above: tuple[str, ...], label: int, file: Path) -> str:
    if above:
        return above[0]
    if layout is Layout.real_fake:  # real/ and fake/ at the root
        if label == REAL:
            return SHARED
        inside = file.relative_to(folder).parts
        return inside[0] if len(inside) > 1 else root.resolve().name
    return root.resolve().name  # a flat 0_real|1_fake (nature|ai) at the root: one generator


def _class_folders(root: Path, names: set[str], depth: int) -> list[Path]:
    """Folders named one of `names` at most `depth` levels below `root` (not inside another such folder, not
    hidden), sorted; nothing deeper is listed, and each real folder is visited once, so links that loop end."""
    found, visited, stack = [], set(), [(root, 0)]
    while stack:
        folder, level = stack.pop()
        try:
            info = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in visited:
            continue
        visited.add((info.st_dev, info.st_ino))
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith(".") or not _is_dir(path):
                continue
            if entry.name in names:
                found.append(path)
            elif level + 1 < depth:
                stack.append((path, level + 1))
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------ manifest
def read_manifest(path: Path, skips: Skips | None = None) -> list[Entry]:
    """The manifest's rows as entries (see MANIFEST_COLUMNS; relative paths are relative to its folder).

    Label: the `label` column (0 / real / nature, 1 / fake / ai / generated; any case) when there is one; else a
    row is real when its `kind` or its `generator` is ``real`` (any case: wild-generated's MANIFEST.tsv marks its
    real rows with generator ``REAL`` and kind ``real``) and fake otherwise. Generator: a real whose generator is
    empty or ``real`` is shared by every generator; a fake without one takes the manifest's name (its stem). A
    row naming a missing file, a folder or a special file is kept as an entry with its problem (counted as
    unreadable when scored); a bad label, a repeated path or a missing column is an InputError naming the row."""
    rows = _manifest_rows(path)
    if not rows:
        raise InputError(str(path), "holds no rows")
    header = {name.lower(): name for name in rows[0][1]}
    columns = {role: next((header[c] for c in names if c in header), None) for role, names in MANIFEST_COLUMNS.items()}
    if columns["path"] is None:
        raise InputError(str(path), f"has no path column; expected one of {list(MANIFEST_COLUMNS['path'])}")
    if columns["label"] is None and columns["kind"] is None and columns["generator"] is None:
        raise InputError(str(path), "has no label column, and no kind or generator column marking the reals",
                         "add a column label (0 / 1, real / fake)")
    skips = skips if skips is not None else Skips(skip=True)
    entries, seen = [], {}
    for where, row in rows:
        value = _cell(row, columns["path"], f"{path}: {where}")
        if not value:
            raise InputError(f"{path}: {where}", f"empty {columns['path']!r}")
        generator = _cell(row, columns["generator"], f"{path}: {where}")
        label = _label(row, columns, generator, f"{path}: {where}")
        if label == REAL and generator.lower() in ("", "real"):
            generator = SHARED
        elif label == FAKE and not generator:
            generator = path.stem
        file = Path(value) if os.path.isabs(value) else path.parent / value
        key = os.path.normpath(file)
        if key in seen:
            raise InputError(f"{path}: {where}", f"names {value!r} again (first at {seen[key]})",
                             "each image is one row")
        seen[key] = where
        problem = "is a folder; a manifest row names one image file" if _is_dir(file) else \
            next(iter(expand_inputs([str(file)], skips))).problem
        entries.append(Entry(str(file), label, generator, problem))
    return entries


def _manifest_rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) of each data row of a CSV, TSV or JSON-lines file."""
    if not path.is_file():
        raise InputError(str(path), "not found" if not path.exists() else "is not a file",
                         "the manifest of layout manifest, relative to the benchmark's root")
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise InputError(str(path), f"unknown manifest type {suffix!r}; expected one of {sorted(MANIFEST_SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(str(path), f"is not UTF-8 text ({error})") from error
    if MANIFEST_SUFFIXES[suffix] is None:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as error:
                raise InputError(f"{path}: line {number}", f"not valid JSON ({error})") from error
            if not isinstance(row, dict):
                raise InputError(f"{path}: line {number}", f"holds a {type(row).__name__}; expected an object")
            rows.append((f"line {number}", row))
        if rows and any(set(r) != set(rows[0][1]) for _, r in rows):
            # JSON lines may leave keys out; every row is read with the union of the keys
            keys = {k for _, r in rows for k in r}
            rows = [(w, {k: r.get(k) for k in keys}) for w, r in rows]
        return rows
    reader = csv.DictReader(text.splitlines(), delimiter=MANIFEST_SUFFIXES[suffix])
    rows = []
    for number, row in enumerate(reader, 2):
        if None in row:
            raise InputError(f"{path}: line {number}", "has more cells than the header has names")
        rows.append((f"line {number}", row))
    return rows


def _cell(row: dict, column: str | None, where: str) -> str:
    if column is None or row.get(column) is None:
        return ""
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(where, f"{column} {value!r} is a {type(value).__name__}; expected text")
    return str(value).strip()


def _label(row: dict, columns: dict, generator: str, where: str) -> int:
    if columns["label"] is not None:
        value = _cell(row, columns["label"], where).lower()
        if value not in LABEL_VALUES:
            raise InputError(where, f"label {value!r}; expected one of {sorted(LABEL_VALUES)}")
        return LABEL_VALUES[value]
    real = _cell(row, columns["kind"], where).lower() == "real" or generator.lower() == "real"
    return REAL if real else FAKE
