"""The one linear head, and L2 logistic regression (L-BFGS) to fit it.

    decision(x) = ((x - mean) / scale) . coef + intercept   the logit of FAKE: rank and threshold on this
    score(x)    = sigmoid(decision(x))                       the probability of FAKE, for people to read
    predict(x)  = FAKE where decision(x) >= threshold        (stages.heads.threshold; 0 is probability 0.5)

Ranking metrics and thresholds use the decision, never the score: in float64 the sigmoid of every logit above
~37 is exactly 1.0, so probabilities tie where logits do not.

The standardiser is the training rows' mean and standard deviation (computed in float64, stored float32);
a feature whose standard deviation is at most `MIN_SCALE` (constant on the training rows) gets scale 1, so
at test time it enters as (x - mean) instead of being blown up by 1 / std. The head is four float32 arrays
plus its kind and hyper-parameters, so it is stored without pickle (stages.shipped.artifact).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stages.contracts.labels import FAKE
from stages.heads.classes import need_both_classes

MIN_SCALE = 1e-6
TENSORS = ("mean", "scale", "coef", "intercept")


@dataclass
class LinearHead:
    """A linear classifier on standardised features (module docstring); FAKE is the positive class."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    coef: np.ndarray  # (D,)
    intercept: np.ndarray  # (1,)
    kind: str = "logreg"
    params: dict[str, float] = field(default_factory=dict)  # hyper-parameters, e.g. the C chosen on val

    def __post_init__(self) -> None:
        for name in TENSORS:
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.float32).reshape(-1))
        dim = len(self.coef)
        if len(self.mean) != dim or len(self.scale) != dim or len(self.intercept) != 1:
            raise ValueError(f"head tensors disagree: mean {self.mean.shape}, scale {self.scale.shape}, "
                             f"coef {self.coef.shape}, intercept {self.intercept.shape}")
        if not (self.scale > 0).all():
            raise ValueError(f"head scale must be positive; {int((self.scale <= 0).sum())} entries are not")

    @property
    def dim(self) -> int:
        return len(self.coef)

    def tensors(self) -> dict[str, np.ndarray]:
        """What a detector artifact stores (stages.shipped.artifact), by name."""
        return {name: getattr(self, name) for name in TENSORS}

    def decision(self, x: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N,) float64 logits of FAKE."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"embeddings have shape {x.shape}; the head expects (N, {self.dim})")
        return ((x - self.mean) / self.scale) @ self.coef.astype(np.float64) + float(self.intercept[0])

    def score(self, x: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N,) probabilities of FAKE."""
        return sigmoid(self.decision(x))

    def predict(self, x: np.ndarray, threshold: float = 0.0) -> np.ndarray:
        """(N, D) features -> (N,) int8 labels: FAKE where the decision is at least `threshold`."""
        from stages.heads.threshold import predict

        return predict(self.decision(x), threshold)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logits -> probabilities, without overflow warnings for very negative logits."""
    from scipy.special import expit

    return expit(np.asarray(z, dtype=np.float64))


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) training rows -> mean (D,), scale (D,), float32 (module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"the standardiser needs (N, D) rows with N > 0; got shape {x.shape}")
    std = x.std(axis=0)
    return x.mean(axis=0).astype(np.float32), np.where(std > MIN_SCALE, std, 1.0).astype(np.float32)


@dataclass
class LogisticFit:
    """One fit of `fit_logistic_path`: the head, L-BFGS's iterations and whether it converged (stopped before
    `max_iter`, sklearn's own test: n_iter_ < max_iter)."""

    head: LinearHead
    iterations: int
    converged: bool


def scaled_tolerance(z: np.ndarray, y: np.ndarray, weight: np.ndarray, relative: float) -> float:
    """L-BFGS's gradient tolerance for sklearn's objective on (N, D) inputs `z`: `relative` times the largest
    gradient component at the zero start (every logit 0), so that the stopping rule means the same on raw features
    of any scale. sklearn's default, an absolute 1e-4 on its sample-averaged loss, is already met at the start on
    raw features of small scale (L-BFGS then stops after 1 or 2 iterations with the intercept at 0)."""
    residual = weight * (0.5 - (y == FAKE)) / weight.sum()  # (N,): d loss / d logit at logit 0, averaged
    start = max(float(np.abs(z.T @ residual).max(initial=0.0)), abs(float(residual.sum())))
    return relative * start if start > 0 else 1e-4  # no gradient at all: any tolerance stops at the start


