"""Min / max intra-cluster distance accuracy (paper §4.2, Table 1) on clusters stacked as (K, M, D).

Chance is 1/M: the parent is one of the M = N+1 elements of its cluster. None of these functions modifies
its inputs."""

from __future__ import annotations

import numpy as np


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

