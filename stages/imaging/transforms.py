"""Post-processing a detector meets in the wild, applied to a PIL image before the backbone's preprocessing:
JPEG re-compression at quality 95 / 75 / 50, half-size resize, Gaussian blur (sigma 1) and a random crop
(each side a uniform 50-100 % of the original, at a uniform position). Names and semantics are those of the
CoDE evaluation's TEST_TRANSFORMS (stages.code.augment), so both robustness grids read alike.

Every transform is a pure function of the image and a seed, so a robustness table is the same on every
run: `apply_transform(name, image, seed=...)`. The names are the keys of `TRANSFORMS` (and the values of
`Transform`, so commands validate them); ``clean`` is the identity, the row every other row is compared to.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from enum import StrEnum

from PIL import Image, ImageFilter

# The random crop keeps a uniform fraction of each side in this range, at a uniform position.
CROP_SIDE = (0.5, 1.0)


class Transform(StrEnum):
    clean = "clean"
    jpeg95 = "jpeg95"
    jpeg75 = "jpeg75"
    jpeg50 = "jpeg50"
    half = "half"
    blur1 = "blur1"
    crop = "crop"


def _jpeg(quality: int) -> Callable[[Image.Image, int], Image.Image]:
    def compress(image: Image.Image, seed: int) -> Image.Image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return decoded.convert("RGB")

    return compress


def _resize_half(image: Image.Image, seed: int) -> Image.Image:
    width, height = image.size
    return image.resize((max(1, width // 2), max(1, height // 2)), Image.BICUBIC)


def _blur(image: Image.Image, seed: int) -> Image.Image:
    # PIL's GaussianBlur radius is the standard deviation of the kernel
    return image.filter(ImageFilter.GaussianBlur(radius=1.0))


def _crop(image: Image.Image, seed: int) -> Image.Image:
    import numpy as np

    rng = np.random.default_rng(seed)
    width, height = image.size
    w, h = (max(1, round(side * rng.uniform(*CROP_SIDE))) for side in (width, height))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return image.crop((left, top, left + w, top + h))


TRANSFORMS: dict[Transform, Callable[[Image.Image, int], Image.Image]] = {
    Transform.clean: lambda image, seed: image,
    Transform.jpeg95: _jpeg(95),
    Transform.jpeg75: _jpeg(75),
    Transform.jpeg50: _jpeg(50),
    Transform.half: _resize_half,
    Transform.blur1: _blur,
    Transform.crop: _crop,
}


def apply_transform(name: Transform | str, image: Image.Image, *, seed: int = 0) -> Image.Image:
    """`image` after the named transform; `seed` fixes the random ones (derive it from the image's id)."""
    try:
        transform = TRANSFORMS[Transform(name)]
    except ValueError as error:
        raise ValueError(f"unknown transform {name!r}; known: {[t.value for t in Transform]}") from error
    return transform(image, seed)
