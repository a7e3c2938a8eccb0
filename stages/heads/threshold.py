"""The one threshold rule of every stage that classifies.

A score is any number where higher means more likely generated, with a natural decision boundary at 0:
a linear head's logit (stages.heads.linear), CoDE's 1-NN distance difference, minus the one-class SVM's
decision function. The rule everywhere:

    label = FAKE where score >= threshold, else REAL.

`choose_threshold` picks, on the scores of a split other than test (val), the threshold with the best
balanced accuracy (the mean of real and fake accuracy: the share of fakes in the wild is unknown). The
candidates are 0, one below every score (all FAKE), one above every score (all REAL) and the midpoint of
each pair of neighbouring distinct scores; each candidate is measured by applying the rule itself. Ties go to
the candidate nearest 0, the natural boundary (for a logit: probability 0.5), so 0 wins whenever it is among
the best (two candidates equally near: the lower one).
"""

from __future__ import annotations

import numpy as np

from stages.contracts.labels import FAKE, REAL
from stages.heads.classes import need_both_classes


def predict(score: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """(N,) scores -> (N,) int8 labels: FAKE where score >= threshold, REAL elsewhere."""
    return np.where(np.asarray(score) >= threshold, FAKE, REAL).astype(np.int8)


def choose_threshold(score: np.ndarray, label: np.ndarray) -> float:
    """The threshold on these (val) scores with the best balanced accuracy; ties: nearest 0 (module docstring).

    Raises ValueError when a class is missing (balanced accuracy needs both) or a score is not finite."""
    score, label = np.asarray(score, dtype=np.float64).ravel(), np.asarray(label).ravel()
    if score.shape != label.shape:
        raise ValueError(f"scores {score.shape} and labels {label.shape} must match")
    need_both_classes(label, "the threshold's (val) labels")
    if not np.isfinite(score).all():
        raise ValueError(f"{int((~np.isfinite(score)).sum())} scores are not finite; no threshold can be chosen")
    distinct = np.unique(score)
    candidates = np.unique(np.concatenate([[0.0, distinct[0] - 1.0, distinct[-1] + 1.0],
                                           (distinct[:-1] + distinct[1:]) / 2]))
    real, fake = np.sort(score[label == REAL]), np.sort(score[label == FAKE])
    # counts under the rule, for every candidate at once: reals below t are right, fakes at or above t are right
    real_right = np.searchsorted(real, candidates, side="left")
    fake_right = len(fake) - np.searchsorted(fake, candidates, side="left")
    balanced = (real_right / len(real) + fake_right / len(fake)) / 2
    best = candidates[balanced == balanced.max()]
    return float(best[np.argmin(np.abs(best))])
