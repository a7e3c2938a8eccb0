"""The ``parentage`` command: every stage as a sub-command (``parentage clusters --help``), plus the tools
that are not DVC stages. DVC calls the modules directly (``python -m stages.<name>``).

The command list is derived from the package (`command_modules`): every top-level module of ``stages`` whose
``main`` is a Typer command (``@app.command()``) is ``parentage <module name>``; a new stage needs no line here."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import typer

from stages.contracts.runtime import Command

PACKAGE = Path(__file__).parent
# first in the list, in their own panel: the commands people run on their own images (not DVC stages); the
# Python API's counterparts (import parentage: Detector.load(...).score(...))
FIRST = ("detect", "convert_code_release")
USER_PANEL = "Score images (Python: import parentage)"
STAGE_PANEL = "Pipeline stages (dvc repro runs these; each takes its params as options)"


def _is_command(decorator: ast.expr) -> bool:
    """`@app.command` or `@app.command(...)` (any Typer app's name)."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == "command"


def command_modules(package: Path = PACKAGE) -> list[str]:
    """Names of the top-level modules of `package` whose top-level `main` is a Typer command, read with `ast`
    (nothing is imported). Order: `FIRST` as listed, then alphabetical. Alphabetical rather than pipeline order because
    that order lives in dvc.yaml, which an installed package does not carry, and a list kept here by hand is
    what this function replaces."""
    names = []
    for info in pkgutil.iter_modules([str(package)]):
        if info.ispkg:
            continue
        tree = ast.parse((package / f"{info.name}.py").read_text(encoding="utf-8"))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" and any(map(_is_command, node.decorator_list))
               for node in tree.body):
            names.append(info.name)
    return sorted(names, key=lambda name: (FIRST.index(name) if name in FIRST else len(FIRST), name))


# (sub-command, module): each module's `main` is its one Typer command.
COMMANDS = [(name, f"{__package__}.{name}") for name in command_modules()]

HELP = ("parentage: real photographs versus the images a diffusion model makes from their captions.\n\n"
        "Score images: parentage detect PATHS... --detector data/detector (after make demo, or a detector of "
        "your own; convert_code_release turns the CoDE authors' release into one). The stages below are what "
        "dvc repro runs; run them through DVC rather than by hand.")
app = Command(no_args_is_help=True, help=HELP)
for name, module in COMMANDS:
    loaded = importlib.import_module(module)
    # a command that takes more than its declared options (check: import_children.sets) says so
    app.command(name, context_settings=getattr(loaded, "CONTEXT_SETTINGS", None),
                rich_help_panel=USER_PANEL if name in FIRST else STAGE_PANEL)(loaded.main)


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        typer.echo(f"parentage {version('parentage')}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the installed version and exit.")) -> None:
    """parentage: real photographs versus the images a diffusion model makes from their captions."""

if __name__ == "__main__":
    app()
