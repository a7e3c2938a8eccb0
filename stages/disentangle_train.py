"""disentangle_train (Table 4's projections): embeddings of parents and one generator's children -> the semantic
(S) and style (T) projections, trained on the train split, and their losses per epoch.

    python -m stages.disentangle_train --parents data/embeddings/efficientnet_lite0/parents.h5 \\
        --children data/embeddings/efficientnet_lite0/tiny_random.h5 --epochs 25 --batch-size 1024 \\
        --lr 0.001 --weight-decay 0.01 --temperature 0.07 --seed 0 \\
        --out data/disentangle/efficientnet_lite0/tiny_random.safetensors \\
        --history metrics/plots/disentangle/efficientnet_lite0/tiny_random.json

S and T are trained with L_S = L_c - L_fr and L_T = L_fr - L_c (stages.study.disentangle). The weights
(safetensors, no pickle) feed the disentangle stage, which scores them (the S probe reads the probe's C grid, so
it is a stage of its own: a changed grid reruns the probe, never this training) and the tsne stage.
Where S and T train is a runtime setting, not a param: --device or PARENTAGE_DISENTANGLE_DEVICE (default auto).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.device import device_option
from stages.contracts.errors import InputError, user_errors
from stages.contracts.runtime import Command

app = Command()


def run(parents: Path, children: Path, out: Path, history: Path, config, *, progress: bool = True) -> list:
    """Train S and T on the train split; write the weights and the losses; return the losses."""
    import math

    from stages.contracts.io import check_outputs, write_plot_json
    from stages.study.clusters import load_clusters
    from stages.study.disentangle import save_projections, train_projections

    check_outputs(writes=[out, history], reads=[parents, children])
    # written so that NaN fails each comparison: a float option accepts nan and inf
    if not (0 < config.temperature < math.inf and 0 < config.lr < math.inf and config.epochs >= 1
            and 0 <= config.weight_decay < math.inf):
        raise InputError("disentangle", f"temperature {config.temperature}, lr {config.lr}, epochs "
                                        f"{config.epochs} and weight decay {config.weight_decay}: expected "
                                        "finite, the first three positive and the weight decay at least 0")
    clusters = load_clusters(parents, children)
    train = clusters.select("train")
    try:
        model, losses = train_projections(train.embeddings, config, present=train.present(), progress=progress)
    except ValueError as error:  # too few clusters for a batch, or for training at all
        raise InputError(f"disentangle ({parents})", str(error)) from error
    save_projections(out, model, {"backbone": str(clusters.attrs.get("backbone")), "children": str(children),
                                  "temperature": str(config.temperature), "epochs": str(config.epochs),
                                  "batch_size": str(config.batch_size), "lr": str(config.lr)})
    write_plot_json(history, losses)  # plot data: losses hold float noise, never a metric
    return losses


@app.command()
def main(
    parents: Path = typer.Option(..., help="Embedding cache of the parents."),
    children: Path = typer.Option(..., help="Embedding cache of one generator's children, same backbone."),
    epochs: int = typer.Option(..., min=1, help="Training epochs (paper: 25)."),
    batch_size: int = typer.Option(..., min=2, help="Elements per batch, rounded down to whole clusters "
                                                     "(paper: 1024)."),
    lr: float = typer.Option(..., help="AdamW learning rate (paper: 1e-3)."),
    weight_decay: float = typer.Option(..., help="AdamW weight decay (not given by the paper)."),
    temperature: float = typer.Option(..., help="SupCon temperature (not given by the paper)."),
    seed: int = typer.Option(..., min=0, max=2**32 - 1, help="Seed of the initialisation and the batch order."),
    device: str = device_option("auto", envvar="PARENTAGE_DISENTANGLE_DEVICE", what="S and T's training",
                                note="auto: the GPU when one is visible, else MPS, else the CPU. Results match "
                                     "across devices only up to floating-point rounding."),
    out: Path = typer.Option(..., help="Output S and T weights (safetensors)."),
    history: Path = typer.Option(..., help="Output per-epoch losses (plot data)."),
) -> None:
    """Train the semantic (S) and style (T) projections of a backbone's features (the paper's Table 4)."""
    from stages.study.disentangle import DisentangleConfig

    with user_errors():
        config = DisentangleConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                   temperature=temperature, seed=seed, device=device)
        losses = run(parents, children, out, history, config)
    typer.echo(f"{out}: S and T trained, {len(losses)} epochs")


if __name__ == "__main__":
    app()
