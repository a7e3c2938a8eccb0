"""check: params.yaml and the two registries -> data/check.txt, or one message listing everything that would
stop the pipeline later: unknown generator or backbone aliases (with the nearest known ones), a generator the
detector, CoDE or a probe uses that generate does not make, missing COCO images, caption files or split file, and
the missing weights of every generator and backbone, each with how to get it. Every other stage runs after it
(clusters and tiny_generator depend on its output), so a typo or a missing download fails in seconds, before
hours of generation.

    python -m stages.check --params params.yaml --backbone-registry stages/embedding/backbones.yaml \\
        --generator-registry stages/generation/generators.yaml --built tiny_random --out data/check.txt

Its subject is the configuration as a whole, so unlike the other stages it reads params.yaml itself (dvc.yaml
lists the keys it reads under `params`, so changing one reruns it). Its output is the same text whenever the
check passes: stages after it never rerun because it did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from stages.contracts.errors import InputError, user_errors

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
PASSED = "every alias is known and every input and weight the pipeline reads is on disk\n"


def _get(params: dict, dotted: str) -> Any:
    value: Any = params
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise InputError(f"params.yaml: {dotted}", "missing")
        value = value[key]
    return value


def _unknown(kind: str, alias: str, param: str, known: set[str], registry: Path) -> str:
    from stages.embedding.backbones import nearest

    close = nearest(alias, known)
    hint = f"nearest: {', '.join(close)}" if close else f"known: {', '.join(sorted(known))}"
    return f"{param}: unknown {kind} {alias!r}, not in {registry} ({hint}); add an entry there or fix the alias"


def problems(params: dict, backbone_registry: Path, generator_registry: Path, built: set[str]) -> list[str]:
    """Everything that would stop the pipeline later, in the order a reader fixes them; empty when none."""
    from stages.embedding.backbones import read_registry as read_backbones
    from stages.embedding.backbones import weights_problem
    from stages.generation.registry import read_registry as read_generators
    from stages.generation.registry import weights_problems
    from stages.sources.readers import coco_problems

    found: list[str] = []
    backbones, generators = read_backbones(backbone_registry), read_generators(generator_registry)
    wanted_backbones = {"model.backbone": [_get(params, "model.backbone")],
                        "embed.backbones": list(_get(params, "embed.backbones"))}
    made = list(_get(params, "generate.generators"))
    for param, aliases in {"generate.generators": made}.items():
        found += [_unknown("generator", a, param, set(generators), generator_registry)
                  for a in aliases if a not in generators]
    for param, aliases in wanted_backbones.items():
        found += [_unknown("backbone", a, param, set(backbones), backbone_registry)
                  for a in aliases if a not in backbones]
    for param in ("model.generators", "code_train.data.generators", "code_eval.data.generators",
                  "code_eval.data.fit"):
        found += [f"{param}: generator {a!r} is not made by this pipeline; add it to generate.generators "
                  f"(now {made})" for a in _get(params, param) if a not in made]

    source, folder = _get(params, "clusters.source"), Path(_get(params, "clusters.input"))
    if source == "coco":
        split = _get(params, "clusters.karpathy_split")
        found += coco_problems(folder, _get(params, "clusters.coco_captions"), Path(split) if split else None)
    elif not folder.exists():
        found.append(f"clusters.input: {folder} does not exist (the {source} source's "
                     f"{'folder' if source == 'demo' else 'manifest file'})")

    models_root = Path(_get(params, "generate.models_root"))
    for alias in dict.fromkeys(made):
        if alias in generators and alias not in built:
            found += weights_problems(generators[alias], models_root)
    for alias in dict.fromkeys(a for aliases in wanted_backbones.values() for a in aliases):
        if alias in backbones:
            problem = weights_problem(backbones[alias])
            found += [problem] if problem else []
    return found


@app.command()
def main(
    params: Path = typer.Option(..., help="The pipeline's params.yaml."),
    backbone_registry: Path = typer.Option(..., help="Backbone registry (stages/embedding/backbones.yaml)."),
    generator_registry: Path = typer.Option(..., help="Generator registry (stages/generation/generators.yaml)."),
    built: list[str] = typer.Option(..., help="Generators a stage of the pipeline builds (their weights are "
                                              "not looked for; repeat)."),
    out: Path = typer.Option(..., help="Written when everything is there (always the same text)."),
) -> None:
    """Check aliases, inputs and weights before anything long runs; list every problem in one message."""
    import yaml

    from stages.contracts.io import atomic_path

    with user_errors():
        if not params.is_file():
            raise InputError(str(params), "not found")
        found = problems(yaml.safe_load(params.read_text()) or {}, backbone_registry, generator_registry,
                         set(built))
        if found:
            listing = "\n".join(f"  {i}. {problem}" for i, problem in enumerate(found, 1))
            raise InputError(str(params), f"{len(found)} things the pipeline needs are missing or wrong; nothing "
                                          f"has run:\n{listing}\n")
        with atomic_path(out) as tmp:
            tmp.write_text(PASSED)
    typer.echo(f"{out}: {PASSED.strip()}")


if __name__ == "__main__":
    app()