def fit_logistic_path(x: np.ndarray, y: np.ndarray, c_values: Iterable[float], *, balanced: bool = False,
                      standardise: bool = True, center: bool = False, max_iter: int = 1000, kind: str = "logreg",
                      relative_tol: float | None = None) -> dict[float, LogisticFit]:
    """One L2 logistic regression (L-BFGS) per inverse regularisation strength C: {C: fit}.

    Protocol: the rows are standardised with their own mean and scale (`standardiser`), or taken as they
    are with `standardise=False` (mean 0, scale 1), or only centred with `center=True` (the rows' mean,
    scale 1: the same problem, since the intercept is not penalised the optimal decision function is
    unchanged, but L-BFGS no longer has to move the intercept against every weight at once); the fits run
    from the smallest C to the largest, each starting from the previous solution (warm start: the optimum
    of each strictly convex problem is the same, the path is cheaper); `balanced` weights each class by
    N / (2 N_class) (sklearn's "balanced"), so the minority class counts as much as the majority. The
    stopping tolerance is sklearn's default (an absolute 1e-4), or with `relative_tol` that fraction of the
    problem's own gradient at the start (`scaled_tolerance`). Each fit records its iterations and whether
    it stopped before `max_iter`.
    Labels follow stages.contracts.labels."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x, y = np.asarray(x), np.asarray(y).ravel()
    c_values = sorted({float(c) for c in c_values})
    if not c_values or c_values[0] <= 0:
        raise ValueError(f"the C values {c_values} must be non-empty and positive")
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features {x.shape} and labels {y.shape} must be (N, D) and (N,)")
    need_both_classes(y, "the training rows")
    if standardise:
        mean, scale = standardiser(x)
    else:
        mean = standardiser(x)[0] if center else np.zeros(x.shape[1], np.float32)
        scale = np.ones(x.shape[1], np.float32)
    # standardise with the float32 values the head stores, so the fitted coefficients match the head's inputs
    z = (x.astype(np.float64) - mean) / scale
    fake = y == FAKE
    weight = np.where(fake, len(y) / (2 * fake.sum()), len(y) / (2 * (~fake).sum())) if balanced else np.ones(len(y))
    tol = 1e-4 if relative_tol is None else scaled_tolerance(z, y, weight, relative_tol)
    model = LogisticRegression(C=c_values[0], max_iter=max_iter, warm_start=True, tol=tol,
                               class_weight="balanced" if balanced else None)  # lbfgs, L2: sklearn's defaults
    fits: dict[float, LogisticFit] = {}
    for c in c_values:
        model.set_params(C=c)
        with warnings.catch_warnings():
            # recorded per fit instead (`LogisticFit.converged`): a C far too large for separable data never
            # converges, and its validation score already says so
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(z, fake)
        iterations = int(model.n_iter_[0])
        fits[c] = LogisticFit(LinearHead(mean, scale, model.coef_[0].copy(), model.intercept_.copy(), kind=kind,
                                         params={"C": c}), iterations, iterations < max_iter)
    return fits


def fit_logistic(x: np.ndarray, y: np.ndarray, c_values: Iterable[float], *, balanced: bool = False,
                 standardise: bool = True, max_iter: int = 1000, kind: str = "logreg") -> dict[float, LinearHead]:
    """`fit_logistic_path` at sklearn's default tolerance, the heads only: {C: head}."""
    return {c: fit.head for c, fit in fit_logistic_path(x, y, c_values, balanced=balanced, standardise=standardise,
                                                         max_iter=max_iter, kind=kind).items()}


def best_c(heads: dict[float, LinearHead], rank: Callable[[LinearHead], Any]) -> float:
    """The C whose head ranks highest by `rank` (a number or a tuple, compared with >); ties go to the
    smaller C (the stronger regularisation)."""
    if not heads:
        raise ValueError("no fitted heads to choose from")
    return max(sorted(heads), key=lambda c: (rank(heads[c]), -c))
