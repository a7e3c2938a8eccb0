"""The study's metrics (paper §4.2, DESIGN.md "Metric definitions"), as plain functions of arrays.

Accuracies are fractions in [0, 1] (the report prints percentages). Labels follow stages.common.labels.
None of these functions modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stages.common.labels import FAKE, REAL


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


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def mean_cosine_distances(clusters: np.ndarray) -> np.ndarray:
    """(K, M, D) -> (K, M): each element's mean cosine distance to the other M-1 elements of its cluster."""
    x = _unit(np.asarray(clusters, dtype=np.float32))
    similarity = np.einsum("kmd,knd->kmn", x, x, optimize=True)  # (K, M, M)
    m = x.shape[1]
    # the diagonal is the element itself (distance 0 up to rounding): leave it out exactly
    off_diagonal = similarity.sum(axis=2) - np.einsum("kmm->km", similarity)
    return 1.0 - off_diagonal / (m - 1)


def distance_accuracy(clusters: np.ndarray, *, parent: int = 0, chunk: int = 65536) -> dict[str, float]:
    """Min and max intra-cluster distance accuracy of (K, M, D) clusters with the parent at `parent`.

    A hit for "min" when the parent's mean distance to the others is strictly smaller than every child's,
    for "max" when strictly larger (a tie is no hit, so an all-equal cluster scores neither). Chance: 1/M."""
    k = len(clusters)
    if k == 0 or clusters.shape[1] < 3:
        raise ValueError(f"clusters have shape {clusters.shape}; expected (K > 0, M >= 3, D)")
    hits_min = hits_max = 0
    for start in range(0, k, chunk):
        mean = mean_cosine_distances(clusters[start:start + chunk])  # (k, M)
        own = mean[:, parent]
        others = np.delete(mean, parent, axis=1)
        hits_min += int((own < others.min(axis=1)).sum())
        hits_max += int((own > others.max(axis=1)).sum())
    return {"min_distance_accuracy": hits_min / k, "max_distance_accuracy": hits_max / k}


def recall_at_k(queries: np.ndarray, keys: np.ndarray, query_target: np.ndarray, query_group: np.ndarray,
                key_group: np.ndarray, *, ks: Sequence[int] = (1, 3, 5), chunk: int = 2048
                ) -> dict[str, dict[str, float]]:
    """Exact-pair and intra-cluster recall@k of cosine retrieval, computed `chunk` queries at a time.

    queries (Q, D) retrieve among keys (C, D). Exact pair: a hit at k when key `query_target[q]` ranks in the
    top k. Intra-cluster: a hit when any key whose group equals `query_group[q]` ranks in the top k. The rank
    of a key is the number of keys strictly more similar, so memory is O(chunk * C), never O(Q * C)."""
    queries, keys = _unit(np.asarray(queries, dtype=np.float32)), _unit(np.asarray(keys, dtype=np.float32))
    query_target, query_group, key_group = map(np.asarray, (query_target, query_group, key_group))
    if len(queries) == 0 or len(keys) == 0:
        raise ValueError("retrieval needs at least one query and one key")
    if not np.isin(query_group, key_group).all():
        raise ValueError("some queries have no key of their group")
    exact_rank = np.empty(len(queries), dtype=np.int64)
    group_rank = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        stop = min(start + chunk, len(queries))
        similarity = queries[start:stop] @ keys.T  # (c, C)
        rows = np.arange(stop - start)
        target = similarity[rows, query_target[start:stop]]  # (c,)
        exact_rank[start:stop] = (similarity > target[:, None]).sum(axis=1)
        in_group = key_group[None, :] == query_group[start:stop, None]  # (c, C)
        best = np.where(in_group, similarity, -np.inf).max(axis=1)  # (c,)
        group_rank[start:stop] = (similarity > best[:, None]).sum(axis=1)
    return {
        "exact_pair": {f"r{k}": float((exact_rank < k).mean()) for k in ks},
        "intra_cluster": {f"r{k}": float((group_rank < k).mean()) for k in ks},
    }
