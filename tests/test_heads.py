"""The classification toolkit (stages.heads) with known answers, and that every stage that classifies uses it."""

import numpy as np
import pytest

from stages.contracts.embeddings import EmbeddingTable
from stages.contracts.labels import FAKE, REAL
from stages.heads import linear, metrics, threshold
from stages.heads.linear import LinearHead, best_c, fit_logistic, sigmoid, standardiser
from stages.heads.metrics import COUNTS, METRICS, TPR_AT_FPR, classification_metrics
from stages.heads.threshold import choose_threshold, predict
from stages.study.clusters import Clusters
from tests.tiny_backbone import SPEC


def known_head() -> LinearHead:
    return LinearHead(mean=[1.0, 2.0], scale=[2.0, 4.0], coef=[1.0, -1.0], intercept=[0.5], params={"C": 1.0})


# ------------------------------------------------------------------------------------------------ the head
def test_head_decision_score_and_predict_known_answers():
    head = known_head()
    assert all(getattr(head, n).dtype == np.float32 for n in linear.TENSORS) and head.intercept.shape == (1,)
    x = np.array([[3.0, 2.0], [1.0, 10.0], [1.0, 4.0]])  # standardised: (1, 0), (0, 2), (0, 0.5)
    np.testing.assert_allclose(head.decision(x), [1.5, -1.5, 0.0])
    assert head.decision(x).dtype == np.float64
    np.testing.assert_allclose(head.score(x), [1 / (1 + np.exp(-1.5)), 1 / (1 + np.exp(1.5)), 0.5])
    # FAKE where the logit is at least the threshold: logit 0 exactly is FAKE
    assert head.predict(x).tolist() == [FAKE, REAL, FAKE]
    assert head.predict(x, threshold=1.5).tolist() == [FAKE, REAL, REAL]
    with pytest.raises(ValueError, match=r"head expects \(N, 2\)"):
        head.decision(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="disagree"):
        LinearHead(mean=[0.0], scale=[1.0, 1.0], coef=[1.0, 1.0], intercept=[0.0])
    with pytest.raises(ValueError, match="positive"):
        LinearHead(mean=[0.0], scale=[0.0], coef=[1.0], intercept=[0.0])


def test_sigmoid_saturates_and_never_warns():
    with np.errstate(all="raise"):
        assert sigmoid(np.array([40.0, 50.0, -1000.0])).tolist() == [1.0, 1.0, 0.0]


def test_standardiser_gives_constant_features_scale_one():
    x = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 1e-9], [5.0, 5.0, 0.0]])
    mean, scale = standardiser(x)
    assert mean.dtype == scale.dtype == np.float32
    np.testing.assert_allclose(mean, [3.0, 5.0, 1e-9 / 3], rtol=1e-6)
    np.testing.assert_allclose(scale, [np.sqrt(8 / 3), 1.0, 1.0], rtol=1e-6)


def blobs(n_real: int, n_fake: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (n_real, 4)), rng.normal(0, 1, (n_fake, 4)) + [1.0, 0, 0, 0]]) * 10 + 3
    return x, np.array([REAL] * n_real + [FAKE] * n_fake)


def test_fit_logistic_is_sklearns_l2_logistic_regression_on_standardised_rows():
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(30, 60)
    heads = fit_logistic(x, y, [10.0, 0.1, 1.0])
    assert list(heads) == [0.1, 1.0, 10.0] and all(h.params == {"C": c} for c, h in heads.items())
    mean, scale = standardiser(x)
    np.testing.assert_array_equal(heads[1.0].mean, mean)
    reference = LogisticRegression(C=1.0, max_iter=1000).fit((x - mean) / scale, y == FAKE)
    # warm-started along the path, the same optimum up to the solver's tolerance
    np.testing.assert_allclose(heads[1.0].decision(x), reference.decision_function((x - mean) / scale), atol=1e-3)
    # balanced weights move the boundary towards the majority class (fakes here)
    balanced = fit_logistic(x, y, [1.0], balanced=True)[1.0]
    assert balanced.intercept[0] < heads[1.0].intercept[0]
    # without standardisation: the features as given
    raw = fit_logistic(x, y, [1.0], standardise=False)[1.0]
    assert (raw.mean == 0).all() and (raw.scale == 1).all()
    with pytest.raises(ValueError, match="both real"):
        fit_logistic(x, np.full(len(x), FAKE), [1.0])
    with pytest.raises(ValueError, match="positive"):
        fit_logistic(x, y, [0.0, 1.0])


