"""The linear probe of the paper (§4.1, after CLIP): L2 logistic regression fitted with L-BFGS on frozen
features, trained on one randomly drawn child per cluster so real and fake are balanced, its inverse
regularisation strength C chosen on the validation split (never on test).

Protocol details: features are standardised with the training rows' mean and standard deviation (L-BFGS
then converges in tens of iterations at COCO scale); C is the grid value with the best overall accuracy on
every validation element (ties go to the smaller C, the stronger regularisation); the decision threshold is
probability 0.5. The fitted probe is plain arrays, so it can be stored without pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stages.contracts.errors import InputError
from stages.contracts.labels import FAKE, REAL
from stages.heads.metrics import overall_accuracy
from stages.study.clusters import PARENT, Clusters


@dataclass
class LinearProbe:
    """score(x) = sigmoid(((x - mean) / scale) @ coef + intercept): the probability that x is FAKE."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    coef: np.ndarray  # (D,)
    intercept: float
    c: float

    def decision(self, x: np.ndarray) -> np.ndarray:
        """(n, D) -> (n,) logits."""
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.scale) @ self.coef + self.intercept

    def score(self, x: np.ndarray) -> np.ndarray:
        """(n, D) -> (n,) probabilities of FAKE."""
        return 1.0 / (1.0 + np.exp(-self.decision(x).astype(np.float64)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.where(self.decision(x) >= 0, FAKE, REAL).astype(np.int8)


@dataclass
class ProbeFit:
    probe: LinearProbe
    grid: list[tuple[float, float]]  # (C, validation overall accuracy), in grid order
    train_rows: int


def balanced_rows(clusters: Clusters, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each cluster's parent and one of its children drawn with `seed`: (2K, D) features, (2K,) labels."""
    k, m = clusters.embeddings.shape[:2]
    child = np.random.default_rng(seed).integers(PARENT + 1, m, size=k)  # (K,) one child position each
    rows = np.arange(k)
    x = np.concatenate([clusters.embeddings[rows, PARENT], clusters.embeddings[rows, child]])
    y = np.concatenate([np.full(k, REAL), np.full(k, FAKE)]).astype(np.int8)
    return x, y


def all_rows(clusters: Clusters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every element of the clusters: (K*M, D) features, (K*M,) labels and cluster ids."""
    k, m, d = clusters.embeddings.shape
    return (clusters.embeddings.reshape(k * m, d), clusters.labels().ravel(),
            np.repeat(clusters.cluster_id, m))


def fit_probe(train: Clusters, val: Clusters, c_grid: Sequence[float], *, seed: int = 0,
              max_iter: int = 1000) -> ProbeFit:
    """Fit one probe per C on balanced training rows and keep the one best on all validation elements."""
    if not c_grid or any(c <= 0 for c in c_grid):
        raise ValueError(f"the C grid {list(c_grid)} must be non-empty and positive")
    if len(train.cluster_id) == 0 or len(val.cluster_id) == 0:
        raise ValueError(f"the probe needs train and val clusters; got {len(train.cluster_id)} train, "
                         f"{len(val.cluster_id)} val")
    x, y = balanced_rows(train, seed)
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), 1e-6)
    val_x, val_y, _ = all_rows(val)
    standard = (x - mean) / scale
    fits: dict[float, LinearProbe] = {}
    # from strong to weak regularisation, each fit starting from the previous solution (warm start)
    model = _model(max_iter)
    for c in sorted(set(float(c) for c in c_grid)):
        fits[c] = _fit_one(model, standard, y, c, mean=mean, scale=scale)
    grid = [(float(c), overall_accuracy(fits[float(c)].predict(val_x), val_y)) for c in c_grid]
    best = max(range(len(grid)), key=lambda i: (grid[i][1], -grid[i][0]))
    return ProbeFit(fits[grid[best][0]], grid, len(y))


def _model(max_iter: int):
    from sklearn.linear_model import LogisticRegression

    # L2 is sklearn's default penalty
    return LogisticRegression(solver="lbfgs", max_iter=max_iter, warm_start=True)


def _fit_one(model, x: np.ndarray, y: np.ndarray, c: float, *, mean: np.ndarray, scale: np.ndarray) -> LinearProbe:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    model.set_params(C=c)
    with warnings.catch_warnings():
        # a C far too large for separable data never "converges"; its validation score already says so
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y == FAKE)
    return LinearProbe(mean.astype(np.float32), scale.astype(np.float32), model.coef_[0].astype(np.float32).copy(),
                       float(model.intercept_[0]), float(c))


def c_grid(c_min: float, c_max: float, steps: int) -> list[float]:
    """`steps` values of C spaced evenly in log scale from `c_min` to `c_max` (inclusive)."""
    if not (0 < c_min <= c_max) or steps < 1 or (steps == 1 and c_min != c_max):
        raise InputError("probe.c_min / c_max / c_steps", f"got {c_min}, {c_max}, {steps}; expected "
                         "0 < c_min <= c_max and c_steps >= 1 (1 only when c_min == c_max)")
    return [float(c) for c in np.geomspace(c_min, c_max, steps)]


def evaluate(probe, clusters) -> dict:
    """Classification metrics of a probe on every element of the given clusters."""
    from stages.heads.metrics import classification_metrics

    x, y, cluster = all_rows(clusters)
    return classification_metrics(probe.score(x), y, cluster)

