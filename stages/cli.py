"""The ``parentage`` command: every stage as a sub-command (``parentage clusters --help``), plus the tools
that are not DVC stages. DVC calls the modules directly (``python -m stages.<name>``)."""

from __future__ import annotations

import importlib

import typer

# (sub-command, module): each module's `main` is its one Typer command.
COMMANDS = [
    ("demo_parents", "stages.demo_parents"),
    ("clusters", "stages.clusters"),
    ("tiny_generator", "stages.tiny_generator"),
    ("generate", "stages.generate"),
    ("import_children", "stages.import_children"),
    ("embed", "stages.embed"),
    ("distances", "stages.distances"),
    ("probe", "stages.probe"),
    ("retrieval", "stages.retrieval"),
    ("disentangle", "stages.disentangle"),
    ("tsne", "stages.tsne"),
    ("report", "stages.report"),
    ("select", "stages.select"),
    ("code_train", "stages.code_train"),
    ("code_eval", "stages.code_eval"),
    ("detector", "stages.detector"),
    ("detect", "stages.detect"),
    ("check", "stages.check"),
    ("benchmark_demo", "stages.benchmark_demo"),
    ("benchmark", "stages.benchmark"),
]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="parentage: real photographs versus the images a diffusion model makes from their captions.")
for name, module in COMMANDS:
    loaded = importlib.import_module(module)
    # a command that takes more than its declared options (check: import_children.sets) says so
    app.command(name, context_settings=getattr(loaded, "CONTEXT_SETTINGS", None))(loaded.main)


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
