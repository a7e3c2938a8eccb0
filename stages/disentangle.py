"""disentangle (Table 4): the S and T projections (the disentangle_train stage's) of parents and one generator's
children -> their scores on val and test.

    python -m stages.disentangle --parents data/embeddings/efficientnet_lite0/parents.h5 \\
        --children data/embeddings/efficientnet_lite0/tiny_random.h5 \\
        --projections data/disentangle/efficientnet_lite0/tiny_random.safetensors --seed 0 \\
        --c-min 0.001 --c-max 1000 --c-steps 7 --max-iter 1000 --protocol standardised \\
        --bootstrap-resamples 1000 --bootstrap-seed 0 \\
        --metrics metrics/disentangle/efficientnet_lite0/tiny_random.json

S is scored by the linear probe of the probe stage fitted on S features (overall and full-cluster accuracy), T
by the min / max intra-cluster distance accuracy. Partial clusters (an imported set) are handled as the probe and
distances stages handle them: T's accuracies are over the clusters with 2 children or more, at the chance
level the distances stage reports for the same clusters. Training lives in disentangle_train: a change of the
probe's grid reruns this scoring (seconds), never the projections' training (epochs on a GPU). Every accuracy
carries its 95 % bootstrap interval, clusters resampled (`<key>_low`, `<key>_high`; docs/intervals.md).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import user_errors
from stages.contracts.runtime import Command
from stages.study.probe import Protocol
from stages.uncertainty.bootstrap import Bootstrap
from stages.uncertainty.options import resamples_option, seed_option

app = Command()
EVAL_SPLITS = ("val", "test")


def run(parents: Path, children: Path, projections: Path, metrics: Path, *, seed: int, grid: list[float],
        max_iter: int, protocol: Protocol = Protocol.standardised, bootstrap: Bootstrap | None = None) -> dict:
    """Project the clusters with S and T, fit the S probe (C chosen on val), score both on val and test."""
    from stages.contracts.io import check_outputs, write_metrics
    from stages.study.clusters import load_clusters
    from stages.study.disentangle import load_projections, project
    from stages.study.distances import distance_accuracy, with_distance_intervals
    from stages.study.probe import evaluate, fit_probe

    check_outputs(writes=[metrics], reads=[parents, children, projections])
    clusters = load_clusters(parents, children)
    semantic, style = project(load_projections(projections), clusters.embeddings)
    in_s = clusters.with_embeddings(semantic)
    fit = fit_probe(in_s.select("train"), in_s.select("val"), grid, seed=seed, max_iter=max_iter,
                    protocol=protocol)
    # params are not echoed and the losses are plot data (disentangle_train): metrics hold what a reviewer compares
    result: dict = {"s_probe_c": fit.c}
    for split in EVAL_SPLITS:
        mask = clusters.split == split
        scores = evaluate(fit.head_for(split), in_s.select(split), bootstrap)
        t = distance_accuracy(style[mask], clusters.children[mask])  # Table 1's clusters: its chance level
        s_keys = [k for k in scores if k.startswith(("overall_accuracy", "full_cluster_accuracy"))]
        t_figures = with_distance_intervals({key: t[key] for key in ("min_distance_accuracy", "max_distance_accuracy",
                                                                     "clusters")}, bootstrap)
        result[split] = {"S": {**{key: scores[key] for key in s_keys},
                               "childless_clusters": scores["childless_clusters"]},
                         "T": {key: value for key, value in t_figures.items() if key != "clusters"}}
    write_metrics(metrics, result)
    return result


@app.command()
def main(
    parents: Path = typer.Option(..., help="Embedding cache of the parents."),
    children: Path = typer.Option(..., help="Embedding cache of one generator's children, same backbone."),
    projections: Path = typer.Option(..., help="S and T weights of the same pair (disentangle_train)."),
    seed: int = typer.Option(..., min=0, max=2**32 - 1, help="Seed of the S probe's child draw (disentangle.seed)."),
    c_min: float = typer.Option(..., help="Smallest C of the S probe's grid (the probe stage's grid)."),
    c_max: float = typer.Option(..., help="Largest C of the grid."),
    c_steps: int = typer.Option(..., min=1, help="Number of C values."),
    max_iter: int = typer.Option(..., min=1, help="L-BFGS iterations of the S probe at most (the probe stage's)."),
    protocol: Protocol = typer.Option(..., help="The S probe's features: standardised or raw (the probe stage's)."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
    bootstrap_resamples: int = resamples_option(),
    bootstrap_seed: int = seed_option(),
) -> None:
    """Score the semantic / style disentanglement of a backbone's features (the paper's Table 4)."""
    from stages.study.probe import c_grid

    with user_errors():
        result = run(parents, children, projections, metrics, seed=seed, grid=c_grid(c_min, c_max, c_steps),
                     max_iter=max_iter, protocol=protocol,
                     bootstrap=Bootstrap(bootstrap_resamples, bootstrap_seed))
    for split in EVAL_SPLITS:
        s, t = result[split]["S"], result[split]["T"]
        t_text = ("n/a (no cluster with 2 children or more)" if t["min_distance_accuracy"] is None else
                  f"min {t['min_distance_accuracy']:.4f} max {t['max_distance_accuracy']:.4f}")
        full = s["full_cluster_accuracy"]
        full_text = "n/a (no cluster with a child)" if full is None else f"{full:.4f}"
        typer.echo(f"{split}: S overall {s['overall_accuracy']:.4f} full-cluster {full_text} | T {t_text}")


if __name__ == "__main__":
    app()
