"""distances (Table 1): embeddings of parents and one generator's children -> min / max intra-cluster
distance accuracy on val and test.

    python -m stages.distances --parents data/embeddings/efficientnet_lite0/parents.h5 \\
        --children data/embeddings/efficientnet_lite0/tiny_random.h5 \\
        --bootstrap-resamples 1000 --bootstrap-seed 0 \\
        --metrics metrics/distances/efficientnet_lite0/tiny_random.json

In each cluster every element's mean cosine distance to the others is computed; "min" scores a hit when
the parent has the strictly smallest mean, "max" when it has the strictly largest (chance: 1/(n+1) for a
cluster of n children, 1/(N+1) for a generated set). No training: the numbers say how the raw backbone space
places a real photograph among its children.

Partial clusters (an imported set, stages.study.clusters): each cluster is ranked at its own size; clusters
with fewer than 2 children are left out. Per split the metrics hold both accuracies, `chance` (the mean chance
level of the ranked clusters), `clusters` (ranked) and `unranked` (left out); the accuracies and chance are
null when no cluster of the split could be ranked. Each accuracy carries its 95 % bootstrap interval
(`<key>_low`, `<key>_high`: the ranked clusters resampled, docs/intervals.md). The top-level `chance` is the
mean chance level of the ranked clusters of val and test together (1/(N+1) for a generated set).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import user_errors
from stages.contracts.runtime import Command
from stages.uncertainty.bootstrap import Bootstrap
from stages.uncertainty.options import resamples_option, seed_option

app = Command()
EVAL_SPLITS = ("val", "test")


def run(parents: Path, children: Path, metrics: Path, bootstrap: Bootstrap | None = None) -> dict:
    """Compute and write the metrics; return them."""
    import numpy as np

    from stages.contracts.io import check_outputs, write_metrics
    from stages.study.clusters import load_clusters
    from stages.study.distances import chance_level, distance_accuracy, with_distance_intervals

    check_outputs(writes=[metrics], reads=[parents, children])
    clusters = load_clusters(parents, children)
    evaluated = np.isin(clusters.split, EVAL_SPLITS)
    result: dict = {"chance": chance_level(clusters.children[evaluated])}
    for split in EVAL_SPLITS:
        part = clusters.select(split)
        result[split] = with_distance_intervals(distance_accuracy(part.embeddings, part.children), bootstrap)
    write_metrics(metrics, result)
    return result


@app.command()
def main(
    parents: Path = typer.Option(..., help="Embedding cache of the parents (data/embeddings/<backbone>/parents.h5)."),
    children: Path = typer.Option(..., help="Embedding cache of one generator's children, same backbone."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
    bootstrap_resamples: int = resamples_option(),
    bootstrap_seed: int = seed_option(),
) -> None:
    """Min / max intra-cluster distance accuracy of a backbone's raw features (the paper's Table 1)."""
    with user_errors():
        result = run(parents, children, metrics, Bootstrap(bootstrap_resamples, bootstrap_seed))
    for split in EVAL_SPLITS:
        values = result[split]
        if values["min_distance_accuracy"] is not None:
            typer.echo(f"{split}: min {values['min_distance_accuracy']:.4f}  max {values['max_distance_accuracy']:.4f}"
                       f"  ({values['clusters']} clusters, chance {values['chance']:.4f}"
                       f"{f', {u} left out: fewer than 2 children' if (u := values['unranked']) else ''})")
        else:
            typer.echo(f"{split}: n/a ({values['unranked']} clusters, none with 2 children or more)")


if __name__ == "__main__":
    app()