def test_best_c_prefers_the_smaller_c_on_ties():
    heads = {c: known_head() for c in (0.1, 1.0, 10.0)}
    rank = {0.1: 0.5, 1.0: 0.9, 10.0: 0.9}
    for c, head in heads.items():
        head.params = {"C": c}
    assert best_c(heads, lambda h: rank[h.params["C"]]) == 1.0
    assert best_c(heads, lambda h: (1.0, 0.0)) == 0.1


# ------------------------------------------------------------------------------------------- the threshold
def test_the_rule_is_score_at_least_threshold():
    assert predict(np.array([0.0, -1e-300, 1.0, 2.0]), 0.0).tolist() == [FAKE, REAL, FAKE, FAKE]
    assert predict(np.array([2.0]), 2.0).tolist() == [FAKE]


def test_choose_threshold_maximises_balanced_accuracy():
    labels = np.array([REAL, REAL, FAKE, FAKE, FAKE, FAKE, FAKE, FAKE])
    scores = np.array([-2.0, 0.8, 0.5, 1.0, 2.0, 3.0, 5.0, 4.0])
    t = choose_threshold(scores, labels)
    # both reals right and one fake missed (11/12) beats every fake caught (3/4): between 0.8 and 1.0
    assert t == pytest.approx(0.9)
    assert classification_metrics(scores, labels, threshold=t)["fake_accuracy"] == 5 / 6
    # only the midpoint separates: 0 is not among the best
    assert choose_threshold(np.array([2.0, 3.0]), np.array([REAL, FAKE])) == 2.5


def test_choose_threshold_ties_go_to_the_candidate_nearest_zero():
    # any threshold in (-2, 5] separates these: 0 is among the best, so 0
    assert choose_threshold(np.array([-3.0, -2.0, 5.0, 6.0]), np.array([REAL, REAL, FAKE, FAKE])) == 0.0
    # 1.5 and 3.5 both give balanced accuracy 3/4: 1.5 is nearer 0
    assert choose_threshold(np.array([1.0, 2.0, 3.0, 4.0]), np.array([REAL, FAKE, REAL, FAKE])) == 1.5
    # -3 and 3 tie and are equally near 0: the lower
    assert choose_threshold(np.array([-4.0, -2.0, 2.0, 4.0]), np.array([REAL, FAKE, REAL, FAKE])) == -3.0
    with pytest.raises(ValueError, match="both real"):
        choose_threshold(np.array([0.2, 0.3]), np.array([FAKE, FAKE]))
    with pytest.raises(ValueError, match="not finite"):
        choose_threshold(np.array([np.nan, 0.3]), np.array([REAL, FAKE]))


# --------------------------------------------------------------------------------------------- the metrics
def test_metrics_one_key_set_and_none_when_a_class_is_absent():
    scores, labels = np.array([-1.0, 2.0, 1.0, -0.5]), np.array([REAL, REAL, FAKE, FAKE])
    got = classification_metrics(scores, labels, cluster_id=np.array([0, 1, 0, 1]))
    assert list(got) == [m for m in METRICS if m not in TPR_AT_FPR] + list(COUNTS)
    assert got == {"auc": 0.5, "balanced_accuracy": 0.5, "real_accuracy": 0.5, "fake_accuracy": 0.5,
                   "overall_accuracy": 0.5, "full_cluster_accuracy": 0.5, "ap": pytest.approx(7 / 12),
                   "n_real": 2, "real_correct": 1, "n_fake": 2, "fake_correct": 1}
    # without cluster ids (CoDE) full-cluster accuracy is left out, never made up
    assert list(classification_metrics(scores, labels)) == [m for m in METRICS if m != "full_cluster_accuracy"
                                                            and m not in TPR_AT_FPR] + list(COUNTS)
    with_low_fpr = [m for m in METRICS if m != "full_cluster_accuracy"] + list(COUNTS)
    assert list(classification_metrics(scores, labels, low_fpr=True)) == with_low_fpr
    only_reals = classification_metrics(scores[:2], labels[:2], threshold=1.5)
    assert only_reals == {"auc": None, "balanced_accuracy": None, "real_accuracy": 0.5, "fake_accuracy": None,
                          "overall_accuracy": 0.5, "ap": None, "n_real": 2, "real_correct": 1, "n_fake": 0,
                          "fake_correct": 0}
    with pytest.raises(ValueError, match="labels"):
        classification_metrics(scores, np.array([0, 1, 2, 1]))


