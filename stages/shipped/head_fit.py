"""Training the shipped detector's head and measuring it.

Protocol (no choice ever looks at test):
1. Standardise embeddings with the mean and standard deviation of train.
2. Logistic regression (L2, L-BFGS) on every train parent and every train child of the chosen generators,
   classes weighted to balance (a COCO parent has 5 children per generator). C is chosen on val from
   `C_GRID`: the highest val AUC, ties broken by the lower class-balanced log loss, then the smaller C.
3. The threshold on the score is chosen on val to maximise balanced accuracy (the mean of real and fake
   accuracy), because the share of fakes in the wild is unknown; ties go to the threshold nearest 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stages.contracts.labels import FAKE, REAL
from stages.shipped.artifact import LinearHead

C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class Fit:
    head: LinearHead
    threshold: float
    val_auc_by_c: dict[str, float]


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> mean (D,), scale (D,); a constant feature gets scale 1 instead of a division by zero."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-8, scale, 1.0)


def fit_logreg(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
               c_grid: Sequence[float] = C_GRID, seed: int = 0, max_iter: int = 2000) -> Fit:
    """Fit the head on train, choose C and the threshold on val (module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    _check_both_classes(y_train, "train")
    _check_both_classes(y_val, "val")
    mean, scale = standardiser(x_train)
    z_train, z_val = (x_train - mean) / scale, (x_val - mean) / scale
    best: tuple[tuple[float, float], LogisticRegression, float] | None = None
    aucs: dict[str, float] = {}
    for c in sorted(c_grid):
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter, random_state=seed)
        model.fit(z_train, y_train)
        scores = model.predict_proba(z_val)[:, 1]
        auc = float(roc_auc_score(y_val == FAKE, scores))
        aucs[f"{c:g}"] = auc
        # sort key: higher AUC, lower balanced log loss, smaller C (c ascends, so the first wins ties)
        key = (auc, -balanced_log_loss(y_val, scores))
        if best is None or key > best[0]:
            best = (key, model, c)
    assert best is not None
    _, model, c = best
    head = LinearHead(mean=mean, scale=scale, coef=model.coef_[0], intercept=model.intercept_, kind="logreg",
                      params={"C": float(c)})
    return Fit(head=head, threshold=choose_threshold(y_val, head.score(x_val)), val_auc_by_c=aucs)


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold maximising balanced accuracy on these (val) scores; ties: nearest 0.5."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    _check_both_classes(labels, "val")
    distinct = np.unique(scores)
    # a threshold between each pair of neighbouring scores, and one beyond each end
    candidates = np.concatenate([[distinct[0] - 1e-6], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1e-6]])
    fake = labels == FAKE
    predicted = scores[None, :] >= candidates[:, None]  # (T, N)
    tpr = (predicted & fake).sum(axis=1) / fake.sum()
    tnr = (~predicted & ~fake).sum(axis=1) / (~fake).sum()
    balanced = (tpr + tnr) / 2
    best = np.flatnonzero(np.isclose(balanced, balanced.max()))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def _check_both_classes(labels: np.ndarray, split: str) -> None:
    present = set(np.unique(labels).tolist())
    if not {REAL, FAKE} <= present:
        raise ValueError(f"the {split} split has labels {sorted(present)}; the detector needs both real ({REAL}) "
                         f"and fake ({FAKE}) images there")


def balanced_log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    fake = np.asarray(labels) == FAKE
    return float((-np.log(p[fake]).mean() - np.log(1 - p[~fake]).mean()) / 2)


def detection_metrics(labels: np.ndarray, scores: np.ndarray, cluster_id: np.ndarray,
                      threshold: float) -> dict[str, float | None]:
    """stages.heads.metrics.classification_metrics at the detector's threshold (real, fake, overall and
    full-cluster accuracy, AUC and AP), plus the number of images measured."""
    from stages.heads.metrics import classification_metrics

    return {**classification_metrics(scores, labels, cluster_id, threshold=threshold), "count": float(len(labels))}
