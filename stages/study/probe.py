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

Convergence: every fit records its L-BFGS iterations and whether it stopped before `max_iter` (the C-search plot
data). Under `raw` the stopping tolerance is scaled to the problem, `RAW_RELATIVE_TOL` times the largest gradient
component at the zero start (stages.heads.linear.scaled_tolerance): sklearn's absolute default (1e-4) is met at
the start by raw features of small scale, so L-BFGS stopped after 1-2 iterations at small C and the sweep chose
among unconverged heads. The raw features are also centred by the training rows' mean for the fit (scale
untouched, so the penalty and the optimal decision function are CLIP's exactly: the intercept is not penalised):
at small C the weights are tiny, and an intercept solved only to an absolute tolerance, as on uncentred
features, decides every prediction. `standardised` keeps sklearn's default, which standardised features put on
the scale it was made for.

Refit (`raw` only, as CLIP does): once C is chosen, the probe is fitted again at that C on the training rows
plus the validation rows (each validation cluster's parent and one seeded child, as for train), and that head is
the one tested. The validation figures are those of the train-only head that chose C (the refit has seen val).

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
from typing import NamedTuple

import numpy as np

from stages.contracts.errors import InputError
from stages.contracts.labels import FAKE, REAL
from stages.heads.linear import LinearHead, best_c, fit_logistic_path
from stages.heads.metrics import childless_clusters, classification_metrics, overall_accuracy
from stages.study.clusters import PARENT, Clusters
from stages.uncertainty.bootstrap import Bootstrap


class Protocol(StrEnum):
    """How the probe sees the features: standardised by the training rows, or raw (the paper's, after CLIP)."""

    standardised = "standardised"
    raw = "raw"


RAW_RELATIVE_TOL = 1e-6  # L-BFGS's gradient tolerance under `raw`, relative to the gradient at the start


class CPoint(NamedTuple):
    """One C of the search: its validation overall accuracy and its fit's L-BFGS iterations and convergence."""

    c: float
    val_overall_accuracy: float
    iterations: int
    converged: bool


@dataclass
class ProbeFit:
    probe: LinearHead  # the head that is tested: the chosen C's, refit on train + val under `raw`
    selected: LinearHead  # the chosen C's head fitted on train alone: its val accuracy chose C
    c: float
    grid: list[CPoint]  # in grid order
    train_rows: int
    refit_rows: int = 0  # rows of the refit on train + val (0: no refit)
    refit_iterations: int | None = None
    refit_converged: bool | None = None

    def head_for(self, split: str) -> LinearHead:
        """The head whose figures stand for `split`: val is scored by the head that chose C (it never saw val)."""
        return self.selected if split == "val" else self.probe

    @property
    def unconverged(self) -> int:
        """Fits (grid and refit) that stopped at max_iter."""
        return sum(not point.converged for point in self.grid) + (self.refit_converged is False)


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
    raw = protocol == Protocol.raw
    options = {"max_iter": max_iter, "standardise": not raw, "center": raw,
               "relative_tol": RAW_RELATIVE_TOL if raw else None}
    fits = fit_logistic_path(x, y, c_grid, **options)
    heads = {c: fit.head for c, fit in fits.items()}
    accuracy = {c: overall_accuracy(head.predict(val_x), val_y) for c, head in heads.items()}
    c = best_c(heads, lambda head: accuracy[head.params["C"]])
    grid = [CPoint(float(g), accuracy[float(g)], fits[float(g)].iterations, fits[float(g)].converged) for g in c_grid]
    if not raw:
        return ProbeFit(heads[c], heads[c], c, grid, len(y))
    # CLIP's protocol: refit at the chosen C on train + val (val's balanced rows: the same draw as train's)
    more_x, more_y = balanced_rows(val, seed)
    refit = fit_logistic_path(np.concatenate([x, more_x]), np.concatenate([y, more_y]), [c], **options)[c]
    return ProbeFit(refit.head, heads[c], c, grid, len(y), len(y) + len(more_y), refit.iterations, refit.converged)


def c_grid(c_min: float, c_max: float, steps: int) -> list[float]:
    """`steps` values of C spaced evenly in log scale from `c_min` to `c_max` (inclusive)."""
    if not (0 < c_min <= c_max) or steps < 1 or (steps == 1 and c_min != c_max):
        raise InputError("probe.c_min / c_max / c_steps", f"got {c_min}, {c_max}, {steps}; expected "
                         "0 < c_min <= c_max and c_steps >= 1 (1 only when c_min == c_max)")
    return [float(c) for c in np.geomspace(c_min, c_max, steps)]


def evaluate(probe: LinearHead, clusters: Clusters, bootstrap: Bootstrap | None = None
             ) -> dict[str, float | int | None]:
    """Classification metrics (stages.heads.metrics) of a probe on every element of the given clusters, as
    they are: a cluster is fully right when its parent and every child it has are right. Full-cluster accuracy
    is over the clusters with at least one child; `childless_clusters` counts the others (left out of it). With
    `bootstrap`, the headline figures' intervals resample clusters (a parent and its children are not
    independent)."""
    x, y, cluster = all_rows(clusters)
    return classification_metrics(probe.decision(x), y, cluster_id=cluster, units=cluster, bootstrap=bootstrap) | {
        "childless_clusters": childless_clusters(y, cluster)}

