"""The shipped detector's fitting protocol, with the classification toolkit (stages.heads).

Protocol (no choice ever looks at test):
1. Logistic regression (L2, L-BFGS; stages.heads.linear.fit_logistic) on the train embeddings standardised
   with train's mean and scale: every train parent and every train child of the chosen generators, classes
   weighted to balance (a COCO parent has 5 children per generator).
2. C is chosen on val from `C_GRID`: the highest val AUC, ties broken by the lower class-balanced log loss
   (probabilities clipped to [1e-7, 1 - 1e-7], so near-perfect fits tie), then the smaller C.
3. The threshold on the head's decision (logit) is chosen on val by the toolkit's one rule
   (stages.heads.threshold.choose_threshold: best balanced accuracy, ties nearest logit 0), because the share
   of fakes in the wild is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.contracts.labels import FAKE
from stages.heads.classes import need_both_classes
from stages.heads.linear import LinearHead, best_c, fit_logistic

C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class Fit:
    head: LinearHead
    threshold: float  # on the head's decision
    val_auc_by_c: dict[str, float]


def fit_detector_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
                      max_iter: int = 2000) -> Fit:
    """Fit the head on train, choose C and the threshold on val (module docstring)."""
    from sklearn.metrics import roc_auc_score

    from stages.heads.threshold import choose_threshold

    need_both_classes(y_train, "the train split's labels")
    need_both_classes(y_val, "the val split's labels")
    heads = fit_logistic(x_train, y_train, C_GRID, balanced=True, max_iter=max_iter)
    decisions = {c: head.decision(x_val) for c, head in heads.items()}
    aucs = {c: float(roc_auc_score(y_val == FAKE, d)) for c, d in decisions.items()}
    c = best_c(heads, lambda head: (aucs[head.params["C"]],
                                    -balanced_log_loss(y_val, head.score(x_val))))
    return Fit(head=heads[c], threshold=choose_threshold(decisions[c], y_val),
               val_auc_by_c={f"{g:g}": aucs[g] for g in sorted(aucs)})


def balanced_log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    """The mean of the real and the fake log loss of probabilities clipped to [1e-7, 1 - 1e-7]."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    fake = np.asarray(labels) == FAKE
    return float((-np.log(p[fake]).mean() - np.log(1 - p[~fake]).mean()) / 2)
