"""probe (Table 2): embeddings of parents and the children of every configured generator -> a linear probe
trained on one generator, its accuracy on val and test, and its accuracy on every other generator.

    python -m stages.probe --embeddings data/embeddings/efficientnet_lite0 --generator tiny_random \\
        --generators tiny_random --c-min 0.001 --c-max 1000 --c-steps 7 --seed 0 --max-iter 1000 \\
        --protocol standardised --bootstrap-resamples 1000 --bootstrap-seed 0 \\
        --metrics metrics/probe/efficientnet_lite0/tiny_random.json \\
        --roc metrics/plots/roc/efficientnet_lite0/tiny_random.json \\
        --cross metrics/plots/cross_generator/efficientnet_lite0/tiny_random.json \\
        --c-search metrics/plots/c_search/efficientnet_lite0/tiny_random.json

Protocol (stages.study.probe): L2 logistic regression, L-BFGS, on the train split's parents and one
seeded random child per cluster; C from a log-spaced grid, chosen by overall accuracy on val (never test).
Reported on all elements of val and test: the headline AUC and balanced accuracy, then overall, full-cluster,
real and fake accuracy, AP and the counts; the AUC, balanced, overall and full-cluster accuracy each with its
95 % bootstrap interval, clusters resampled (`<key>_low`, `<key>_high`; docs/intervals.md), on the
cross-generator rows too.
The cross-generator grid (this probe on the test split of each generator in --generators) and the val
accuracy, L-BFGS iterations and convergence of each C of the grid are plot data; the metrics hold the chosen C
and how many fits stopped at --max-iter. Under --protocol raw (CLIP's) the tolerance is scaled to the problem and
the probe is refit on train + val at the chosen C (refit_rows); val figures are the train-only head's.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import InputError, user_errors
from stages.contracts.runtime import Command
from stages.study.probe import Protocol
from stages.uncertainty.bootstrap import Bootstrap
from stages.uncertainty.options import resamples_option, seed_option

app = Command()
EVAL_SPLITS = ("val", "test")


def run(embeddings: Path, generator: str, generators: list[str], metrics: Path, roc: Path, cross: Path, *,
        grid: list[float], seed: int, max_iter: int, protocol: Protocol, c_search: Path | None = None,
        bootstrap: Bootstrap | None = None) -> dict:
    """Fit the probe on `generator`, evaluate it on every generator, write metrics and plot data."""
    from stages.contracts.io import check_outputs, write_metrics, write_plot_json
    from stages.heads.metrics import roc_points
    from stages.study.clusters import child_cache, load_clusters
    from stages.study.probe import all_rows, evaluate, fit_probe

    check_outputs(writes=[metrics, roc, cross, c_search],
                  reads=[embeddings / "parents.h5", *(child_cache(embeddings, g) for g in generators)])
    if generator not in generators:
        raise InputError("--generators", f"{generators} must include the training generator {generator!r}")
    parents = embeddings / "parents.h5"
    clusters = load_clusters(parents, child_cache(embeddings, generator))
    try:
        fit = fit_probe(clusters.select("train"), clusters.select("val"), grid, seed=seed, max_iter=max_iter,
                        protocol=protocol)
    except ValueError as error:  # no train or val clusters, or (a partial set) no training cluster with a child
        raise InputError(f"probe ({parents})", str(error)) from error
    result: dict = {
        "c": fit.c,
        "train_rows": int(fit.train_rows),
        "refit_rows": int(fit.refit_rows),
        "unconverged_fits": int(fit.unconverged),
    }
    for split in EVAL_SPLITS:
        result[split] = evaluate(fit.head_for(split), clusters.select(split), bootstrap)
    test_x, test_y, _ = all_rows(clusters.select("test"))
    write_plot_json(roc, roc_points(fit.probe.decision(test_x), test_y))

    rows = []
    for other in generators:
        tested = clusters if other == generator else load_clusters(parents, child_cache(embeddings, other))
        rows.append({"train_generator": generator, "test_generator": other,
                     **evaluate(fit.probe, tested.select("test"), bootstrap)})
    write_plot_json(cross, rows)
    if c_search is not None:
        # the search is plot data keyed by C itself: a metrics key per grid position would pair unequal Cs
        # with each fit's L-BFGS iterations and whether it stopped before max_iter
        write_plot_json(c_search, [point._asdict() for point in fit.grid])
    write_metrics(metrics, result)
    return result


@app.command()
def main(
    embeddings: Path = typer.Option(..., help="A backbone's embedding folder: parents.h5 and <generator>.h5 "
                                              "for each generator (data/embeddings/<backbone>)."),
    generator: str = typer.Option(..., help="Generator whose children train the probe."),
    generators: list[str] = typer.Option(..., help="Every configured generator (repeat the option); the probe "
                                                   "is tested on each (the cross-generator grid)."),
    c_min: float = typer.Option(..., help="Smallest C (inverse L2 strength) of the log-spaced grid."),
    c_max: float = typer.Option(..., help="Largest C of the grid."),
    c_steps: int = typer.Option(..., min=1, help="Number of C values in the grid."),
    seed: int = typer.Option(..., min=0, max=2**32 - 1, help="Seed of the one-child-per-cluster draw."),
    max_iter: int = typer.Option(..., min=1, help="L-BFGS iterations at most."),
    protocol: Protocol = typer.Option(..., help="standardised: features standardised by the training rows; raw: "
                                                "the paper's (CLIP's) raw features."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
    roc: Path = typer.Option(..., help="Output ROC curve on the test split (plot data)."),
    cross: Path = typer.Option(..., help="Output cross-generator rows on the test split (plot data)."),
    c_search: Path = typer.Option(..., help="Output val overall accuracy of each C of the grid (plot data)."),
    bootstrap_resamples: int = resamples_option(),
    bootstrap_seed: int = seed_option(),
) -> None:
    """Linear probe of a backbone's features (the paper's Table 2), plus the cross-generator grid."""
    from stages.study.probe import c_grid

    with user_errors():
        result = run(embeddings, generator, generators, metrics, roc, cross,
                     grid=c_grid(c_min, c_max, c_steps), seed=seed, max_iter=max_iter, protocol=protocol,
                     c_search=c_search, bootstrap=Bootstrap(bootstrap_resamples, bootstrap_seed))
    if result["unconverged_fits"]:
        typer.echo(f"note: {result['unconverged_fits']} fits stopped at --max-iter {max_iter} before converging "
                   f"(see {c_search})")
    for split in EVAL_SPLITS:
        values = result[split]
        headline = "  ".join(f"{name} {values[key]:.4f}" for name, key in
                             (("AUC", "auc"), ("balanced", "balanced_accuracy")) if values.get(key) is not None)
        full = values["full_cluster_accuracy"]
        typer.echo(f"{split}: {headline}  overall {values['overall_accuracy']:.4f}  full-cluster "
                   f"{'n/a' if full is None else f'{full:.4f}'}  (C={result['c']:g})"
                   + (f"  ({values['childless_clusters']} clusters without a child left out)"
                      if values["childless_clusters"] else ""))


if __name__ == "__main__":
    app()
