"""The three heads of the released CoDE evaluation on frozen features.

    logreg  logistic regression on L2-normalised features: C 0.316, 1500 iterations, balanced class
            weights (the toolkit's linear head, stages.heads.linear, without standardisation)
    knn     1-nearest neighbour with cosine distance
    ocsvm   one-class SVM fitted on the reals only, on the raw features as the released code does (nu 0.1,
            polynomial kernel, gamma "auto" = 1 / D). On L2-normalised 192-d features its kernel values
            (gamma <x, y>)^3 fall below 1e-6, under libsvm's tolerance: the solver would stop where it
            starts and nu would mean nothing.

Every head gives a score per image, higher = more likely generated, with a natural threshold of 0:
logreg its logit, knn (cosine distance to the nearest real) - (to the nearest fake), ocsvm minus its
decision function (reals are its inliers). Thresholds and metrics are the toolkit's (stages.heads.threshold,
stages.heads.metrics): FAKE where score >= threshold, the threshold either the natural 0 or chosen on val,
never on test; AUC and AP from the scores."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import numpy as np

from stages.contracts.labels import FAKE, REAL
from stages.heads.classes import need_both_classes
from stages.heads.linear import fit_logistic

HEADS = ("logreg", "knn", "ocsvm")
# the scale each head's score and threshold are on (module docstring): higher = more likely generated
SCALES = {"logreg": "logit", "knn": "cosine distance to the nearest real minus to the nearest fake",
          "ocsvm": "minus the SVM decision function"}
LOGREG_C = 0.316


class ThresholdRule(StrEnum):
    val = "val"  # maximise balanced accuracy on the val split
    natural = "natural"  # 0: the head's own decision (logit 0, nearer class, SVM boundary)


class EvalProtocol(StrEnum):
    """How code_eval fits and thresholds the heads."""

    toolkit = "toolkit"  # every train image fits the heads; thresholds by the ThresholdRule (val or natural)
    released = "released"  # CoDE's released evaluation: a seeded subsample fits the heads, thresholds natural


def fit_subsample(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` of `n` training images drawn without replacement with `seed` (all of them when
    `size` >= n): the released evaluation fits its heads on such a subsample (9,600 images)."""
    if size < 1:
        raise ValueError(f"the heads' training subsample must hold at least 1 image; got {size}")
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


Scorer = Callable[[np.ndarray], np.ndarray]


def fit_head(name: str, features: np.ndarray, labels: np.ndarray) -> Scorer:
    """Fit one head on (N, D) features and labels; return its scoring function (M, D) -> (M,)."""
    x, y = l2_normalize(features), np.asarray(labels)
    if name == "logreg":
        need_both_classes(y, f"the {name} head's training labels")
        head = fit_logistic(x, y, [LOGREG_C], balanced=True, standardise=False, max_iter=1500)[LOGREG_C]
        return lambda q: head.decision(l2_normalize(q))
    if name == "knn":
        from sklearn.neighbors import NearestNeighbors

        need_both_classes(y, f"the {name} head's training labels")
        real = NearestNeighbors(n_neighbors=1, metric="cosine").fit(x[y == REAL])
        fake = NearestNeighbors(n_neighbors=1, metric="cosine").fit(x[y == FAKE])

        def knn_score(q: np.ndarray) -> np.ndarray:
            q = l2_normalize(q)
            return real.kneighbors(q)[0][:, 0] - fake.kneighbors(q)[0][:, 0]

        return knn_score
    if name == "ocsvm":
        from sklearn.svm import OneClassSVM

        reals = np.asarray(features)[y == REAL]
        if len(reals) == 0:
            raise ValueError("the one-class SVM needs real training images; there are none")
        model = OneClassSVM(nu=0.1, kernel="poly", gamma="auto").fit(reals)  # raw features (module docstring)
        return lambda q: -model.decision_function(np.asarray(q))
    raise ValueError(f"unknown head {name!r}; known: {HEADS}")

