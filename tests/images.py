"""Tiny image files for tests: every mode a parent may come in, and the broken files a reader must refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def photo(seed: int, size: tuple[int, int] = (48, 32)) -> Image.Image:
    """A smooth random RGB image (not flat, so JPEG and resizing behave as on photographs)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BILINEAR)


def write_modes(folder: Path) -> dict[str, Path]:
    """One valid image per tricky mode: grey, CMYK, RGBA, EXIF-rotated, 16-bit grey, palette."""
    folder.mkdir(parents=True, exist_ok=True)
    base = photo(1)
    paths = {
        "grey": folder / "grey.png",
        "cmyk": folder / "cmyk.jpg",
        "rgba": folder / "rgba.png",
        "rotated": folder / "rotated.jpg",
        "grey16": folder / "grey16.png",
        "palette": folder / "palette.gif",
    }
    base.convert("L").save(paths["grey"])
    base.convert("CMYK").save(paths["cmyk"])
    base.convert("RGBA").save(paths["rgba"])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view: width and height swap
    base.save(paths["rotated"], exif=exif)
    Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257).save(paths["grey16"])
    base.convert("P").save(paths["palette"])
    return paths


def write_truncated(path: Path, seed: int = 7) -> Path:
    photo(seed, (64, 64)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
