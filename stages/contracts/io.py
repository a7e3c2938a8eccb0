"""Atomic writes: every output is written under a temporary name beside its target and renamed when
complete, so a killed stage never leaves a half-written file that a later stage could read."""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from stages.contracts.errors import DiskFull, InputError, is_disk_full


class OutputError(InputError):
    """An output path that would overwrite something this command did not write."""


@contextmanager
def atomic_path(target: Path | str, *, kind: Literal["file", "dir"] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` if the block succeeds.

    Works for files and directories. On an exception the temporary is removed and `target` is untouched.

    Nothing is removed that is not an earlier copy of this output: a file may replace a file, and a folder a
    folder whose every entry the new one also holds (an earlier run of the same output). A file where a folder
    goes, a folder where a file goes, a folder holding other things, or a target that is the working folder or
    one of its ancestors (``--out ..``) is an OutputError naming it. With `kind` known the check runs before the
    block as well, so the mistake is reported before any work is done."""
    target = Path(target)
    _check_target(target, kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    sweep_debris(target)
    _remove(tmp)
    try:
        yield tmp
        written: Literal["file", "dir"] = "dir" if tmp.is_dir() and not tmp.is_symlink() else "file"
        _check_target(target, written, new=tmp)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except Exception as error:
        if is_disk_full(error, target.parent):  # checked before the temporary is removed and frees its space
            raise DiskFull(str(target)) from error
        raise
    finally:
        _remove(tmp)


def sweep_debris(target: Path | str) -> list[Path]:
    """Remove the temporaries of `target` (``.<name>.tmp-<pid>``) whose process is gone: a run killed before
    its rename (SIGKILL, a lost node) cannot clean up after itself, so the next write of the same output does.
    A temporary of a live process (another run writing now) is left alone. Returns what was removed."""
    target = Path(target)
    removed = []
    for path in target.parent.glob(f".{target.name}.tmp-*") if target.parent.is_dir() else ():
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(path)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _check_target(target: Path, kind: Literal["file", "dir"] | None, new: Path | None = None) -> None:
    """Raise OutputError unless writing a `kind` at `target` replaces at most an earlier copy of it."""
    if target.name in ("", ".", "..") or _is_ancestor(target, Path.cwd()):
        raise OutputError(str(target), "is the working folder or one of its ancestors, not an output path",
                          "give a new file or folder name")
    if kind is None or not (target.exists() or target.is_symlink()):
        return
    is_dir = target.is_dir() and not target.is_symlink()
    if kind == "file" and is_dir:
        raise OutputError(str(target), "is an existing folder; this command writes a file there and never "
                          "replaces a folder", "give a file name, or remove the folder yourself")
    if kind == "dir" and not is_dir:
        raise OutputError(str(target), "is an existing file; this command writes a folder there and never "
                          "replaces a file", "give a folder name, or remove the file yourself")
    if kind == "dir" and new is not None:
        foreign = sorted({entry.name for entry in target.iterdir()} - {entry.name for entry in new.iterdir()})
        if foreign:
            raise OutputError(str(target), f"is a folder holding {foreign[:5]}, which this command does not "
                              "write; it replaces only an earlier copy of its own output",
                              "give a new folder name, or remove the folder yourself")


def _is_ancestor(path: Path, of: Path) -> bool:
    """Whether `path` is `of` or a folder above it (symlinks resolved)."""
    resolved = path.resolve()
    return resolved == of.resolve() or resolved in of.resolve().parents


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(target: Path | str, obj: Any) -> None:
    """Write JSON atomically, sorted and indented so diffs in review read well."""
    with atomic_path(target, kind="file") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


# Significant digits a metrics float is stored to. Every metric is a count (an integer) or a share of counts:
# an accuracy k/n, a recall, AUC or AP. Four digits tell apart every count of a split under 10 000 items and
# drop the float noise (summation order, BLAS) that differs between machines; losses, thresholds and other
# figures of a computation's rounding are plot data or stay in their artifact, never metrics.
METRIC_DIGITS = 4


def write_metrics(target: Path | str, metrics: Mapping[str, Any]) -> None:
    """Write a metrics file: nested dicts of integers and floats, so `dvc metrics diff` compares them.

    Integers are written as integers; floats to METRIC_DIGITS significant digits, so a fresh clone on another
    machine writes the same bytes. A value that is not applicable is written as JSON null, never as zero."""
    write_json(target, as_written(metrics))


def as_written(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """`metrics` checked and as `write_metrics` writes them (integers kept, floats rounded)."""
    return _checked(metrics, "")


def metric_float(value: float) -> float:
    """`value` at the precision metrics store it (METRIC_DIGITS significant digits)."""
    return float(f"{value:.{METRIC_DIGITS}g}")


def _checked(obj: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        where = f"{prefix}{key}"
        if not isinstance(key, str) or not key or "." in key:
            raise ValueError(f"metric key {where!r} must be a non-empty string without dots")
        if isinstance(value, Mapping):
            out[key] = _checked(value, where + ".")
        elif value is None:
            out[key] = None
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"metric {where!r} is {type(value).__name__}; metrics hold integers and floats only")
        elif isinstance(value, numbers.Integral):
            out[key] = int(value)
        elif not math.isfinite(value):
            raise ValueError(f"metric {where!r} is {value}; metrics must be finite")
        else:
            out[key] = metric_float(float(value))
    return out


def read_parquet_checked(path: Path | str, columns: tuple[str, ...], *, what: str, made_by: str):
    """A contract's Parquet file as a pandas DataFrame: FileNotFoundError naming the stage that writes it when
    it is missing, InputError naming the file when it is no Parquet file or lacks the contract's columns."""
    import pandas as pd
    import pyarrow as pa

    from stages.contracts.files import regular_or_absent

    path = regular_or_absent(path, what=f"a {what}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} here; the {made_by} stage writes it (dvc repro)")
    try:
        frame = pd.read_parquet(path)
    except (pa.ArrowException, OSError) as error:  # not Parquet at all, or a truncated or corrupt one
        raise InputError(str(path), f"is not a readable Parquet file, so no {what} "
                         f"({' '.join(str(error).split())[:200]})", f"the {made_by} stage writes it") from error
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(str(path), f"not a {what}, missing columns {missing}")
    return frame


def safetensors_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Metadata for `safetensors.save_file` that keeps the file's bytes reproducible.

    safetensors writes its metadata map in hash order, so a file with two or more keys differs from run to
    run (and DVC sees a changed output); a single key holding sorted JSON is written the same every time."""
    return {"json": json.dumps(dict(metadata), sort_keys=True)}
