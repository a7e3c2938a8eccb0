"""What every classifier of the toolkit asks of its labels: real and fake (stages.contracts.labels), both
present. Fitting a head (stages.heads.linear, CoDE's heads, the shipped detector's) and choosing a threshold
(stages.heads.threshold) all check it here, so they refuse the same labels with the same words."""

from __future__ import annotations

import numpy as np

from stages.contracts.labels import FAKE, REAL


def need_both_classes(y: np.ndarray, where: str) -> None:
    """Raise ValueError naming `where` unless `y` holds real and fake labels (and nothing else)."""
    present = set(np.unique(np.asarray(y)).tolist())
    if present - {REAL, FAKE}:
        raise ValueError(f"{where} hold labels {sorted(present)}; expected real ({REAL}) and fake ({FAKE}) only")
    if present != {REAL, FAKE}:
        raise ValueError(f"{where} hold labels {sorted(present)}; a classifier needs both real ({REAL}) and "
                         f"fake ({FAKE}) rows")
