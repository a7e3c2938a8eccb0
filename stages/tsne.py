"""tsne (the paper's Fig. 6): the focus backbone's (``model.backbone``) validation clusters of one generator
-> 2-D t-SNE coordinates in the original, T (style) and S (semantic) spaces, as plot data.

    python -m stages.tsne --parents data/embeddings/efficientnet_lite0/parents.h5 \\
        --children data/embeddings/efficientnet_lite0/tiny_random.h5 \\
        --projections data/disentangle/efficientnet_lite0/tiny_random.safetensors \\
        --max-clusters 500 --perplexity 30 --seed 0 --out metrics/plots/tsne/tiny_random

Writes original.csv, style_T.csv and semantic_S.csv (columns x, y, label real|fake, cluster_id) into --out.
A separate stage from disentangle so that changing model.backbone recomputes only these coordinates.
At most --max-clusters whole validation clusters (a seeded draw) are embedded: t-SNE is quadratic-ish. A
partial cluster (an imported set) gives its parent and the children it has.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import InputError, user_errors
from stages.contracts.runtime import Command

app = Command()
SPACES = ("original", "style_T", "semantic_S")


def tsne_2d(x, *, perplexity: float, seed: int):
    """(n, D) -> (n, 2); the perplexity is lowered to what n points allow ((n - 1) / 3)."""
    import numpy as np
    from sklearn.manifold import TSNE

    perplexity = min(perplexity, max((len(x) - 1) / 3, 1.0))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                metric="cosine").fit_transform(np.asarray(x, dtype=np.float32))


def run(parents: Path, children: Path, projections: Path, out: Path, *, max_clusters: int, perplexity: float,
        seed: int) -> dict[str, int]:
    import math

    import numpy as np
    import pandas as pd

    from stages.contracts.io import PLOT_DIGITS, atomic_path
    from stages.contracts.labels import REAL
    from stages.study.clusters import load_clusters
    from stages.study.disentangle import load_projections, project

    if not (math.isfinite(perplexity) and perplexity > 0):  # NaN passes any range check Typer makes
        raise InputError("--perplexity", f"is {perplexity}; expected a positive number (usually 5 to 50)")
    val = load_clusters(parents, children).select("val")
    if len(val.cluster_id) < 2:
        raise InputError(str(parents), f"{len(val.cluster_id)} validation clusters; t-SNE needs at least 2")
    keep = np.sort(np.random.default_rng(seed).permutation(len(val.cluster_id))[:max_clusters])
    drawn = val.take(keep)
    semantic, style = project(load_projections(projections), drawn.embeddings)  # (k, M, D) each
    points, label, cluster = drawn.elements()  # a partial cluster's parent and the children it has
    labels = np.where(label == REAL, "real", "fake")
    with atomic_path(out, kind="dir", stage="tsne", inputs=[parents, children, projections]) as tmp:
        tmp.mkdir()
        for space, features in zip(SPACES, (points, drawn.elements(style)[0], drawn.elements(semantic)[0]),
                                   strict=True):
            xy = tsne_2d(features, perplexity=perplexity, seed=seed)
            pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "label": labels, "cluster_id": cluster}).to_csv(
                tmp / f"{space}.csv", index=False, float_format=f"%.{PLOT_DIGITS}g")
    return {"clusters": len(keep), "points": len(labels)}


@app.command()
def main(
    parents: Path = typer.Option(..., help="Parents cache of the focus backbone (model.backbone)."),
    children: Path = typer.Option(..., help="One generator's children cache, same backbone."),
    projections: Path = typer.Option(..., help="S and T weights from the disentangle stage, same pair."),
    max_clusters: int = typer.Option(..., min=2, help="Validation clusters drawn (seeded) for the plot."),
    perplexity: float = typer.Option(..., help="t-SNE perplexity (lowered automatically for tiny sets)."),
    seed: int = typer.Option(..., min=0, max=2**32 - 1, help="Seed of the cluster draw and of t-SNE."),
    out: Path = typer.Option(..., help="Output folder of the three CSV files."),
) -> None:
    """2-D t-SNE of validation clusters before and after disentanglement (the paper's Fig. 6)."""
    with user_errors():
        done = run(parents, children, projections, out, max_clusters=max_clusters, perplexity=perplexity,
                   seed=seed)
    typer.echo(f"{out}: {done['points']} points from {done['clusters']} validation clusters, 3 spaces")


if __name__ == "__main__":
    app()
