"""Balanced headlines and bootstrap intervals (stages.heads.metrics, stages.uncertainty.bootstrap) against
independent implementations: sklearn's metrics, a plain-loop bootstrap, and the Hanley-McNeil closed form."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from stages.contracts.labels import FAKE, REAL
from stages.heads.metrics import (
    COUNTS,
    INTERVALS,
    METRICS,
    MIN_REALS,
    TPR_AT_FPR,
    balanced_accuracy,
    bounds,
    classification_metrics,
    tpr_at_fpr,
)
from stages.heads.threshold import predict
from stages.uncertainty import bootstrap as bs
from stages.uncertainty.bootstrap import Bootstrap, auc_of, classification_intervals, mean_interval


def tied_set(seed: int = 0, n_clusters: int = 40, children: int = 5):
    """Clusters of one parent and `children` children; scores rounded to one decimal, so many tie."""
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(n_clusters), children + 1)
    label = np.tile([REAL] + [FAKE] * children, n_clusters)
    score = np.round(rng.normal(size=len(label)) + 0.8 * label, 1)
    return score, label, cluster


# ---------------------------------------------------------------------------------------- the point figures
def test_balanced_accuracy_and_auc_equal_sklearn_with_ties():
    score, label, _ = tied_set()
    assert len(np.unique(score)) < len(score) / 2  # heavily tied
    predicted = predict(score, 0.3)
    got = classification_metrics(score, label, threshold=0.3)
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(label, predicted), abs=1e-15)
    assert balanced_accuracy(predicted, label) == pytest.approx(balanced_accuracy_score(label, predicted), abs=1e-15)
    assert got["auc"] == pytest.approx(roc_auc_score(label, score), abs=1e-15)
    # the vectorised AUC the bootstrap uses, on weights of one: sklearn's too, ties counted one half
    _, group = np.unique(score, return_inverse=True)
    real = np.bincount(group[label == REAL], minlength=group.max() + 1)[None].astype(float)
    fake = np.bincount(group[label == FAKE], minlength=group.max() + 1)[None].astype(float)
    assert auc_of(real, fake)[0] == pytest.approx(roc_auc_score(label, score), abs=1e-15)
    # all tied: 0.5
    assert classification_metrics(np.zeros(4), np.array([REAL, FAKE, REAL, FAKE]))["auc"] == 0.5


def test_the_headline_survives_an_imbalanced_set():
    # 239 reals, 3 fakes, a detector that calls everything real: overall 98.8 %, balanced 50 %
    label = np.array([REAL] * 239 + [FAKE] * 3)
    got = classification_metrics(np.full(len(label), -1.0), label, low_fpr=True)
    assert got["overall_accuracy"] == pytest.approx(239 / 242) and got["balanced_accuracy"] == 0.5
    assert (got["n_real"], got["real_correct"], got["n_fake"], got["fake_correct"]) == (239, 239, 3, 0)
    assert list(got)[:4] == list(METRICS[:4]) == ["auc", "balanced_accuracy", *TPR_AT_FPR]
    assert list(got)[-4:] == list(COUNTS)


def test_tpr_at_fpr_is_null_below_the_reals_it_needs():
    rng = np.random.default_rng(1)
    for n_real, expected in [(19, (None, None)), (20, (None, "value")), (99, (None, "value")),
                             (100, ("value", "value"))]:
        label = np.array([REAL] * n_real + [FAKE] * 10)
        score = rng.normal(size=len(label)) + label
        got = classification_metrics(score, label, low_fpr=True)
        for key, want in zip(TPR_AT_FPR, expected, strict=True):
            assert MIN_REALS[key] == round(1 / TPR_AT_FPR[key])
            if want is None:
                assert got[key] is None, (n_real, key)
            else:
                assert got[key] == tpr_at_fpr(score, label, TPR_AT_FPR[key]), (n_real, key)


# -------------------------------------------------------------------------------------------- the bootstrap
def loop_bootstrap(score, label, units, *, threshold, resamples, seed, level=0.95):
    """An independent percentile bootstrap: one resample at a time, the same unit draws (resample r takes
    rng.integers(0, U, U) after resamples 0..r-1), each figure recomputed on the resampled elements with sklearn
    and stages.heads.metrics.tpr_at_fpr."""
    ids = np.unique(units)
    members = [np.flatnonzero(units == u) for u in ids]
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {k: [] for k in ("auc", "balanced_accuracy", "overall_accuracy",
                                                      "full_cluster_accuracy", *TPR_AT_FPR)}
    for _ in range(resamples):
        drawn = rng.integers(0, len(ids), size=len(ids))
        rows = np.concatenate([members[d] for d in drawn])
        s, y = score[rows], label[rows]
        p = predict(s, threshold)
        if (y == REAL).any() and (y == FAKE).any():
            values["auc"].append(roc_auc_score(y, s))
            values["balanced_accuracy"].append(balanced_accuracy_score(y, p))
            for key, fpr in TPR_AT_FPR.items():
                values[key].append(tpr_at_fpr(s, y, fpr))
        values["overall_accuracy"].append(float((p == y).mean()))
        values["full_cluster_accuracy"].append(float(np.mean([(p[members[d]] == label[members[d]]).all()
                                                               for d in drawn])))
    alpha = (1 - level) / 2
    return {k: tuple(np.quantile(v, [alpha, 1 - alpha])) for k, v in values.items()}


@pytest.mark.parametrize("unit", ["cluster", "image"])
def test_the_vectorised_bootstrap_equals_a_plain_loop(unit):
    score, label, cluster = tied_set(seed=2, n_clusters=30)
    units = cluster if unit == "cluster" else np.arange(len(label))
    boot = Bootstrap(resamples=200, seed=7)
    expected = loop_bootstrap(score, label, units, threshold=0.4, resamples=200, seed=7)
    figures = dict.fromkeys([*expected], 0.5)
    if unit == "image":
        del figures["full_cluster_accuracy"], expected["full_cluster_accuracy"]
    got = classification_intervals(score, label, predict(score, 0.4), units=units, bootstrap=boot, figures=figures,
                                   low_fpr=TPR_AT_FPR, cluster_id=cluster)
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


def test_chunking_never_changes_the_draws(monkeypatch):
    score, label, cluster = tied_set(seed=3)
    boot = Bootstrap(resamples=50, seed=1)
    whole = classification_metrics(score, label, cluster_id=cluster, units=cluster, bootstrap=boot, low_fpr=True)
    monkeypatch.setattr(bs, "CHUNK_CELLS", 100)  # a resample or two per chunk
    assert classification_metrics(score, label, cluster_id=cluster, units=cluster, bootstrap=boot,
                                  low_fpr=True) == whole
    assert classification_metrics(score, label, cluster_id=cluster, units=cluster,
                                  bootstrap=Bootstrap(resamples=50, seed=2), low_fpr=True) != whole


def test_auc_interval_agrees_with_hanley_mcneil_on_a_large_sample():
    # binormal scores, 1,000 reals and 1,000 fakes, AUC near 0.76: Hanley & McNeil (1982)'s standard error
    rng = np.random.default_rng(0)
    n = 1000
    label = np.array([REAL] * n + [FAKE] * n)
    score = rng.normal(size=2 * n) + label.astype(float)
    got = classification_metrics(score, label, bootstrap=Bootstrap(resamples=2000, seed=0))
    a = got["auc"]
    q1, q2 = a / (2 - a), 2 * a**2 / (1 + a)
    se = np.sqrt((a * (1 - a) + (n - 1) * (q1 - a**2) + (n - 1) * (q2 - a**2)) / (n * n))
    # tolerance: a quarter of the closed form's standard error on each bound (about 0.003 in AUC here)
    assert got["auc_low"] == pytest.approx(a - 1.96 * se, abs=0.25 * se)
    assert got["auc_high"] == pytest.approx(a + 1.96 * se, abs=0.25 * se)


def test_the_cluster_bootstrap_resamples_clusters():
    # each cluster is right or wrong as a whole (a shared cluster effect): six elements carry one cluster's worth
    # of information, so resampling clusters gives an interval about sqrt(6) as wide as resampling images
    rng = np.random.default_rng(4)
    n_clusters = 300
    cluster = np.repeat(np.arange(n_clusters), 6)
    label = np.tile([REAL] + [FAKE] * 5, n_clusters)
    right = np.repeat(rng.random(n_clusters) < 0.7, 6)
    score = np.where(right == (label == FAKE), 1.0, -1.0)  # FAKE where >= 0: right exactly where `right`
    boot = Bootstrap(resamples=1000, seed=0)
    by_cluster = classification_metrics(score, label, cluster_id=cluster, units=cluster, bootstrap=boot)
    width = {}
    for name, units in [("cluster", cluster), ("image", None)]:
        low, high = mean_interval((predict(score) == label).astype(float), units, boot)
        width[name] = high - low
    assert by_cluster["overall_accuracy_high"] - by_cluster["overall_accuracy_low"] == pytest.approx(
        width["cluster"])
    assert 2.0 < width["cluster"] / width["image"] < 3.0


def test_metrics_carry_bounds_beside_each_figure():
    score, label, cluster = tied_set(seed=5, n_clusters=30)
    got = classification_metrics(score, label, cluster_id=cluster, units=cluster, low_fpr=True,
                                 bootstrap=Bootstrap(resamples=100, seed=0))
    keys = list(got)
    for key in INTERVALS:
        low, high = bounds(key)
        if got[key] is None:  # 30 reals: the TPR at 1 % FPR is null, and so are its bounds
            assert got[low] is None and got[high] is None and key == "tpr_at_fpr_1pct"
        else:
            assert keys.index(low) == keys.index(key) + 1 and keys.index(high) == keys.index(key) + 2
            assert got[low] <= got[key] <= got[high] or key.startswith("tpr")
    assert "ap_low" not in got and "real_accuracy_low" not in got
    # without a bootstrap, no bounds
    assert not any(k.endswith(("_low", "_high")) for k in classification_metrics(score, label))


def test_bootstrap_settings_are_checked():
    for bad in [dict(resamples=0, seed=0), dict(resamples=10, seed=-1), dict(resamples=1.5, seed=0),
                dict(resamples=True, seed=0)]:
        with pytest.raises(ValueError, match="bootstrap"):
            Bootstrap(**bad)


def test_a_proportion_interval_is_the_bootstrap_of_its_hits():
    from stages.study.distances import with_distance_intervals

    boot = Bootstrap(resamples=300, seed=3)
    figures = with_distance_intervals({"min_distance_accuracy": 0.3, "max_distance_accuracy": None, "clusters": 40},
                                      boot)
    hits = np.array([1.0] * 12 + [0.0] * 28)
    rng = np.random.default_rng(3)
    loop = [hits[rng.integers(0, 40, size=40)].mean() for _ in range(300)]
    assert (figures["min_distance_accuracy_low"], figures["min_distance_accuracy_high"]) == pytest.approx(
        tuple(np.quantile(loop, [0.025, 0.975])), abs=1e-12)
    assert figures["max_distance_accuracy_low"] is None and figures["max_distance_accuracy_high"] is None
    assert list(figures) == ["min_distance_accuracy", "min_distance_accuracy_low", "min_distance_accuracy_high",
                             "max_distance_accuracy", "max_distance_accuracy_low", "max_distance_accuracy_high",
                             "clusters"]


def test_exactly_the_stages_that_report_intervals_depend_on_the_bootstrap_params():
    """A change of `bootstrap` reruns the stages with an interval (and the check), nothing upstream."""
    import yaml

    from tests.imports import REPO

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    passing, listing = set(), set()
    for name, stage in stages.items():
        body = stage.get("do", stage)
        if "${bootstrap.resamples}" in body["cmd"] and "${bootstrap.seed}" in body["cmd"]:
            passing.add(name)
        if "bootstrap" in body.get("params", []):
            listing.add(name)
    assert passing == listing == {"check", "distances", "distances_model", "probe", "probe_model", "retrieval",
                                  "retrieval_model", "disentangle", "disentangle_model", "detector", "code_eval",
                                  "benchmark"}


def test_full_cluster_accuracy_is_resampled_by_cluster_only():
    score, label, cluster = tied_set(seed=6, n_clusters=10)
    for units in (None, np.arange(len(label))):
        with pytest.raises(ValueError, match="units must be the cluster ids"):
            classification_metrics(score, label, cluster_id=cluster, units=units, bootstrap=Bootstrap(50, 0))
