"""Runtime knobs (STYLE.md 18: speed, never results): their bounds, the PARENTAGE_* variables the commands know,
and the DataLoader every stage reads images through.

- `parallel_option`: the one option type of every thread and worker knob. Above the machine's cores times
  FACTOR a value only exhausts the process limit (PARENTAGE_EMBED_THREADS=100000 segfaulted the stage and a
  concurrent run), so it is refused with exit 2 naming the option, its variable and the bound.
- `known_variables` / `warn_unknown_variables`: the PARENTAGE_* variables are read off the commands' Typer options
  (their ``envvar=``) and each module's ``ENVIRONMENT`` tuple (variables read without an option: generate's speed
  settings, the launchers dvc.yaml's shell reads), from the source with `ast`, so no command imports another
  and no list is written twice. An unknown one is a misspelling: `Command` names it, with the nearest known
  one, on stderr at the start of every command. A warning, not an error: one environment reaches every stage
  and every checkout run in it (an older commit under ``dvc exp run``, a branch with a new knob), and a knob
  decides speed only, so a stray variable must not stop a pipeline whose results it cannot change.
- `data_loader` / `checked_batches`: a DataLoader with a timeout, iterated so that a worker that died or never started
  ("can't start new thread") is an error naming the stage and the knob to lower, never a wait at 0 % CPU.
"""

from __future__ import annotations

import ast
import difflib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import typer

from stages.contracts.errors import InputError

PACKAGE = Path(__file__).resolve().parents[1]
PREFIX = "PARENTAGE_"
# threads and workers allowed per core: I/O-bound readers gain from a few per core, nothing gains from more
FACTOR = 8
# seconds a DataLoader waits for one batch before its workers count as dead: a batch of large images takes
# seconds, a worker that never started takes for ever
LOADER_TIMEOUT = 300.0


# ------------------------------------------------------------------------------------------- bounded knobs
def most_parallel() -> int:
    """The largest thread or worker count a knob accepts on this machine: its cores times FACTOR."""
    return FACTOR * (os.cpu_count() or 1)


def parallel_option(default: int, *, envvar: str | None = None, minimum: int = 0, help: str) -> Any:
    """A thread or worker knob: ``workers: int = parallel_option(2, envvar="PARENTAGE_EMBED_WORKERS", help=...)``.
    A value outside minimum..most_parallel() is a usage error (exit 2) naming the option, the variable when the
    value came from it, and the bound."""
    bound, cores = most_parallel(), os.cpu_count() or 1

    def check(value: int) -> int:
        if value > bound:
            raise typer.BadParameter(f"{value} is above {bound}, this machine's {cores} cores x {FACTOR}: more "
                                     "threads or processes than that only exhaust the process limit")
        return value

    return typer.Option(default, min=minimum, envvar=envvar, callback=check,
                        help=f"{help} At most {bound} (this machine's {cores} cores x {FACTOR}).")


# ------------------------------------------------------------------------------------------- variables
def _string_keywords(tree: ast.AST, keyword: str) -> set[str]:
    return {k.value.value for node in ast.walk(tree) if isinstance(node, ast.Call) for k in node.keywords
            if k.arg == keyword and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)}


def _environment_tuple(tree: ast.Module) -> set[str]:
    return {element.value for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name) and target.id == "ENVIRONMENT" and isinstance(node.value, ast.Tuple)
            for element in node.value.elts if isinstance(element, ast.Constant) and isinstance(element.value, str)}


@cache
def known_variables(package: Path = PACKAGE) -> frozenset[str]:
    """Every PARENTAGE_* variable some command reads: the ``envvar=`` of the commands' options and the
    ``ENVIRONMENT`` tuples of the package's modules, read with `ast` (nothing is imported)."""
    found: set[str] = set()
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found |= _string_keywords(tree, "envvar") | _environment_tuple(tree)
    return frozenset(name for name in found if name.startswith(PREFIX))


def unknown_variables(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """{unknown PARENTAGE_* variable set in `environ`: the nearest known one, or None}."""
    environ = os.environ if environ is None else environ
    set_here = sorted(name for name in environ if name.startswith(PREFIX))
    if not set_here:
        return {}
    known = known_variables()
    # compared without the prefix every name shares, which would make any two names look alike
    tails = {name.removeprefix(PREFIX): name for name in known}
    return {name: tails.get(next(iter(difflib.get_close_matches(name.removeprefix(PREFIX), sorted(tails), n=1,
                                                                cutoff=0.6)), ""))
            for name in set_here if name not in known}


def warn_unknown_variables(environ: Mapping[str, str] | None = None) -> None:
    """One line on stderr for each unknown PARENTAGE_* variable, naming the nearest known one."""
    for name, nearest in unknown_variables(environ).items():
        hint = f"did you mean {nearest}?" if nearest else "no command reads it"
        print(f"warning: {name} is not a parentage setting and is ignored; {hint} (docs/runtime.md)",
              file=sys.stderr)


class Command(typer.Typer):
    """A stage's Typer app: warns of misspelt PARENTAGE_* variables before the command runs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"add_completion": False, "pretty_exceptions_enable": False, **kwargs})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        warn_unknown_variables()
        return super().__call__(*args, **kwargs)


# ------------------------------------------------------------------------------------------- data loaders
class WorkerError(InputError):
    """A DataLoader worker died, never started, or gave no batch within LOADER_TIMEOUT seconds."""


def data_loader(dataset: Any, *, num_workers: int, **kwargs: Any) -> Any:
    """`torch.utils.data.DataLoader` with a timeout on every batch where workers read (iterate it with
    `checked_batches`, so a dead worker is a WorkerError)."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, num_workers=num_workers, timeout=LOADER_TIMEOUT if num_workers else 0, **kwargs)


def checked_batches(loader: Iterable) -> Iterator:
    """The batches of `loader` (a DataLoader, or a wrapper of one such as tqdm or accelerate's); a worker that
    died, never started or timed out is a WorkerError naming the command and its knob to lower."""
    try:
        yield from loader
    except RuntimeError as error:
        text = str(error)
        # torch's words for a worker that gave nothing or died, and the OS's for one that could not start; an
        # error a worker caught in the dataset's own code ("Caught ... in DataLoader worker") is left as it is
        if not any(sign in text for sign in ("DataLoader timed out", "exited unexpectedly", "can't start new thread")):
            raise
        stage, knob = _stage_and_knob()
        raise WorkerError(stage, f"a DataLoader worker died, could not start, or gave no batch in {LOADER_TIMEOUT:g} "
                          f"s ({text.splitlines()[0]}); the machine may be out of processes, threads or memory",
                          f"lower {knob}; 0 reads in the main process") from error


def _stage_and_knob() -> tuple[str, str]:
    """The running command's name and its workers option (with its variable), from click's context."""
    try:  # typer 0.29 vendors click (typer._click): its commands push their context there
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context

    context = get_current_context(silent=True)
    if context is None:
        return "DataLoader", "num_workers"
    module = getattr(context.command.callback, "__module__", "") or ""
    stage = module.rsplit(".", 1)[-1] if module.startswith("stages.") else (context.info_name or module)
    for param in context.command.params:
        if param.name == "workers":
            flag = max(param.opts, key=len)
            return stage, f"{flag} ({param.envvar})" if param.envvar else flag
    return stage, "its workers"
