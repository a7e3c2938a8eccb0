"""The one metrics function of every stage that classifies (the study's probes, the shipped detector, CoDE's
heads), after paper §4.2 and DESIGN.md "Metric definitions", as plain functions of arrays.

Accuracies are fractions in [0, 1] (the report prints percentages). Labels follow stages.contracts.labels.
None of these functions modifies its inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stages.contracts.labels import FAKE, REAL
from stages.uncertainty.bootstrap import bounds

if TYPE_CHECKING:
    from stages.uncertainty.bootstrap import Bootstrap


def overall_accuracy(predicted: np.ndarray, label: np.ndarray) -> float:
    """Fraction of elements (parents and children alike) whose predicted label is right."""
    predicted, label = np.asarray(predicted), np.asarray(label)
    if predicted.shape != label.shape or predicted.size == 0:
        raise ValueError(f"predictions {predicted.shape} and labels {label.shape} must match and be non-empty")
    return float((predicted == label).mean())


def full_cluster_accuracy(predicted: np.ndarray, label: np.ndarray, cluster_id: np.ndarray) -> float | None:
    """Fraction of clusters whose every element (the parent and its N children) is classified right, over the
    clusters with at least one child (as the paper's Table 1 counts them): a parent alone (a partial set) is not
    a cluster to get fully right. None when no cluster has a child; `childless_clusters` counts those left out."""
    predicted, label, cluster_id = (np.asarray(a).ravel() for a in (predicted, label, cluster_id))
    if not (len(predicted) == len(label) == len(cluster_id)) or len(label) == 0:
        raise ValueError("predictions, labels and cluster ids must have the same non-zero length")
    clusters, index = np.unique(cluster_id, return_inverse=True)
    wrong = np.bincount(index, weights=predicted != label, minlength=len(clusters))
    has_child = np.bincount(index, weights=label == FAKE, minlength=len(clusters)) > 0
    return float((wrong[has_child] == 0).mean()) if has_child.any() else None


def childless_clusters(label: np.ndarray, cluster_id: np.ndarray) -> int:
    """How many clusters hold no child (no FAKE element): those `full_cluster_accuracy` leaves out."""
    label, cluster_id = np.asarray(label).ravel(), np.asarray(cluster_id).ravel()
    return len(np.unique(cluster_id)) - len(np.unique(cluster_id[label == FAKE]))


def class_accuracy(predicted: np.ndarray, label: np.ndarray, cls: int) -> float | None:
    """Accuracy on the elements of one class; None when the class is absent (not applicable, not zero)."""
    predicted, label = np.asarray(predicted), np.asarray(label)
    mask = label == cls
    return float((predicted[mask] == cls).mean()) if mask.any() else None


def balanced_accuracy(predicted: np.ndarray, label: np.ndarray) -> float | None:
    """The mean of real and fake accuracy: what overall accuracy would be with as many reals as fakes, so that a
    detector that calls everything real scores 0.5 however many reals a set holds; None when a class is absent."""
    real, fake = class_accuracy(predicted, label, REAL), class_accuracy(predicted, label, FAKE)
    return None if real is None or fake is None else (real + fake) / 2


# the low false-positive-rate operating points (key -> the FPR): `tpr_at_fpr`, reported on external benchmarks
TPR_AT_FPR = {"tpr_at_fpr_1pct": 0.01, "tpr_at_fpr_5pct": 0.05}
# reals a TPR at FPR needs (1 / FPR): with fewer, floor(FPR x reals) is 0, no real may pass the threshold and the
# figure would be the TPR at 0 % FPR decided by the single highest real; it is then None (the report says why)
MIN_REALS = {"tpr_at_fpr_1pct": 100, "tpr_at_fpr_5pct": 20}
# the headline (a table leads with these), then the detail; every key `classification_metrics` can return
HEADLINE = ("auc", "balanced_accuracy", *TPR_AT_FPR)
METRICS = (*HEADLINE, "real_accuracy", "fake_accuracy", "overall_accuracy", "full_cluster_accuracy", "ap")
# the counts behind the class accuracies: correct reals k of n_real, caught fakes k of n_fake
COUNTS = ("n_real", "real_correct", "n_fake", "fake_correct")
# the figures that carry a bootstrap interval (with `bootstrap`): <key>_low and <key>_high beside <key> (`bounds`)
INTERVALS = (*HEADLINE, "overall_accuracy", "full_cluster_accuracy")


def classification_metrics(score: np.ndarray, label: np.ndarray, *, threshold: float = 0.0,
                           cluster_id: np.ndarray | None = None, low_fpr: bool = False,
                           bootstrap: Bootstrap | None = None,
                           units: np.ndarray | None = None) -> dict[str, float | int | None]:
    """The one key set (`METRICS`, then `COUNTS`): the headline first, AUC (FAKE positive), balanced accuracy
    (mean of real and fake accuracy) and with `low_fpr` the TPR at each false positive rate of `TPR_AT_FPR`
    (`tpr_at_fpr`; None with fewer reals than `MIN_REALS`; left out without `low_fpr`); then the detail: real,
    fake and overall accuracy at `threshold`, full-cluster accuracy when `cluster_id` is given (left out
    otherwise), the AP; then the counts (reals, reals called real, fakes, fakes caught).

    With `bootstrap`, each figure of `INTERVALS` that is not None gets its 95 % interval as `<key>_low` and
    `<key>_high` right after it (`bounds`), from stages.uncertainty.bootstrap resampling `units` (each element's
    independent unit: the cluster id in the study, None for images that are independent).

    `score` is a decision value, higher = more likely FAKE (a linear head's logit, never its probability:
    probabilities saturate to 1.0 and tie, stages.heads.linear); a row is FAKE where score >= threshold
    (stages.heads.threshold). A class accuracy, the balanced accuracy, the AUC and the AP are None when a class
    is absent."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from stages.heads.threshold import predict

    score, label = np.asarray(score, dtype=np.float64).ravel(), np.asarray(label).ravel()
    if score.shape != label.shape:
        raise ValueError(f"scores {score.shape} and labels {label.shape} must match")
    if set(np.unique(label).tolist()) - {REAL, FAKE}:
        raise ValueError(f"labels {sorted(set(np.unique(label).tolist()))}; expected real ({REAL}) and fake ({FAKE})")
    if not np.isfinite(score).all():
        raise ValueError(f"{int((~np.isfinite(score)).sum())} scores are not finite")
    predicted = predict(score, threshold)
    n_real, n_fake = int((label == REAL).sum()), int((label == FAKE).sum())
    both = n_real > 0 and n_fake > 0
    metrics: dict[str, float | int | None] = {
        "auc": float(roc_auc_score(label == FAKE, score)) if both else None,
        "balanced_accuracy": balanced_accuracy(predicted, label),
    }
    if low_fpr:
        metrics.update({key: tpr_at_fpr(score, label, fpr) if both and n_real >= MIN_REALS[key] else None
                        for key, fpr in TPR_AT_FPR.items()})
    metrics.update({
        "real_accuracy": class_accuracy(predicted, label, REAL),
        "fake_accuracy": class_accuracy(predicted, label, FAKE),
        "overall_accuracy": overall_accuracy(predicted, label),
    })
    if cluster_id is not None:
        metrics["full_cluster_accuracy"] = full_cluster_accuracy(predicted, label, cluster_id)
    metrics["ap"] = float(average_precision_score(label == FAKE, score)) if both else None
    metrics.update({"n_real": n_real, "real_correct": int(((predicted == REAL) & (label == REAL)).sum()),
                    "n_fake": n_fake, "fake_correct": int(((predicted == FAKE) & (label == FAKE)).sum())})
    if bootstrap is None:
        return metrics
    from stages.uncertainty.bootstrap import classification_intervals

    intervals = classification_intervals(
        score, label, predicted, units=units, bootstrap=bootstrap, cluster_id=cluster_id,
        figures={k: metrics[k] for k in INTERVALS if k in metrics},
        low_fpr={k: f for k, f in TPR_AT_FPR.items() if k in metrics})
    with_bounds: dict[str, float | int | None] = {}
    for key, value in metrics.items():
        with_bounds[key] = value
        if key in INTERVALS:  # a figure that is None (or none of whose resamples is defined): null bounds
            low, high = bounds(key)
            with_bounds[low], with_bounds[high] = intervals.get(key) or (None, None)
    return with_bounds


def allowed_false_positives(n_real: int, fpr: float) -> int:
    """How many of `n_real` reals may score at or above the threshold of `tpr_at_fpr`: floor(fpr * n_real)."""
    return int(np.floor(fpr * n_real + 1e-9))  # 1e-9: in floats 0.29 * 100 is 28.999999999999996, not 29


def tpr_at_fpr(score: np.ndarray, label: np.ndarray, fpr: float) -> float:
    """The share of fakes detected at the strictest threshold that still keeps the reals' false positive rate
    at or under `fpr` (a fraction: 0.01 for 1 %).

    The threshold is taken on the reals' scores, so that at most k = floor(fpr * n_real) reals score at or above
    it (FAKE where score >= threshold, stages.heads.threshold): with the reals' scores sorted from the highest,
    r(1) >= r(2) >= ..., it lies just above r(k + 1), and the TPR is the share of fakes scoring strictly above
    r(k + 1). Reals tied with r(k + 1) all stay below it, so the FPR reached may be lower than `fpr`, never
    higher; no value is interpolated between ROC points.

    Few reals: with fewer than 1 / fpr reals (100 for 1 %, 20 for 5 %) k is 0, no real may score at or above
    the threshold, and the figure is the TPR at 0 % FPR: stricter than its name, and decided by the single
    highest real; `classification_metrics` reports None there instead (`MIN_REALS`). With every real allowed
    (k = n_real, only for fpr = 1) every fake counts. Raises ValueError when either class is absent or a score
    is not finite."""
    score, label = np.asarray(score, dtype=np.float64).ravel(), np.asarray(label).ravel()
    if score.shape != label.shape:
        raise ValueError(f"scores {score.shape} and labels {label.shape} must match")
    if not 0 <= fpr <= 1:
        raise ValueError(f"false positive rate {fpr} is not a fraction in [0, 1]")
    if not np.isfinite(score).all():
        raise ValueError(f"{int((~np.isfinite(score)).sum())} scores are not finite")
    reals, fakes = np.sort(score[label == REAL])[::-1], score[label == FAKE]
    if len(reals) == 0 or len(fakes) == 0:
        raise ValueError("the TPR at a false positive rate needs both real and fake scores")
    k = allowed_false_positives(len(reals), fpr)
    if k >= len(reals):
        return 1.0
    return float((fakes > reals[k]).mean())


def roc_points(score: np.ndarray, label: np.ndarray, *, scale: str = "logit") -> list[dict[str, float | str | None]]:
    """The ROC curve of decision values (FAKE is the positive class) as plot rows ``{fpr, tpr, threshold, scale}``:
    each threshold on the scores' own scale, named by `scale` (a logit, a distance difference...: never squashed
    through a sigmoid, which is meaningless for a score that is not a logit and prints 60 and 88 both as 1.0);
    null for the curve's first point, where no score reaches the threshold (sklearn's +inf)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(np.asarray(label).ravel() == FAKE, np.asarray(score, dtype=np.float64).ravel())
    return [{"fpr": float(f), "tpr": float(t), "threshold": float(h) if np.isfinite(h) else None, "scale": scale}
            for f, t, h in zip(fpr, tpr, thresholds, strict=True)]
