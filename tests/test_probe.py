import json

import numpy as np
import pytest
from typer.testing import CliRunner

from stages import probe
from stages.contracts.errors import InputError
from stages.contracts.io import metric_float
from stages.study.clusters import Clusters
from stages.study.probe import c_grid
from tests.fixtures import BOOTSTRAP
from tests.study_caches import write_study_caches


def cli(folder, tmp_path, *extra):
    return ["--embeddings", str(folder), "--generator", "g1", "--generators", "g1", "--generators", "g2",
            "--c-min", "0.1", "--c-max", "10", "--c-steps", "3", "--seed", "0", "--max-iter", "1000",
            "--protocol", "standardised", *BOOTSTRAP,
            "--metrics", str(tmp_path / "m.json"),
            "--roc", str(tmp_path / "roc.json"), "--cross", str(tmp_path / "cross.json"),
            "--c-search", str(tmp_path / "c_search.json"), *extra]


def test_probe_metrics_roc_and_cross_generator_grid(tmp_path):
    folder = write_study_caches(tmp_path, style=3.0, n_clusters=90)
    done = CliRunner().invoke(probe.app, cli(folder, tmp_path))
    assert done.exit_code == 0, done.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert min(abs(metrics["c"] - c) for c in (0.1, 1.0, 10.0)) < 1e-9
    # the C search is plot data keyed by C, not metrics keyed by grid position; counts are integers
    assert "c_search" not in metrics
    search = json.loads((tmp_path / "c_search.json").read_text())
    assert [row["c"] for row in search] == pytest.approx([0.1, 1.0, 10.0])
    assert all(0 <= row["val_overall_accuracy"] <= 1 for row in search)
    # each C's fit records its L-BFGS iterations and whether it converged
    assert all(row["iterations"] > 0 and row["converged"] is True for row in search)
    assert metrics["unconverged_fits"] == 0 and metrics["refit_rows"] == 0  # standardised: no refit
    assert metrics["train_rows"] == 2 * 54 and isinstance(metrics["train_rows"], int)
    for split in ("val", "test"):
        figures = {"auc", "balanced_accuracy", "overall_accuracy", "full_cluster_accuracy"}
        assert set(metrics[split]) == {*figures, *(f"{f}_{b}" for f in figures for b in ("low", "high")),
                                       "real_accuracy", "fake_accuracy", "ap", "n_real", "real_correct", "n_fake",
                                       "fake_correct", "childless_clusters"}
        assert metrics[split]["childless_clusters"] == 0
        assert metrics[split]["overall_accuracy"] > 0.9 and metrics[split]["auc"] > 0.95
        # the interval holds the figure (a percentile interval of a figure near its bound may not, not here)
        assert metrics[split]["auc_low"] <= metrics[split]["auc"] <= metrics[split]["auc_high"]
        # counts k/n of both classes: every parent and child of the split
        assert metrics[split]["n_fake"] == 5 * metrics[split]["n_real"] and isinstance(metrics[split]["n_real"], int)
    roc = json.loads((tmp_path / "roc.json").read_text())
    assert roc[0]["fpr"] == 0 and roc[-1]["tpr"] == 1
    cross = json.loads((tmp_path / "cross.json").read_text())
    assert [(r["train_generator"], r["test_generator"]) for r in cross] == [("g1", "g1"), ("g1", "g2")]
    assert metric_float(cross[0]["overall_accuracy"]) == metrics["test"]["overall_accuracy"]
    # g2 shares g1's style direction (same spec seed): the probe transfers
    assert cross[1]["overall_accuracy"] > 0.9


def test_cross_generator_with_another_fingerprint_falls(tmp_path):
    folder = write_study_caches(tmp_path, style=3.0, n_clusters=90, style_seeds={"g2": 5})
    result = probe.run(folder, "g1", ["g1", "g2"], tmp_path / "m.json", tmp_path / "roc.json",
                       tmp_path / "cross.json", grid=[1.0], seed=0, max_iter=1000, protocol=probe.Protocol.standardised)
    cross = json.loads((tmp_path / "cross.json").read_text())
    assert result["test"]["auc"] > 0.95 and cross[1]["auc"] < result["test"]["auc"] - 0.2


def test_bad_arguments(tmp_path):
    folder = write_study_caches(tmp_path, n_clusters=30)
    with pytest.raises(InputError, match="must include the training generator"):
        probe.run(folder, "g1", ["g2"], tmp_path / "m.json", tmp_path / "r.json", tmp_path / "c.json", grid=[1.0],
                  seed=0, max_iter=1000, protocol=probe.Protocol.standardised)
    with pytest.raises(InputError, match="c_min"):
        c_grid(0, 1, 3)
    done = CliRunner().invoke(probe.app, cli(folder, tmp_path, "--generators", "g3"))
    assert done.exit_code == 2 and "g3.h5" in done.output
    assert c_grid(0.001, 1000, 7) == pytest.approx([0.001, 0.01, 0.1, 1, 10, 100, 1000])


