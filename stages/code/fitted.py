"""CoDE's three heads fitted as code_eval fits them, for scoring images from elsewhere (the benchmark stage).

Protocol (code_eval's steps 1 to 3): frozen features of the clean centre crop of every train and val image
(parents and the children of `generators`); each head of stages.code.heads fitted on train; its threshold chosen
on val (balanced accuracy, stages.heads.threshold) or the natural 0. `preprocess` gives the same crop for a
decoded image from anywhere, so a benchmark image is scored exactly as a test image of code_eval is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.code.heads import HEADS, Scorer, ThresholdRule


@dataclass
class FittedHeads:
    """Each head's scoring function ((M, D) features -> (M,) scores) and its threshold (FAKE where >= it)."""

    scorers: dict[str, Scorer]
    thresholds: dict[str, float]
    counts: dict[str, int]  # train and val images the heads were fitted and thresholded on


def fit_heads(model: Any, image_size: int, clusters: Path, children_root: Path, generators: Sequence[str], *,
              rule: ThresholdRule, batch_size: int = 64, num_workers: int = 0, progress: bool = True) -> FittedHeads:
    """Fit every head on the train split and threshold it on val (module docstring)."""
    from stages.code.data import EvalImages, extract_features, read_images
    from stages.code.heads import fit_head
    from stages.contracts.errors import InputError
    from stages.heads.threshold import choose_threshold

    refs = read_images(clusters, children_root, list(generators), ("train", "val"))
    pools = {}
    for split in ("train", "val"):
        chosen = [r for r in refs if r.split == split]
        if not chosen:
            raise InputError(str(clusters), f"no {split} images to fit CoDE's heads on")
        features = extract_features(model, EvalImages(chosen, image_size), batch_size=batch_size,
                                    num_workers=num_workers, progress=progress, desc=f"CoDE {split}")
        pools[split] = (features, np.array([r.label for r in chosen]))
    try:
        scorers = {head: fit_head(head, *pools["train"]) for head in HEADS}
        thresholds = {head: choose_threshold(scorers[head](pools["val"][0]), pools["val"][1])
                      if rule is ThresholdRule.val else 0.0 for head in HEADS}
    except ValueError as error:  # a split without reals or without fakes
        raise InputError(str(clusters), str(error)) from error
    return FittedHeads(scorers, thresholds, {split: len(pools[split][1]) for split in pools})


class CodeBackbone:
    """The CoDE model behind the `Backbone` interface of stages.shipped.wild: preprocess is code_eval's
    evaluation crop (the centre image_size square, no resizing, black where the image is smaller)."""

    def __init__(self, model: Any, image_size: int) -> None:
        self.model, self.image_size = model, image_size
        self.device = next(model.parameters()).device
        self.spec = {"alias": "code"}

    def preprocess(self, image: Any) -> Any:
        from stages.code import augment as aug

        return aug.to_tensor(aug.center_crop(image, self.image_size))

    def embed(self, pixels: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.model(pixels.to(self.device))  # (B, 3, S, S) -> (B, D)
