"""Rows of scores for images from the wild: what `parentage detect` writes and what the Python API's
`Detector.score` returns for files, one per input, errors included."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stages.contracts.errors import InputError
from stages.imaging.load import MAX_PIXELS, JpegDecode
from stages.shipped.wild import draft_for

if TYPE_CHECKING:
    from stages.shipped.artifact import Detector
    from stages.shipped.wild import Backbone, Input

LABEL_NAMES = ("real", "fake")  # indexed by stages.contracts.labels: REAL = 0, FAKE = 1
TINIEST = math.ulp(0.0)  # the smallest positive double: a finite logit's probability floor


@dataclass(frozen=True)
class Row:
    path: str
    score: float | None
    logit: float | None  # the head's decision: rank and threshold on this, never on the score
    label: str | None
    threshold: float
    detector: str
    caveat: str | None  # Detector.caveat: what the detector was trained on that its scores should be read with
    error: str | None


def score_inputs(detector: Detector, backbone: Backbone, inputs: Sequence[Input], *, batch_size: int = 32,
                 workers: int = 2, max_pixels: int = MAX_PIXELS, progress: bool = True,
                 jpeg_decode: JpegDecode | None = None) -> Iterator[Row]:
    """Rows for `inputs` (stages.shipped.wild.Input), in order: a score for each readable image, an error
    for each other input. JPEGs are decoded as `jpeg_decode` says, by default as the detector's training
    images were (Detector.jpeg_decode)."""
    from stages.shipped.wild import ImageItems, embed_items

    detector_id, threshold = detector.id, detector.score_threshold  # the id hashes the head: compute it once
    caveat = detector.caveat or None
    sources = [InputError(i.path, i.problem) if i.problem else Path(i.path) for i in inputs]
    decode = JpegDecode(jpeg_decode or detector.jpeg_decode)
    draft = draft_for(backbone, decode)
    items = ImageItems(sources, [i.path for i in inputs], backbone.preprocess, max_pixels=max_pixels, draft=draft)
    for result in embed_items(backbone, items, batch_size=batch_size, workers=workers, progress=progress,
                              description="detect"):
        path = inputs[result.index].path
        if result.error is not None:
            yield Row(path, None, None, None, threshold, detector_id, caveat, result.error)
            continue
        decision = detector.decision(result.embeddings[:1])  # (1, D) -> (1,)
        # the label compares logits: probabilities round to 1.0 for every logit above ~37
        label = LABEL_NAMES[int(detector.predict(decision)[0])]
        yield Row(path, probability(float(decision[0])), float(decision[0]), label, threshold, detector_id, caveat,
                  None)


def probability(logit: float) -> float:
    """The sigmoid of a logit, computed stably; for a finite logit never exactly 0.0 (float64's exp underflows
    below a logit of about -745: the result is then the smallest positive double, still below every real one)."""
    from stages.heads.linear import sigmoid

    value = float(sigmoid(logit))
    return max(value, TINIEST) if math.isfinite(logit) else value
