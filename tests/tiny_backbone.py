"""A tiny seeded backbone with the interface of stages.shipped.wild.Backbone, for fast offline tests."""

from __future__ import annotations

from typing import Any

SPEC: dict[str, Any] = {"alias": "tiny_test", "library": "torch", "architecture": "conv3x3-8-avgpool+rgb-mean",
                        "weights": "seed0", "seed": -1, "preprocessing": {"resize": [32, 32]}, "dim": 11}


class TinyBackbone:
    """A seeded 3x3 convolution with 8 channels, average-pooled, beside the mean colour: 11-d embeddings."""

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        import torch

        self.spec = dict(spec or SPEC)
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(8, 3, 3, 3, generator=generator)  # (C_out, C_in, k, k)

    def preprocess(self, image: Any) -> Any:
        import numpy as np
        import torch

        array = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 255
        return torch.from_numpy(array).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)

    def embed(self, pixels: Any) -> Any:
        import torch

        features = torch.nn.functional.conv2d(pixels, self.weight).relu().mean(dim=(2, 3))  # (B, 8)
        return torch.cat([features, pixels.mean(dim=(2, 3))], dim=1)  # (B, 11)
