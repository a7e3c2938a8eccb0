"""Bad input: one error type that names the file or row and the problem, and a counter of skips."""

from __future__ import annotations

import errno
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum


class InputError(ValueError):
    """Bad input, naming where (a file, a row, a parameter) and what was expected."""

    def __init__(self, where: str, problem: str, hint: str = "") -> None:
        self.where, self.problem = where, problem
        message = f"{where}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class DiskFull(InputError):
    """An output that could not be written because its disk is full (what was half-written is removed)."""

    def __init__(self, where: str, *, cleaned: bool = True) -> None:
        problem = "cannot be written: no space left on the device (the disk is full)"
        super().__init__(where, problem + ("; nothing half-written was kept" if cleaned else ""),
                         "free some space there, or give an output path on another disk")


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# how libraries that wrap the OS error quote it (safetensors: "I/O error: No space left on device (os error 28)")
_FULL_TEXTS = ("no space left on device", "disk quota exceeded", f"os error {errno.ENOSPC}")
_ALMOST_FULL = 1 << 20  # bytes: a write that failed with this little space left found the disk full


def is_disk_full(error: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """Whether `error`, raised while writing into `folder`, means that the disk is full: an OSError of ENOSPC or
    EDQUOT, a library's error quoting one, or one that hides its cause (torch.save's RuntimeError "unexpected
    pos") raised while `folder`'s filesystem has under a megabyte left."""
    if isinstance(error, InputError):
        return False
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return True
    if any(text in str(error).lower() for text in _FULL_TEXTS):
        return True
    if folder is None or not isinstance(error, OSError | RuntimeError):
        return False
    try:
        usage = os.statvfs(folder)
    except OSError:
        return False
    return min(usage.f_bavail, usage.f_bfree) * usage.f_frsize < _ALMOST_FULL


class OnBad(StrEnum):
    """What a stage does with bad input: stop at the first, naming it, or skip and count each one."""

    error = "error"
    skip = "skip"


@contextmanager
def user_errors() -> Iterator[None]:
    """In a command: print bad input, missing files, an output path under a file and a full disk as one clear
    line and exit 2, without a traceback."""
    import typer

    try:
        yield
    except (InputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(2) from error
    except (IsADirectoryError, NotADirectoryError, PermissionError) as error:
        # an OS refusal names its file: a folder where a file is expected, or the other way round
        problem = {IsADirectoryError: "is a folder; a file is expected here",
                   NotADirectoryError: "a part of this path is a file; a folder is expected there",
                   PermissionError: "permission denied"}[type(error)]
        print(f"error: {error.filename}: {problem}", file=sys.stderr)
        raise typer.Exit(2) from error
    except FileExistsError as error:
        # making an output's folders (mkdir(parents=True, exist_ok=True)) met a file where a folder goes
        problem = ("is a file; a folder is expected there (an output path goes under it)"
                   if error.filename and not os.path.isdir(error.filename) else "already exists")
        print(f"error: {error.filename}: {problem}", file=sys.stderr)
        raise typer.Exit(2) from error
    except OSError as error:
        if not is_disk_full(error):
            raise
        # a write outside stages.contracts.io.atomic_path (which names its output): name what the OS names
        print(f"error: {DiskFull(error.filename or 'an output of this command', cleaned=False)}", file=sys.stderr)
        raise typer.Exit(2) from error


@dataclass
class Skips:
    """Counts bad inputs by reason, and raises on the first one unless skipping was asked for.

    Every stage that reads user data routes each bad item through `handle`, so a run either stops with an
    error naming the item, or finishes with every skip counted (the counts go to its metrics JSON)."""

    skip: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # the first few of each reason, for the user

    def handle(self, error: InputError, reason: str) -> None:
        if not self.skip:
            raise error
        self.counts[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(str(error))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_metrics(self, reasons: tuple[str, ...]) -> dict[str, int]:
        """Every known reason with its count (zeros included, so metric keys are stable)."""
        unknown = set(self.counts) - set(reasons)
        if unknown:
            raise KeyError(f"skip reasons {sorted(unknown)} are not among the declared {reasons}")
        return {reason: int(self.counts.get(reason, 0)) for reason in reasons}
