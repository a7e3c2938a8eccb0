"""The study's metrics (paper §4.2, DESIGN.md "Metric definitions"), as plain functions of arrays.

Accuracies are fractions in [0, 1] (the report prints percentages). Labels follow stages.contracts.labels.
None of these functions modifies its inputs.
"""

from __future__ import annotations

import numpy as np

from stages.contracts.labels import FAKE, REAL


def overall_accuracy(predicted: np.ndarray, label: np.ndarray) -> float:
    """Fraction of elements (parents and children alike) whose predicted label is right."""
    predicted, label = np.asarray(predicted), np.asarray(label)
    if predicted.shape != label.shape or predicted.size == 0:
        raise ValueError(f"predictions {predicted.shape} and labels {label.shape} must match and be non-empty")
    return float((predicted == label).mean())


def full_cluster_accuracy(predicted: np.ndarray, label: np.ndarray, cluster_id: np.ndarray) -> float:
    """Fraction of clusters whose every element (the parent and its N children) is classified right."""
    predicted, label, cluster_id = (np.asarray(a).ravel() for a in (predicted, label, cluster_id))
    if not (len(predicted) == len(label) == len(cluster_id)) or len(label) == 0:
        raise ValueError("predictions, labels and cluster ids must have the same non-zero length")
    clusters, index = np.unique(cluster_id, return_inverse=True)
    wrong = np.bincount(index, weights=predicted != label, minlength=len(clusters))
    return float((wrong == 0).mean())


def class_accuracy(predicted: np.ndarray, label: np.ndarray, cls: int) -> float | None:
    """Accuracy on the elements of one class; None when the class is absent (not applicable, not zero)."""
    predicted, label = np.asarray(predicted), np.asarray(label)
    mask = label == cls
    return float((predicted[mask] == cls).mean()) if mask.any() else None


def classification_metrics(score: np.ndarray, label: np.ndarray, cluster_id: np.ndarray, *,
                           threshold: float = 0.5) -> dict[str, float | None]:
    """Overall, full-cluster, real and fake accuracy at `threshold`, plus AUC and AP of the scores.

    `score` is the probability of FAKE. AUC and AP are None when one class is missing."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    score, label = np.asarray(score, dtype=np.float64).ravel(), np.asarray(label).ravel()
    predicted = np.where(score >= threshold, FAKE, REAL)
    both = len(np.unique(label)) == 2
    return {
        "overall_accuracy": overall_accuracy(predicted, label),
        "full_cluster_accuracy": full_cluster_accuracy(predicted, label, cluster_id),
        "real_accuracy": class_accuracy(predicted, label, REAL),
        "fake_accuracy": class_accuracy(predicted, label, FAKE),
        "auc": float(roc_auc_score(label == FAKE, score)) if both else None,
        "ap": float(average_precision_score(label == FAKE, score)) if both else None,
    }


def roc_points(score: np.ndarray, label: np.ndarray) -> list[dict[str, float]]:
    """The ROC curve (FAKE is the positive class) as plot rows ``{fpr, tpr, threshold}``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(np.asarray(label).ravel() == FAKE, np.asarray(score).ravel())
    # the first threshold is +inf by sklearn's convention; JSON has no infinity
    thresholds = np.minimum(thresholds, 1.0)
    return [{"fpr": float(f), "tpr": float(t), "threshold": float(h)} for f, t, h in zip(fpr, tpr, thresholds,
                                                                                           strict=True)]


