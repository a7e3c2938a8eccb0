"""Min / max intra-cluster distance accuracy (paper §4.2, Table 1) on clusters stacked as (K, M, D).

A cluster of n children is ranked among its n+1 elements, so its chance level is 1/(n+1) (1/M for a generated
set, where every cluster holds N children). Clusters of partial sets (stages.study.clusters) are ranked at
their own size; a cluster with fewer than 2 children cannot be ranked (with one child the parent and the child
have the same mean distance, a tie; with none there is nothing to rank) and is left out and counted. The
accuracy is the fraction of ranked clusters with a hit; its chance level the mean of their 1/(n+1).
None of these functions modifies its inputs."""

from __future__ import annotations

import numpy as np

from stages.uncertainty.bootstrap import Bootstrap, proportion_interval, with_intervals

MIN_CHILDREN = 2  # fewer children: a cluster is not ranked


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


def _hits(clusters: np.ndarray, parent: int, chunk: int) -> tuple[int, int]:
    """Min and max hits of (k, M, D) clusters that are all full (every position an element)."""
    hits_min = hits_max = 0
    for start in range(0, len(clusters), chunk):
        mean = mean_cosine_distances(clusters[start:start + chunk])  # (k, M)
        own = mean[:, parent]
        others = np.delete(mean, parent, axis=1)
        hits_min += int((own < others.min(axis=1)).sum())
        hits_max += int((own > others.max(axis=1)).sum())
    return hits_min, hits_max


def distance_accuracy(clusters: np.ndarray, children: np.ndarray | None = None, *, parent: int = 0,
                      chunk: int = 65536) -> dict[str, float | int | None]:
    """Min and max intra-cluster distance accuracy of (K, M, D) clusters with the parent at `parent` (0, or
    any position of full clusters) and, when `children` (K,) is given, cluster k's children at positions
    1..children[k] (stages.study.clusters' padding); None: every cluster holds M-1 children.

    A hit for "min" when the parent's mean distance to the others is strictly smaller than every child's,
    for "max" when strictly larger (a tie is no hit, so an all-equal cluster scores neither). Returns the two
    accuracies over the ranked clusters, `chance` (their mean 1/(n+1)), `clusters` (how many were ranked) and
    `unranked` (how many had fewer than 2 children); the accuracies and chance are None when none was ranked."""
    k, m = clusters.shape[:2]
    counts = np.full(k, m - 1, dtype=np.int64) if children is None else np.asarray(children, dtype=np.int64)
    if len(counts) != k or (counts > m - 1).any() or (counts < 0).any():
        raise ValueError(f"children per cluster {counts.tolist()[:5]}... do not fit clusters of shape {clusters.shape}")
    if parent != 0 and (counts != m - 1).any():
        raise ValueError("a parent at another position than 0 needs full clusters")
    ranked = counts >= MIN_CHILDREN
    hits_min = hits_max = 0
    for n in np.unique(counts[ranked]):  # one group per cluster size; a generated set is one group, all of it
        group = counts == n
        part = clusters if group.all() and n == m - 1 else clusters[group, :n + 1]
        found = _hits(part, parent, chunk)
        hits_min, hits_max = hits_min + found[0], hits_max + found[1]
    total = int(ranked.sum())
    if total == 0:
        return {"min_distance_accuracy": None, "max_distance_accuracy": None, "chance": None, "clusters": 0,
                "unranked": k}
    return {"min_distance_accuracy": hits_min / total, "max_distance_accuracy": hits_max / total,
            "chance": chance_level(counts), "clusters": total, "unranked": int(k - total)}


def with_distance_intervals(figures: dict, bootstrap: Bootstrap | None) -> dict:
    """`distance_accuracy`'s figures (or the min / max keys of them, with `clusters`) with the bootstrap interval
    of each accuracy beside it: the ranked clusters resampled, each one hit or none (docs/intervals.md)."""
    if bootstrap is None:
        return figures
    total = int(figures.get("clusters") or 0)
    intervals = {key: None if figures.get(key) is None else
                 proportion_interval(round(figures[key] * total), total, bootstrap)
                 for key in ("min_distance_accuracy", "max_distance_accuracy") if key in figures}
    return with_intervals(figures, intervals)


def chance_level(children: np.ndarray) -> float | None:
    """The mean chance level 1/(n+1) of the clusters that can be ranked (n >= 2 children); None if none can."""
    counts = np.asarray(children, dtype=np.int64)
    sizes, per_size = np.unique(counts[counts >= MIN_CHILDREN], return_counts=True)
    if len(sizes) == 0:
        return None
    if len(sizes) == 1:  # every ranked cluster the same size: exactly 1/(n+1)
        return 1.0 / (int(sizes[0]) + 1)
    return float(np.sum(per_size / (sizes + 1)) / per_size.sum())
