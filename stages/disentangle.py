"""disentangle (Table 4): embeddings of parents and one generator's children -> the semantic (S) and style
(T) projections, trained on the train split, and their scores on val and test.

    python -m stages.disentangle --parents data/embeddings/efficientnet_lite0/parents.h5 \\
        --children data/embeddings/efficientnet_lite0/tiny_random.h5 --epochs 25 --batch-size 1024 \\
        --lr 0.001 --weight-decay 0.01 --temperature 0.07 --seed 0 \\
        --c-min 0.001 --c-max 1000 --c-steps 7 --max-iter 1000 --protocol standardised \\
        --out data/disentangle/efficientnet_lite0/tiny_random.safetensors \\
        --metrics metrics/disentangle/efficientnet_lite0/tiny_random.json \\
        --history metrics/plots/disentangle/efficientnet_lite0/tiny_random.json

S and T are trained with L_S = L_c - L_fr and L_T = L_fr - L_c (stages.study.disentangle). S is scored
by the linear probe of the probe stage fitted on S features (overall and full-cluster accuracy), T by the
min / max intra-cluster distance accuracy. Partial clusters (an imported set) are handled as the probe and
distances stages handle them: T's accuracies are over the clusters with 2 children or more, at the chance
level the distances stage reports for the same clusters. The weights (safetensors, no pickle) feed the tsne stage.
Where S and T train is a runtime setting, not a param: --device or PARENTAGE_DISENTANGLE_DEVICE (default auto).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.device import device_option
from stages.contracts.errors import InputError, user_errors
from stages.study.probe import Protocol

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
EVAL_SPLITS = ("val", "test")


def run(parents: Path, children: Path, out: Path, metrics: Path, history: Path, config, *, grid: list[float],
        max_iter: int, protocol: Protocol = Protocol.standardised, progress: bool = True) -> dict:
    from stages.contracts.io import write_json, write_metrics
    from stages.study.clusters import load_clusters
    from stages.study.disentangle import project, save_projections, train_projections
    from stages.study.distances import distance_accuracy
    from stages.study.probe import evaluate, fit_probe

    if config.temperature <= 0 or config.lr <= 0 or config.epochs < 1:
        raise InputError("disentangle", f"temperature {config.temperature}, lr {config.lr} and epochs "
                                        f"{config.epochs} must be positive")
    clusters = load_clusters(parents, children)
    train = clusters.select("train")
    try:
        model, losses = train_projections(train.embeddings, config, present=train.present(), progress=progress)
    except ValueError as error:  # too few clusters for a batch, or for training at all
        raise InputError(f"disentangle ({parents})", str(error)) from error
    semantic, style = project(model, clusters.embeddings)
    in_s = clusters.with_embeddings(semantic)
    fit = fit_probe(in_s.select("train"), in_s.select("val"), grid, seed=config.seed, max_iter=max_iter,
                    protocol=protocol)
    # params are not echoed and the losses are plot data (--history): metrics hold what a reviewer compares
    result: dict = {"s_probe_c": fit.c}
    for split in EVAL_SPLITS:
        mask = clusters.split == split
        scores = evaluate(fit.probe, in_s.select(split))
        t = distance_accuracy(style[mask], clusters.children[mask])  # Table 1's clusters: its chance level
        result[split] = {"S": {"overall_accuracy": scores["overall_accuracy"],
                               "full_cluster_accuracy": scores["full_cluster_accuracy"]},
                         "T": {key: t[key] for key in ("min_distance_accuracy", "max_distance_accuracy")}}
    save_projections(out, model, {"backbone": str(clusters.attrs.get("backbone")), "children": str(children),
                                  "temperature": str(config.temperature), "epochs": str(config.epochs),
                                  "batch_size": str(config.batch_size), "lr": str(config.lr)})
    write_json(history, losses)
    write_metrics(metrics, result)
    return result


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
    seed: int = typer.Option(..., min=0, help="Seed of the initialisation, the batch order and the probe's child "
                                              "draw."),
    device: str = device_option("auto", envvar="PARENTAGE_DISENTANGLE_DEVICE", what="S and T's training",
                                note="auto: the GPU when one is visible, else MPS, else the CPU. Results match "
                                     "across devices only up to floating-point rounding."),
    c_min: float = typer.Option(..., help="Smallest C of the S probe's grid (the probe stage's grid)."),
    c_max: float = typer.Option(..., help="Largest C of the grid."),
    c_steps: int = typer.Option(..., min=1, help="Number of C values."),
    max_iter: int = typer.Option(..., min=1, help="L-BFGS iterations of the S probe at most (the probe stage's)."),
    protocol: Protocol = typer.Option(..., help="The S probe's features: standardised or raw (the probe stage's)."),
    out: Path = typer.Option(..., help="Output S and T weights (safetensors)."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
    history: Path = typer.Option(..., help="Output per-epoch losses (plot data)."),
) -> None:
    """Semantic / style disentanglement of a backbone's features (the paper's Table 4)."""
    from stages.study.disentangle import DisentangleConfig
    from stages.study.probe import c_grid

    with user_errors():
        config = DisentangleConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                   temperature=temperature, seed=seed, device=device)
        result = run(parents, children, out, metrics, history, config, grid=c_grid(c_min, c_max, c_steps),
                     max_iter=max_iter, protocol=protocol)
    for split in EVAL_SPLITS:
        s, t = result[split]["S"], result[split]["T"]
        t_text = ("n/a (no cluster with 2 children or more)" if t["min_distance_accuracy"] is None else
                  f"min {t['min_distance_accuracy']:.4f} max {t['max_distance_accuracy']:.4f}")
        typer.echo(f"{split}: S overall {s['overall_accuracy']:.4f} full-cluster {s['full_cluster_accuracy']:.4f}"
                   f" | T {t_text}")


if __name__ == "__main__":
    app()
