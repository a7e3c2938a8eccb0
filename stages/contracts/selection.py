"""What one consumer of the children sets reads: the select stage writes it, the consumer's DVC stage depends on it.

DVC cannot give a plain stage one dependency per item of a list param, and a dependency on the folder that holds
every set (``data/children``) reruns the consumer when any set changes, also one it never reads. A selection file
(``data/selections/<consumer>.json``) names exactly the sets the consumer reads, each with a fingerprint of its
files, and, where the consumer reads them, the fields of their generator registry entries it reads (RECORDED):

    {"caches": {"<set>": {"bytes": 1234, "sha256": "<hex>"}}  (each set's embedding cache, where the consumer
                                                              reads them: the detector, model.backbone's),
     "registry": {"<set>": {"random_weights": true} | null (an imported set: no entry)},
     "sets": {"<set>": {"bytes": 123456, "files": 3, "sha256": "<hex>"}}}

Its bytes change exactly when a selected set's files or a recorded entry change, so the consumer reruns then and
only then. The fingerprint is a SHA-256 over each file's path below the set, size and SHA-256, in path order."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.contracts.errors import InputError

_BLOCK = 1 << 20
# the registry fields a consumer reads (the detector: whether a generator's weights are random, which it records);
# an edit of any other field of an entry reruns no consumer
RECORDED = ("random_weights",)


@dataclass(frozen=True)
class Selection:
    sets: dict[str, dict[str, Any]]  # name -> {"files", "bytes", "sha256"}
    registry: dict[str, dict[str, Any] | None]  # name -> its entry's RECORDED fields (None: not registered)
    caches: dict[str, dict[str, Any]]  # name -> its embedding cache's bytes and sha256 (empty: not read)


def set_files(folder: Path) -> list[tuple[str, Path, int]]:
    """(path below `folder` in POSIX form, path, size) of every file of a children set, in path order; a link or
    special file is an error naming it (a set holds regular files only). The folder's output marker is left out:
    it says which stage wrote the set, not what the set holds, so a consumer reruns for its files only."""
    from stages.contracts.io import MARKER

    found = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in [*names, *(d for d in dirs if os.path.islink(os.path.join(root, d)))]:
            if name == MARKER and Path(root) == Path(folder):
                continue
            path = Path(root, name)
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise InputError(str(path), "is not a regular file (a link, FIFO or device); a children set holds "
                                            "files only")
            found.append((path.relative_to(folder).as_posix(), path, path.lstat().st_size))
    return sorted(found)


def file_fingerprint(path: Path, *, advance: Callable[[int], object] = lambda n: None) -> dict[str, Any]:
    """Bytes and SHA-256 of one regular file (an embedding cache); a missing or special one is named."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "not found, or not a regular file", "the embed stages write it: dvc repro")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
            advance(len(block))
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def fingerprint(folder: Path | str, *, advance: Callable[[int], object] = lambda n: None) -> dict[str, Any]:
    """Files, bytes and a SHA-256 of a children set's folder (see the module docstring); `advance` is told how
    many bytes were read, for a progress bar."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(str(folder), "children set not found",
                         "it is made by generate or import_children: dvc repro, or fix children.sets")
    overall = hashlib.sha256()
    files = total = 0
    for relative, path, size in set_files(folder):
        digest = file_fingerprint(path, advance=advance)["sha256"]
        overall.update(f"{relative}\0{size}\0{digest}\n".encode())
        files, total = files + 1, total + size
    return {"bytes": total, "files": files, "sha256": overall.hexdigest()}


def selected(generators: Sequence[str], fit: Sequence[str] = ()) -> list[str]:
    """The sets a consumer reads: its --generators and --fit lists, each set once, in first-seen order."""
    names = list(dict.fromkeys([*generators, *fit]))
    if not names:
        raise InputError("--generators", "no children set given; a consumer reads one at least")
    return names


def read_selection(path: Path | str) -> Selection:
    """A selection file, checked; an InputError names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "selection not found", "the select stage writes it: dvc repro")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InputError(str(path), f"is not a selection file (JSON: {error})") from error
    if not isinstance(data, dict) or set(data) != {"caches", "registry", "sets"} or not all(
            isinstance(data[key], dict) for key in data):
        raise InputError(str(path), "expected {\"caches\": {...}, \"registry\": {...}, \"sets\": {...}} as the "
                                    "select stage writes")
    return Selection(sets=data["sets"], registry=data["registry"], caches=data["caches"])


def selection_random_weights(selection: Selection, names: Sequence[str], *, where: str) -> list[str]:
    """Those of `names` whose recorded registry entry says its weights are random, in order; a name the selection
    does not hold is an error naming the file (the consumer and its select instance disagree)."""
    missing = [name for name in names if name not in selection.sets or name not in selection.registry]
    if missing:
        raise InputError(where, f"does not select {missing}; it holds {sorted(selection.sets)}",
                         "the consumer's list and its select instance's list must be the same params")
    return [name for name in names if (selection.registry[name] or {}).get("random_weights") is True]
