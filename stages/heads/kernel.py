"""Heads that keep training points instead of one weight vector: nearest neighbours and a polynomial one-class
SVM. The project fits neither into a shipped detector (its own heads are `stages.heads.linear`); they exist
so that published detectors with such heads (the CoDE release's k-NN and one-class SVM, converted by
`parentage convert_code_release`) are stored as plain tensors and score images beside the project's own.

Each head has the interface of `LinearHead` that a detector artifact needs: `kind`, `params`, `dim`,
`decision(x)` (higher = more likely FAKE; a detector labels FAKE where decision >= its threshold), `score(x)`
(sigmoid of the decision: monotone in it, *not* a calibrated probability for these heads) and `tensors()`.

    NeighbourHead   decision(x) = share of FAKE among the k nearest reference points - 1/2
                    (cosine or Euclidean distance; uniform votes)
    OneClassHead    decision(x) = sign * (sum_i dual_i * (gamma <sv_i, x> + coef0) ** degree + intercept)
                    (sign +1 when the SVM's inliers are the FAKE class, -1 when they are the REAL class)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stages.heads.linear import sigmoid

NEIGHBOUR_TENSORS = ("points", "labels")
ONE_CLASS_TENSORS = ("support_vectors", "dual_coef", "intercept")
METRICS = ("cosine", "euclidean")


def _features(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"embeddings have shape {x.shape}; the head expects (N, {dim})")
    return x


@dataclass
class NeighbourHead:
    """k nearest neighbours among stored reference embeddings with their labels (0 REAL, 1 FAKE)."""

    points: np.ndarray  # (M, D) reference embeddings
    labels: np.ndarray  # (M,) 0 / 1
    kind: str = "knn"
    params: dict[str, Any] = field(default_factory=lambda: {"k": 1, "metric": "cosine"})

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, dtype=np.float32)
        self.labels = np.ascontiguousarray(self.labels, dtype=np.float32).reshape(-1)
        if self.points.ndim != 2 or len(self.points) != len(self.labels):
            raise ValueError(f"head tensors disagree: points {self.points.shape}, labels {self.labels.shape}")
        if not np.isin(self.labels, (0, 1)).all():
            raise ValueError("neighbour labels must be 0 (real) or 1 (fake)")
        k, metric = int(self.params.get("k", 0)), self.params.get("metric")
        if not 1 <= k <= len(self.points):
            raise ValueError(f"k = {k}; expected 1 .. {len(self.points)} (the reference points)")
        if metric not in METRICS:
            raise ValueError(f"metric {metric!r}; known: {list(METRICS)}")

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    def tensors(self) -> dict[str, np.ndarray]:
        return {"points": self.points, "labels": self.labels}

    def decision(self, x: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N,) share of FAKE among the k nearest points, minus 1/2."""
        x = _features(x, self.dim)
        points = self.points.astype(np.float64)
        if self.params["metric"] == "cosine":
            a = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            b = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
            distance = 1 - a @ b.T  # (N, M)
        else:
            distance = ((x ** 2).sum(1)[:, None] - 2 * x @ points.T + (points ** 2).sum(1)[None, :])  # (N, M)
        k = int(self.params["k"])
        nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]  # (N, k)
        return self.labels[nearest].astype(np.float64).mean(axis=1) - 0.5

    def score(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.decision(x))


@dataclass
class OneClassHead:
    """A one-class SVM with a polynomial kernel: its support vectors, dual coefficients and intercept."""

    support_vectors: np.ndarray  # (S, D)
    dual_coef: np.ndarray  # (S,)
    intercept: np.ndarray  # (1,)
    kind: str = "ocsvm"
    params: dict[str, Any] = field(default_factory=lambda: {"gamma": 1.0, "coef0": 0.0, "degree": 3,
                                                            "inliers": "real"})

    def __post_init__(self) -> None:
        self.support_vectors = np.ascontiguousarray(self.support_vectors, dtype=np.float64)
        self.dual_coef = np.ascontiguousarray(self.dual_coef, dtype=np.float64).reshape(-1)
        self.intercept = np.ascontiguousarray(self.intercept, dtype=np.float64).reshape(-1)
        if self.support_vectors.ndim != 2 or len(self.support_vectors) != len(self.dual_coef) \
                or len(self.intercept) != 1:
            raise ValueError(f"head tensors disagree: support_vectors {self.support_vectors.shape}, dual_coef "
                             f"{self.dual_coef.shape}, intercept {self.intercept.shape}")
        if self.params.get("inliers") not in ("real", "fake"):
            raise ValueError(f"inliers {self.params.get('inliers')!r}; expected 'real' or 'fake'")
        for key in ("gamma", "coef0", "degree"):
            if not isinstance(self.params.get(key), int | float) or isinstance(self.params.get(key), bool):
                raise ValueError(f"one-class SVM parameter {key} is {self.params.get(key)!r}; expected a number")

    @property
    def dim(self) -> int:
        return int(self.support_vectors.shape[1])

    def tensors(self) -> dict[str, np.ndarray]:
        return {"support_vectors": self.support_vectors, "dual_coef": self.dual_coef, "intercept": self.intercept}

    def decision(self, x: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N,) the SVM's decision function, signed so that higher means FAKE."""
        x = _features(x, self.dim)
        p = self.params
        kernel = (float(p["gamma"]) * (x @ self.support_vectors.T) + float(p["coef0"])) ** int(p["degree"])  # (N, S)
        inlier = kernel @ self.dual_coef + float(self.intercept[0])  # > 0: like the points it was fitted on
        return inlier if p["inliers"] == "fake" else -inlier

    def score(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.decision(x))