def test_auc_and_ap_rank_logits_not_saturated_probabilities():
    # in float64 both probabilities are 1.0: ranked by them, the confident fake and the more confidently
    # wrong real tie (AUC 0.5); ranked by the logits they do not
    got = classification_metrics(np.array([40.0, 50.0]), np.array([REAL, FAKE]))
    assert got["auc"] == 1.0 and got["ap"] == 1.0


def test_the_probe_measures_auc_on_logits():
    from stages.study.probe import evaluate

    head = LinearHead(mean=[0.0], scale=[1.0], coef=[1.0], intercept=[0.0])
    # one cluster: a real parent at logit 40, a fake child at logit 50
    clusters = Clusters(np.array([[[40.0], [50.0]]], dtype=np.float32), np.array([7]), np.array(["test"]), {})
    got = evaluate(head, clusters)
    assert got["auc"] == 1.0 and got["ap"] == 1.0 and got["overall_accuracy"] == 0.5


def test_the_shipped_detector_measures_auc_on_logits():
    from stages.shipped.artifact import Detector
    from stages.shipped.train import PARENTS, evaluate

    head = LinearHead(mean=[0.0], scale=[1.0], coef=[1.0], intercept=[0.0])
    detector = Detector(backbone={**SPEC, "dim": 1}, head=head, threshold=45.0)

    def table(prefix: str, label: int, value: float) -> EmbeddingTable:
        return EmbeddingTable(np.full((2, 1), value), [f"{prefix}0", f"{prefix}1"], [0, 1], [label] * 2, [0, 0],
                              ["val", "test"])

    got = evaluate(detector, {PARENTS: table("p", REAL, 40.0), "g": table("c", FAKE, 50.0)})
    for split in ("val", "test"):
        assert got[split]["all"]["auc"] == 1.0 and got[split]["all"]["overall_accuracy"] == 1.0


# ------------------------------------------------------------------------------------- one tool for all
def test_every_stage_that_classifies_uses_the_toolkit(monkeypatch):
    import stages.code.heads as code_heads
    import stages.shipped.artifact as artifact
    import stages.shipped.head_fit as head_fit
    import stages.shipped.train as shipped_train
    import stages.study.probe as probe

    # the probe (and disentangle's S probe, which calls it), the detector and CoDE's logistic head
    assert probe.fit_logistic_path is linear.fit_logistic_path
    assert head_fit.fit_logistic is code_heads.fit_logistic is linear.fit_logistic
    assert artifact.LinearHead is LinearHead
    assert probe.classification_metrics is shipped_train.classification_metrics is metrics.classification_metrics
    assert artifact.predict is threshold.predict
    # no second copy left behind
    assert not any(hasattr(code_heads, name) for name in ("binary_metrics", "choose_threshold"))
    assert not any(hasattr(module, name) for module in (probe, head_fit, artifact)
                   for name in ("LinearProbe", "choose_threshold", "detection_metrics", "standardiser"))
    # the detector's threshold is the toolkit's rule (code_eval's: tests/test_code_eval.py)
    calls = []
    monkeypatch.setattr(threshold, "choose_threshold", lambda s, y: calls.append(len(y)) or 0.25)
    x, y = blobs(20, 40)
    assert head_fit.fit_detector_head(x, y, x[::2], y[::2]).threshold == 0.25 and calls == [30]


def test_roc_thresholds_stay_on_the_scores_own_scale():
    # a 1-NN or SVM score is not a logit: 60 and 88 are two thresholds, not both 1.0
    from stages.heads.metrics import roc_points

    rows = roc_points(np.array([10.0, 60.0, 88.0]), np.array([REAL, FAKE, FAKE]), scale="distance")
    assert [r["threshold"] for r in rows] == [None, 88.0, 60.0, 10.0]
    assert {r["scale"] for r in rows} == {"distance"} and rows[-1] == {"fpr": 1.0, "tpr": 1.0, "threshold": 10.0,
                                                                       "scale": "distance"}
    assert 88.0 in {r["threshold"] for r in roc_points(np.array([10.0, 60.0, 88.0]), np.array([REAL, FAKE, REAL]))}
