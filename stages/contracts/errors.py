"""Bad input: one error type that names the file or row and the problem, and a counter of skips."""

from __future__ import annotations

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


class OnBad(StrEnum):
    """What a stage does with bad input: stop at the first, naming it, or skip and count each one."""

    error = "error"
    skip = "skip"


@contextmanager
def user_errors() -> Iterator[None]:
    """In a command: print bad input and missing files as one clear line and exit 2, without a traceback."""
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
