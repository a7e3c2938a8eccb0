"""The linear probe of the paper (§4.1, after CLIP): L2 logistic regression fitted with L-BFGS on frozen
features, trained on one randomly drawn child per cluster so real and fake are balanced, its inverse
regularisation strength C chosen on the validation split (never on test).

Protocol details: the head and its fit are the toolkit's (stages.heads.linear). Two protocols (`Protocol`):
`standardised` (the default) standardises the features with the training rows' mean and standard deviation
(L-BFGS then converges in tens of iterations at COCO scale); `raw` is the paper's, CLIP's linear probe (the
paper's [43], its appendix A.3): the raw features, with C swept over 1e-6 .. 1e6 (params: c_min 1e-6, c_max 1e6,
c_steps 96, as CLIP's 96 log-spaced steps). In both the grid is fitted from the smallest C up, each fit
warm-started from the previous one. C is the grid value
with the best overall accuracy on every validation element (ties go to the smaller C, the stronger
regularisation); the decision threshold is logit 0 (probability 0.5).

Partial clusters (an imported set, stages.study.clusters) are counted as they are: training draws one child of
each cluster that has one (a cluster without children gives no training row), evaluation scores every parent
and every child there is, and a cluster is fully right when its parent and all of its existing children are;
full-cluster accuracy is over the clusters with at least one child (a parent alone has no cluster to get right),
and the clusters left out are counted (`childless_clusters`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from stages.contracts.errors import InputError
from stages.contracts.labels import FAKE, REAL
from stages.heads.linear import LinearHead, best_c, fit_logistic
from stages.heads.metrics import childless_clusters, classification_metrics, overall_accuracy
from stages.study.clusters import PARENT, Clusters


class Protocol(StrEnum):
    """How the probe sees the features: standardised by the training rows, or raw (the paper's, after CLIP)."""

    standardised = "standardised"
    raw = "raw"


@dataclass
class ProbeFit:
    probe: LinearHead  # the head of the chosen C
    c: float
    grid: list[tuple[float, float]]  # (C, validation overall accuracy), in grid order
    train_rows: int


def balanced_rows(clusters: Clusters, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each cluster's parent and one of its children drawn with `seed`: (2K, D) features, (2K,) labels.

    A cluster without children (a partial set) gives no row, so real and fake stay balanced."""
    usable = clusters.children > 0
    k = int(usable.sum())
    # one child position each, in 1..n (the same draw as a single upper bound when every cluster holds M-1)
    child = np.random.default_rng(seed).integers(PARENT + 1, clusters.children[usable] + 1, size=k)  # (K,)
    rows = np.flatnonzero(usable)
    x = np.concatenate([clusters.embeddings[rows, PARENT], clusters.embeddings[rows, child]])
    y = np.concatenate([np.full(k, REAL), np.full(k, FAKE)]).astype(np.int8)
    return x, y


def all_rows(clusters: Clusters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every element of the clusters (a partial cluster's parent and the children it has): (E, D) features,
    (E,) labels and cluster ids."""
    return clusters.elements()


def fit_probe(train: Clusters, val: Clusters, c_grid: Sequence[float], *, seed: int = 0,
              max_iter: int = 1000, protocol: Protocol = Protocol.standardised) -> ProbeFit:
    """Fit one probe per C on balanced training rows and keep the one best on all validation elements."""
    if not c_grid or any(c <= 0 for c in c_grid):
        raise ValueError(f"the C grid {list(c_grid)} must be non-empty and positive")
    if len(train.cluster_id) == 0 or len(val.cluster_id) == 0:
        raise ValueError(f"the probe needs train and val clusters; got {len(train.cluster_id)} train, "
                         f"{len(val.cluster_id)} val")
    x, y = balanced_rows(train, seed)
    if len(y) == 0:
        raise ValueError("no training cluster has a child; the probe needs at least one")
    val_x, val_y, _ = all_rows(val)
    heads = fit_logistic(x, y, c_grid, max_iter=max_iter, standardise=protocol == Protocol.standardised)
    accuracy = {c: overall_accuracy(head.predict(val_x), val_y) for c, head in heads.items()}
    c = best_c(heads, lambda head: accuracy[head.params["C"]])
    return ProbeFit(heads[c], c, [(float(g), accuracy[float(g)]) for g in c_grid], len(y))


def c_grid(c_min: float, c_max: float, steps: int) -> list[float]:
    """`steps` values of C spaced evenly in log scale from `c_min` to `c_max` (inclusive)."""
    if not (0 < c_min <= c_max) or steps < 1 or (steps == 1 and c_min != c_max):
        raise InputError("probe.c_min / c_max / c_steps", f"got {c_min}, {c_max}, {steps}; expected "
                         "0 < c_min <= c_max and c_steps >= 1 (1 only when c_min == c_max)")
    return [float(c) for c in np.geomspace(c_min, c_max, steps)]


def evaluate(probe: LinearHead, clusters: Clusters) -> dict[str, float | int | None]:
    """Classification metrics (stages.heads.metrics) of a probe on every element of the given clusters, as
    they are: a cluster is fully right when its parent and every child it has are right. Full-cluster accuracy
    is over the clusters with at least one child; `childless_clusters` counts the others (left out of it)."""
    x, y, cluster = all_rows(clusters)
    return classification_metrics(probe.decision(x), y, cluster_id=cluster) | {
        "childless_clusters": childless_clusters(y, cluster)}

