import json

import pytest
from typer.testing import CliRunner

from stages import probe
from stages.contracts.errors import InputError
from stages.contracts.io import metric_float
from stages.study.probe import c_grid
from tests.study_caches import write_study_caches


def cli(folder, tmp_path, *extra):
    return ["--embeddings", str(folder), "--generator", "g1", "--generators", "g1", "--generators", "g2",
            "--c-min", "0.1", "--c-max", "10", "--c-steps", "3", "--seed", "0", "--max-iter", "1000",
            "--protocol", "standardised",
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
    assert metrics["train_rows"] == 2 * 54 and isinstance(metrics["train_rows"], int)
    for split in ("val", "test"):
        assert set(metrics[split]) == {"overall_accuracy", "full_cluster_accuracy", "real_accuracy",
                                       "fake_accuracy", "auc", "ap", "childless_clusters"}
        assert metrics[split]["childless_clusters"] == 0
        assert metrics[split]["overall_accuracy"] > 0.9 and metrics[split]["auc"] > 0.95
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
    """probe.protocol=raw is the paper's (CLIP's) probe: no standardisation, the head's mean 0 and scale 1."""
    from stages.study.clusters import child_cache, load_clusters
    from stages.study.probe import Protocol, fit_probe

    folder = write_study_caches(tmp_path, style=3.0, n_clusters=30)
    clusters = load_clusters(folder / "parents.h5", child_cache(folder, "g1"))
    raw = fit_probe(clusters.select("train"), clusters.select("val"), [1e-6, 1.0, 1e6], protocol=Protocol.raw)
    assert not raw.probe.mean.any() and (raw.probe.scale == 1).all()
    standard = fit_probe(clusters.select("train"), clusters.select("val"), [1.0])
    assert standard.probe.mean.any()
