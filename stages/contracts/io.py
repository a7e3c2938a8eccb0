"""Atomic writes: every output is written under a temporary name beside its target and renamed when
complete, so a killed stage never leaves a half-written file that a later stage could read.

An output replaces only what its own stage wrote (STYLE.md item 24). Every folder output carries a marker,
``<folder>/.parentage-output``, holding the name of the stage that wrote it (one line, always the same bytes, so
DVC hashes it like any other file and a fresh clone reproduces it); a folder is replaced only when it carries
that stage's marker or is empty. No output, file or folder, replaces an input of the same command, lies inside a
folder carrying another stage's marker, or replaces anything that is not a regular file (a device, FIFO or
socket): each is an OutputError naming the path and what it is (exit 2 in a command), and nothing is removed."""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import stat
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from stages.contracts.errors import DiskFull, InputError, is_disk_full

# the marker file of a folder output: it holds the name of the stage that wrote the folder. Hidden, so every
# reader that walks a folder for images, shards or metrics passes over it (they skip hidden names)
MARKER = ".parentage-output"
_MARKER_BYTES = 256  # a marker is one short line; never read more of a file that claims to be one


class OutputError(InputError):
    """An output path that would overwrite something this command did not write."""


@contextmanager
def atomic_path(target: Path | str, *, kind: Literal["file", "dir"] | None = None, stage: str | None = None,
                inputs: Iterable[Path | str] = ()) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` if the block succeeds.

    Works for files and directories. On an exception the temporary is removed and `target` is untouched.

    `stage` names the stage writing the output: a folder output needs it (it is written into the folder's
    marker), and a file output may lie inside a folder carrying that stage's marker (a shard in its children
    folder). `inputs` are the paths the command reads: the output is none of them, inside none of the folders
    among them, and holds none of them.

    Nothing is removed that is not an earlier copy of this output: a regular file may replace a regular file
    (or a link, never what it points to), and a folder a folder carrying this stage's marker or an empty one.
    Anything else is an OutputError naming the path and what it is: a file where a folder goes or the other way
    round, a folder another stage (or a person) wrote, a device, FIFO or socket, an input of the command, a path
    inside another stage's folder output, the working folder or one of its ancestors (``--out ..``). Every check
    that does not depend on what the block writes runs before it, so the mistake is reported before any work."""
    target = Path(target)
    _check_target(target, kind, stage, inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    sweep_debris(target)
    _remove(tmp)
    try:
        yield tmp
        written: Literal["file", "dir"] = "dir" if tmp.is_dir() and not tmp.is_symlink() else "file"
        if written == "dir":
            if not stage:
                raise TypeError(f"{target}: a folder output needs stage= (the name written into its {MARKER})")
            (tmp / MARKER).write_text(f"{stage}\n")
        _check_target(target, written, stage)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except Exception as error:
        if is_disk_full(error, target.parent):  # checked before the temporary is removed and frees its space
            raise DiskFull(str(target)) from error
        raise
    finally:
        _remove(tmp)


def claim_folder(folder: Path | str, stage: str, *, inputs: Iterable[Path | str] = ()) -> Path:
    """Make `folder` an output of `stage` that is written in place, file by file (a persist output: the children
    folders, resumed shard by shard): create it with its marker, or mark an empty one; a folder carrying the
    marker is kept as it is. Anything else is an OutputError (see atomic_path); nothing is removed."""
    folder = Path(folder)
    _check_target(folder, "dir", stage, inputs)
    folder.mkdir(parents=True, exist_ok=True)
    if marker_of(folder) != stage:  # created now, or empty (checked above): this stage's from now on
        (folder / MARKER).write_text(f"{stage}\n")
    return folder


def marker_of(folder: Path | str) -> str | None:
    """The stage named by `folder`'s marker; None when it has none, "?" when the marker is not a readable
    regular file (never opened then: a FIFO would hang the read). A link to one is followed (DVC's symlink
    cache type checks every output file out as a link)."""
    path = Path(folder) / MARKER
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # none there, or `folder` is no folder
        return "?" if path.is_symlink() else None
    except OSError:
        return "?"
    if not stat.S_ISREG(mode):
        return "?"
    try:
        with path.open("rb") as handle:
            return handle.read(_MARKER_BYTES).decode("utf-8", "replace").strip() or "?"
    except OSError:
        return "?"


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


_SPECIAL = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def special_kind(path: Path | str) -> str | None:
    """What `path` is when it is a device, FIFO or socket (itself or what its link points to); else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((what for test, what in _SPECIAL if test(mode)), None)


def _check_target(target: Path, kind: Literal["file", "dir"] | None, stage: str | None,
                  inputs: Iterable[Path | str] = ()) -> None:
    """Raise OutputError unless writing a `kind` (None: not known yet) at `target` replaces at most an earlier
    copy of this output (see atomic_path)."""
    if target.name in ("", ".", "..") or _is_ancestor(target, Path.cwd()):
        raise OutputError(str(target), "is the working folder or one of its ancestors, not an output path",
                          "give a new file or folder name")
    what = special_kind(target)
    if what:
        raise OutputError(str(target), f"is {what}, not a regular file; an output never replaces one",
                          "give the path of a new file or folder")
    _check_not_inside_another_output(target, stage)
    _check_not_an_input(target, inputs)
    if not (target.exists() or target.is_symlink()):
        return
    is_dir = target.is_dir() and not target.is_symlink()
    if kind == "file" and is_dir:
        raise OutputError(str(target), "is an existing folder; this command writes a file there and never "
                          "replaces a folder", "give a file name, or remove the folder yourself")
    if kind == "dir" and not is_dir:
        raise OutputError(str(target), "is an existing file; this command writes a folder there and never "
                          "replaces a file", "give a folder name, or remove the file yourself")
    if is_dir:  # whatever is written, a folder is replaced only when it is this stage's or empty
        _check_owned(target, stage)


def _check_owned(folder: Path, stage: str | None) -> None:
    owner = marker_of(folder)
    if stage is not None and owner == stage:
        return
    try:
        names = sorted(entry.name for entry in os.scandir(folder))
    except OSError as error:
        raise OutputError(str(folder), f"is a folder that cannot be listed ({error.strerror})") from error
    if not names:
        return
    if owner is None:
        problem = (f"is a folder holding {names[:5]}{' ...' if len(names) > 5 else ''} with no {MARKER}: nothing "
                   f"says a stage wrote it, and an output replaces only a folder its own stage wrote, or an empty one")
        hint = "give a new folder name, or remove the folder yourself"
        if stage:  # an output of an older parentage has no marker either: the person who knows may mark it
            hint += (f"; if it is the {stage} stage's own output from before outputs carried markers, mark it "
                     f"to keep it (a resumable one resumes): echo {stage} > {folder / MARKER}")
    else:
        problem = (f"is a folder output of {_whose(owner)}, not of {stage or 'this command'!r}; an output "
                   f"replaces only a folder its own stage wrote")
        hint = "give a new folder name"
    raise OutputError(str(folder), problem, hint)


def _check_not_inside_another_output(target: Path, stage: str | None) -> None:
    """A path below a folder carrying a marker belongs to that folder's stage: nobody else writes there."""
    for folder in _resolved(target).parents:
        owner = marker_of(folder)
        if owner is not None and owner != stage:
            raise OutputError(str(target), f"lies inside {folder}, a folder output of {_whose(owner)}; an output "
                              "never writes into another stage's output", "give a path outside it")


def _whose(owner: str) -> str:
    if owner == "?":
        return f"an unknown stage (its {MARKER} is not a readable file)"
    return f"the {owner!r} stage (its {MARKER} says so)"


def check_outputs(*, writes: Iterable[Path | str | None], reads: Iterable[Path | str | None]) -> None:
    """Before a command's work: no output path is one of its inputs (the same file, links and hard links seen
    through) or a folder holding one, and none is a device, FIFO or socket; an OutputError names the first that
    is. Empty paths (an option given '') are left out. Whether a folder output is this stage's own, and whether
    a path lies inside another stage's folder output, is checked when it is written (atomic_path)."""
    given = [Path(path) for path in reads if path is not None and str(path) not in ("", ".")]
    for target in writes:
        if target is None or str(target) in ("", ".", "-"):
            continue
        what = special_kind(target)
        if what:
            raise OutputError(str(target), f"is {what}, not a regular file; an output never replaces one",
                              "give the path of a new file or folder")
        _check_not_an_input(Path(target), given, inside=False)


def _check_not_an_input(target: Path, inputs: Iterable[Path | str], *, inside: bool = True) -> None:
    """`target` is no input (the same file, by device and inode), lies inside no input folder (unless not
    `inside`: a command may write into a folder it also reads, as the report into metrics/) and holds no input
    (links resolved). Only folders are resolved, so thousands of input files cost a stat each."""
    where = _resolved(target)
    try:
        own = os.stat(target)
    except OSError:
        own = None
    for given in inputs:
        path = Path(given)
        try:
            info = os.stat(path)
        except OSError:
            continue  # missing: the command names it when it reads it
        if own is not None and (info.st_dev, info.st_ino) == (own.st_dev, own.st_ino):
            relation = "is"
        elif inside and stat.S_ISDIR(info.st_mode) and _resolved(path) in where.parents:
            relation = "lies inside"
        elif own is not None and stat.S_ISDIR(own.st_mode) and where in _resolved(path).parents:
            relation = "holds"
        else:
            continue
        raise OutputError(str(target), f"{relation} {path}, an input of this command; an output never "
                          "replaces or writes into what the command reads", "give another output path")


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a loop of links
        return Path(os.path.abspath(path))


def _is_ancestor(path: Path, of: Path) -> bool:
    """Whether `path` is `of` or a folder above it (symlinks resolved)."""
    resolved = path.resolve()
    return resolved == of.resolve() or resolved in of.resolve().parents


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def read_yaml(path: Path | str, *, what: str) -> Any:
    """A YAML file's data (safe_load); a missing file, invalid YAML or nesting too deep for the parser is an
    InputError naming the file and `what` it should be."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), f"{what} not found")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, RecursionError) as error:
        raise InputError(str(path), f"is not valid YAML ({' '.join(str(error).split())})") from error


def write_json(target: Path | str, obj: Any) -> None:
    """Write JSON atomically, sorted and indented so diffs in review read well."""
    with atomic_path(target, kind="file") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


# Significant digits a metrics float is stored to. Every metric is a count (an integer) or a share of counts:
# an accuracy k/n, a recall, AUC or AP. Four digits tell apart every count of a split under 10 000 items and
# drop the float noise (summation order, BLAS) that differs between machines; losses, thresholds and other
# figures of a computation's rounding are plot data or stay in their artifact, never metrics.
METRIC_DIGITS = 4


def write_metrics(target: Path | str, metrics: Mapping[str, Any], *,
                  provenance: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Write a metrics file: nested dicts of integers and floats, so `dvc metrics diff` compares them.

    Integers are written as integers; floats to METRIC_DIGITS significant digits, so a fresh clone on another
    machine writes the same bytes. A value that is not applicable is written as JSON null, never as zero.
    `provenance` (a key of `metrics` none of its own use -> records of text and numbers) says what produced the
    figures, e.g. each detector's id, threshold and caveat: written beside them as given."""
    written = as_written(metrics)
    for key, records in (provenance or {}).items():
        if key in written:
            raise ValueError(f"provenance key {key!r} is also a metric")
        written[key] = dict(records)
    write_json(target, written)


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


# Significant digits of plot data (curves, grids, t-SNE points, losses per epoch): what a figure needs. A chart is
# read to two or three digits; four keep a curve's points apart and drop the float noise (summation order, BLAS,
# threads) that differs between machines, so a fresh clone's demo writes the same plot files.
PLOT_DIGITS = 4


def plot_cell(value: Any) -> Any:
    """A plot data value as written: a float to PLOT_DIGITS significant digits, anything else as it is."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{PLOT_DIGITS}g}")
    return value


def plot_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of plot data with every float at PLOT_DIGITS significant digits (integers and text kept)."""
    return [{key: plot_cell(value) for key, value in row.items()} for row in rows]


def csv_cell(value: Any) -> Any:
    """A plot data value as a CSV cell: empty for None (not applicable), a float at PLOT_DIGITS significant digits."""
    if value is None:
        return ""
    return f"{value:.{PLOT_DIGITS}g}" if isinstance(value, float) else value


def write_plot_json(target: Path | str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows of plot data as JSON (atomically, sorted keys), every float at PLOT_DIGITS significant digits."""
    write_json(target, plot_rows(rows))


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
