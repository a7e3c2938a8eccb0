"""estimate: a setting's params and the two registries -> a table of GPU-hours, the images per second per GPU
assumed, and disk, per stage (stages/compute/cost.py has the counts and the assumed rates). Not a DVC stage: the
check stage prints the same table when the pipeline runs on COCO (the paper's setting).

    parentage estimate --generators sd14 --generators sd21 --backbones resnet50_imagenet \\
        --backbones clip_vitb32_openai --parents 123287 --captions-per-parent 5

`--rates FILE` replaces assumed rates by measured ones (a YAML mapping, e.g. ``unet_steps_per_s: 210`` from
``python benchmarks/gpu_check.py``'s images/s x steps).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.compute.cost import COCO_PARENTS, COCO_TRAIN_PARENTS
from stages.contracts.errors import user_errors
from stages.contracts.runtime import Command

app = Command()


@app.command()
def main(
    generators: list[str] = typer.Option(..., help="generate.generators: aliases of --generator-registry (repeat)."),
    backbones: list[str] = typer.Option(..., help="embed.backbones and model.backbone: aliases of "
                                                  "--backbone-registry (repeat)."),
    children_sets: int = typer.Option(-1, help="children.sets: how many sets are embedded (-1: the generators)."),
    parents: int = typer.Option(COCO_PARENTS, min=1, help="Parents (COCO 2014 train + val: 123,287)."),
    captions_per_parent: int = typer.Option(5, min=1, help="clusters.captions_per_parent: children per parent "
                                                           "and generator."),
    train_parents: int = typer.Option(COCO_TRAIN_PARENTS, min=1, help="Parents in the train split (CoDE's pairs "
                                                                      "per epoch; Karpathy's: 113,287)."),
    code_epochs: int = typer.Option(150, min=0, help="code_train.epochs (0: leave CoDE out)."),
    code_image_size: int = typer.Option(224, min=16, help="code_train.image_size."),
    encoding: str = typer.Option("jpeg", help="generate.encoding: jpeg | png."),
    generator_registry: Path = typer.Option(Path("stages/generation/generators.yaml"), help="Generator registry."),
    backbone_registry: Path = typer.Option(Path("stages/embedding/backbones.yaml"), help="Backbone registry."),
    rates: Path | None = typer.Option(None, help="YAML of measured rates replacing the assumed ones "
                                                 "(stages.compute.cost.Rates' fields)."),
) -> None:
    """Estimate GPU-hours, images/s per GPU and disk per stage for a setting, before running it."""
    from stages.compute import cost

    with user_errors():
        rows = cost.estimate(cost.Scale(parents=parents, captions_per_parent=captions_per_parent,
                                        train_parents=train_parents),
                             generators=cost.generators_of(generators, generator_registry),
                             backbones=cost.backbones_of(backbones, backbone_registry),
                             children_sets=None if children_sets < 0 else children_sets,
                             code=cost.Code(epochs=code_epochs, image_size=code_image_size) if code_epochs else None,
                             encoding=encoding, rates=cost.Rates.from_file(rates) if rates else cost.Rates())
    typer.echo(cost.table(rows))


if __name__ == "__main__":
    app()