def test_the_raw_protocol_fits_the_raw_features(tmp_path):
    """probe.protocol=raw is the paper's (CLIP's) probe: no standardisation, the head's scale 1 (the features are
    only centred for the fit, which leaves the optimal decision function as it is)."""
    from stages.study.clusters import child_cache, load_clusters
    from stages.study.probe import Protocol, balanced_rows, fit_probe

    folder = write_study_caches(tmp_path, style=3.0, n_clusters=30)
    clusters = load_clusters(folder / "parents.h5", child_cache(folder, "g1"))
    raw = fit_probe(clusters.select("train"), clusters.select("val"), [1e-6, 1.0, 1e6], protocol=Protocol.raw)
    assert (raw.probe.scale == 1).all() and (raw.selected.scale == 1).all()
    # the centre is the mean of the rows each head was fitted on: train for the selection, train + val for the refit
    train_x = balanced_rows(clusters.select("train"), 0)[0]
    assert raw.selected.mean == pytest.approx(train_x.mean(axis=0), abs=1e-6)
    both = np.concatenate([train_x, balanced_rows(clusters.select("val"), 0)[0]])
    assert raw.probe.mean == pytest.approx(both.mean(axis=0), abs=1e-6) and raw.refit_rows == len(both)
    standard = fit_probe(clusters.select("train"), clusters.select("val"), [1.0])
    assert standard.probe.mean.any()


def weak_raw_clusters(seed: int = 1, dim: int = 64) -> Clusters:
    """Clusters of one parent and one child on raw features of small scale and a weak signal (a few dimensions
    shifted by 0.4 standard deviations): the setting where sklearn's default tolerance stopped L-BFGS at once."""
    rng = np.random.default_rng(seed)
    sizes = {"train": 300, "val": 100, "test": 100}
    k = sum(sizes.values())
    x = 0.3 + 0.05 * rng.standard_normal((k, 2, dim))
    x[:, 1, :4] += 0.02  # the child (position 1) differs from its parent in 4 dimensions
    split = np.concatenate([np.full(n, name) for name, n in sizes.items()])
    return Clusters(x.astype(np.float32), np.arange(k), split, {}, np.ones(k, dtype=np.int64))


def literal_clip_probe(train_x, train_y, val_x, val_y, test_x, test_y, grid):
    """CLIP's linear-probe protocol written out plainly: cold, converged L-BFGS fits of every C on train, the C
    of the best val accuracy (the smaller on a tie), a refit on train + val at that C, its test accuracy. The fits
    use another solver than the probe's (Newton's method, whose quadratic convergence makes tolerance 1e-8 exact
    for all purposes here) on the uncentred features as CLIP passes them."""
    from sklearn.linear_model import LogisticRegression

    def fit(x, y, c):
        model = LogisticRegression(C=c, solver="newton-cholesky", tol=1e-8, max_iter=1000).fit(x, y)
        assert model.n_iter_[0] < 1000
        return model

    val_accuracy = [(fit(train_x, train_y, c).predict(val_x) == val_y).mean() for c in grid]
    best = grid[int(np.argmax(val_accuracy))]  # argmax: the first, i.e. smallest, C of the best
    final = fit(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]), best)
    return best, val_accuracy, (final.predict(test_x) == test_y).mean()


def test_raw_probe_is_clips_protocol_converged_and_refit_on_train_and_val():
    from stages.study.probe import evaluate, fit_probe

    clusters = weak_raw_clusters()
    parts = {split: clusters.select(split) for split in ("train", "val", "test")}
    rows = {split: part.elements()[:2] for split, part in parts.items()}  # every element: parent and child
    grid = c_grid(1e-6, 1e6, 25)
    best, val_accuracy, test_accuracy = literal_clip_probe(*rows["train"], *rows["val"], *rows["test"], grid)
    fit = fit_probe(parts["train"], parts["val"], grid, protocol=probe.Protocol.raw)
    assert [point.c for point in fit.grid] == grid
    assert [point.val_overall_accuracy for point in fit.grid] == pytest.approx(val_accuracy, abs=1e-12)
    assert all(point.converged and 0 < point.iterations < 1000 for point in fit.grid)
    assert fit.c == best and fit.refit_rows == 800 and fit.refit_converged
    assert evaluate(fit.head_for("test"), parts["test"])["overall_accuracy"] == pytest.approx(test_accuracy)
    # val is scored by the head that chose C, which never saw val
    assert evaluate(fit.head_for("val"), parts["val"])["overall_accuracy"] == pytest.approx(max(val_accuracy))


def test_standardised_probe_is_not_refit():
    from stages.study.probe import fit_probe

    clusters = weak_raw_clusters(seed=2)
    fit = fit_probe(clusters.select("train"), clusters.select("val"), [0.01, 1.0])
    assert fit.probe is fit.selected and fit.refit_rows == 0 and fit.refit_iterations is None
