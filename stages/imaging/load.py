"""Reading images from the wild: one place that opens a file or bytes, applies EXIF orientation, refuses
decompression bombs before decoding, and turns every failure into an `InputError` naming the file."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from stages.contracts.errors import InputError

# 8k x 8k: above any photograph or generator output we expect; a file declaring more is refused before
# its pixels are allocated, so a decompression bomb costs nothing.
MAX_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class ImageInfo:
    """What the clusters stage records about a parent: its stored mode and its size after EXIF rotation."""

    mode: str
    width: int
    height: int
    format: str
    exif_rotated: bool
    sha256: str = ""  # the file's bytes, set by the clusters stage (inspect_image sees only the pixels)


def _open(source: Path | bytes, where: str, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError as error:
        raise InputError(where, "file not found") from error
    except Image.DecompressionBombError as error:
        # PIL refuses sizes over twice its own limit in open(), before our check below can
        raise InputError(where, f"refused as a decompression bomb ({error})") from error
    except (Image.UnidentifiedImageError, OSError, ValueError) as error:
        raise InputError(where, f"not a readable image ({error})") from error
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise InputError(where, f"declares {width}x{height} pixels, over the limit of {max_pixels}",
                         "a decompression bomb or an image far larger than expected")
    return image


def _decode(image: Image.Image, where: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError,
            EOFError) as error:
        raise InputError(where, f"cannot be decoded ({error}); the file may be truncated or corrupt") from error


def inspect_image(source: Path | bytes, *, where: str | None = None, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Fully decode an image (so truncation is caught) and describe it. Raises `InputError`."""
    where = where or str(source)
    with _open(source, where, max_pixels) as image:
        _decode(image, where)
        orientation = image.getexif().get(0x0112, 1)
        rotated = orientation in (5, 6, 7, 8)
        width, height = (image.height, image.width) if rotated else image.size
        return ImageInfo(image.mode, width, height, image.format or "", orientation not in (0, 1))


def load_rgb(source: Path | bytes, *, where: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image to 8-bit RGB, upright by its EXIF orientation. Raises `InputError`.

    Grey, palette, CMYK, 16-bit and alpha images are converted (alpha is composited on white, the way a
    viewer shows it); the first frame of an animation is used."""
    where = where or str(source)
    with _open(source, where, max_pixels) as image:
        _decode(image, where)
        try:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey: scale to 8 bits rather than clip (PIL's convert("L") clips at 255)
                image = image.point(lambda v: v / 257).convert("L")
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return image.convert("RGB")
        except (OSError, ValueError) as error:
            raise InputError(where, f"cannot be converted to RGB ({error})") from error
