"""The three heads of the released CoDE evaluation on frozen, L2-normalised features, and their metrics.

    logreg  logistic regression, C 0.316, 1500 iterations, balanced class weights
    knn     1-nearest neighbour with cosine distance
    ocsvm   one-class SVM fitted on the reals only (nu 0.1, polynomial kernel, gamma "auto")

Every head gives a score per image, higher = more likely generated, with a natural threshold of 0:
logreg its logit, knn (cosine distance to the nearest real) - (to the nearest fake), ocsvm minus its
decision function (reals are its inliers). AUC and AP use the scores; accuracies use a threshold that is
either the natural 0 or chosen on val (maximising balanced accuracy there), never on test."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import numpy as np

from stages.contracts.labels import FAKE, REAL

HEADS = ("logreg", "knn", "ocsvm")
METRICS = ("real_acc", "fake_acc", "acc", "auc", "ap")


class ThresholdRule(StrEnum):
    val = "val"  # maximise balanced accuracy on the val split
    natural = "natural"  # 0: the head's own decision (logit 0, nearer class, SVM boundary)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


Scorer = Callable[[np.ndarray], np.ndarray]


def fit_head(name: str, features: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> Scorer:
    """Fit one head on (N, D) features and labels; return its scoring function (M, D) -> (M,)."""
    x, y = l2_normalize(features), np.asarray(labels)
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression

        _need_both_classes(y, name)
        model = LogisticRegression(C=0.316, max_iter=1500, class_weight="balanced", random_state=seed).fit(x, y)
        sign = 1.0 if model.classes_[1] == FAKE else -1.0
        return lambda q: sign * model.decision_function(l2_normalize(q))
    if name == "knn":
        from sklearn.neighbors import NearestNeighbors

        _need_both_classes(y, name)
        real = NearestNeighbors(n_neighbors=1, metric="cosine").fit(x[y == REAL])
        fake = NearestNeighbors(n_neighbors=1, metric="cosine").fit(x[y == FAKE])

        def knn_score(q: np.ndarray) -> np.ndarray:
            q = l2_normalize(q)
            return real.kneighbors(q)[0][:, 0] - fake.kneighbors(q)[0][:, 0]

        return knn_score
    if name == "ocsvm":
        from sklearn.svm import OneClassSVM

        reals = x[y == REAL]
        if len(reals) == 0:
            raise ValueError("the one-class SVM needs real training images; there are none")
        model = OneClassSVM(nu=0.1, kernel="poly", gamma="auto").fit(reals)
        return lambda q: -model.decision_function(l2_normalize(q))
    raise ValueError(f"unknown head {name!r}; known: {HEADS}")


def _need_both_classes(y: np.ndarray, name: str) -> None:
    if not ((y == REAL).any() and (y == FAKE).any()):
        raise ValueError(f"the {name} head needs real and generated training images; got labels {np.unique(y)}")


def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold on val scores with the best balanced accuracy (ties: the one nearest 0).

    Candidates are 0 and the midpoints between consecutive distinct scores, plus one beyond each end."""
    if not ((labels == REAL).any() and (labels == FAKE).any()):
        return 0.0
    distinct = np.unique(scores)
    candidates = np.concatenate([[0.0, distinct[0] - 1.0, distinct[-1] + 1.0], (distinct[1:] + distinct[:-1]) / 2])
    real, fake = scores[labels == REAL], scores[labels == FAKE]
    # balanced accuracy of "fake if score > t", vectorised over the candidates
    balanced = ((real[None, :] <= candidates[:, None]).mean(1) + (fake[None, :] > candidates[:, None]).mean(1)) / 2
    best = np.flatnonzero(balanced == balanced.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best]))]])


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Real, fake and overall accuracy at `threshold` (fake if score > threshold), AUC and AP.

    A metric whose class is absent is None (not applicable), never 0."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    predicted = np.where(scores > threshold, FAKE, REAL)
    real, fake = labels == REAL, labels == FAKE
    both = bool(real.any() and fake.any())
    return {
        "real_acc": float((predicted[real] == REAL).mean()) if real.any() else None,
        "fake_acc": float((predicted[fake] == FAKE).mean()) if fake.any() else None,
        "acc": float((predicted == labels).mean()) if len(labels) else None,
        "auc": float(roc_auc_score(labels == FAKE, scores)) if both else None,
        "ap": float(average_precision_score(labels == FAKE, scores)) if both else None,
    }
