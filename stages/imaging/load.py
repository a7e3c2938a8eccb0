"""Reading images from the wild: one place that opens a file or bytes, applies EXIF orientation, refuses
decompression bombs before decoding, and turns every failure into an `InputError` naming the file.

Draft decoding (`load_rgb(..., draft=side)`): a caller whose preprocessing resizes the shorter side down to
`side` pixels may let a JPEG be decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain (libjpeg's scaled
IDCT, Pillow's `Image.draft`), which costs a fraction of a full decode. It is used only when the stored image's
shorter side is at least twice `side`, and the decoded shorter side is never below `side`, so the preprocessing
still only downsizes; the pixels differ slightly from a full decode followed by the same resize (the scaled
IDCT is a box-like filter before the preprocessing's own antialiased one). Every other format, and every JPEG
under twice the size, is decoded exactly as without it."""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from stages.contracts.errors import InputError
from stages.contracts.files import special_kind

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


class JpegDecode(StrEnum):
    """How embed, the detector and detect decode JPEGs (param embed.jpeg_decode): full; draft (reduced in the
    DCT domain where the preprocessing allows, see the module docstring); gpu (embed only: decoded and
    preprocessed on the run's device by torchvision, stages.imaging.gpu; detect reads such a detector's
    inputs as full, its nearest CPU equivalent)."""

    full = "full"
    draft = "draft"
    gpu = "gpu"


# Formats decoded by libjpeg, whose scaled IDCT `Image.draft` uses (MPO: a camera's multi-picture JPEG).
DRAFT_FORMATS = ("JPEG", "MPO")

# EXIF orientations that ask for a transpose (ImageOps.exif_transpose applies exactly these); 1 is upright
# and anything else (0, 9, 65535 in broken files) is ignored, so the image is not turned.
TRANSPOSED = (2, 3, 4, 5, 6, 7, 8)
SWAPS_SIDES = (5, 6, 7, 8)


def _allow(max_pixels: int) -> None:
    """Let Pillow open what our own limit allows: Pillow refuses over twice its MAX_IMAGE_PIXELS (89M) in
    open(), before our check, so a user's higher --max-pixels raises Pillow's limit to it. Only ever raised,
    never toggled back, so threads reading at the same time never see a lower limit than they asked for."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _open(source: Path | bytes | BinaryIO, where: str, max_pixels: int) -> Image.Image:
    _allow(max_pixels)
    # an open binary stream was checked by whoever opened it; Pillow reads it a block at a time
    kind = special_kind(Path(source)) if isinstance(source, str | Path) else None
    if kind == "a folder":
        raise InputError(where, "is a folder; an image file is expected")
    if kind:
        raise InputError(where, f"not a regular file ({kind}); not read")
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError as error:
        raise InputError(where, "file not found") from error
    except IsADirectoryError as error:
        raise InputError(where, "is a folder; an image file is expected") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # over twice Pillow's own limit (or over it, where the caller turned warnings into errors)
        raise InputError(where, f"refused as a decompression bomb ({error})") from error
    except Image.UnidentifiedImageError as error:
        # Pillow's message names its file object, a BytesIO for bytes: `where` names the file
        if isinstance(source, bytes):
            empty = len(source) == 0
        elif isinstance(source, str | Path):
            empty = Path(source).stat().st_size == 0
        else:  # an open file: its size from its descriptor
            empty = os.fstat(source.fileno()).st_size == 0
        raise InputError(where, "not a readable image (an empty file)" if empty else
                         "not a readable image (no image format Pillow reads starts it)") from error
    except (OSError, ValueError) as error:
        raise InputError(where, f"not a readable image ({error})") from error
    _check_size(image, where, max_pixels)
    return image


def _check_size(image: Image.Image, where: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise InputError(where, f"declares {width}x{height} pixels, over the limit of {max_pixels}",
                         "a decompression bomb or an image far larger than expected")


def _decode(image: Image.Image, where: str, max_pixels: int) -> None:
    # No warning filters here: they are process-wide, and one thread's filter would reach another thread's
    # open. The size is checked before decoding (in _open) and again after it (some formats pick the frame,
    # and so the size, while loading).
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError,
            EOFError) as error:
        raise InputError(where, f"cannot be decoded ({error}); the file may be truncated or corrupt") from error
    _check_size(image, where, max_pixels)


def _draft(image: Image.Image, side: int | None) -> bool:
    """Ask the JPEG decoder for a reduced decode whose shorter side stays at least `side`; True if it will.

    Only for JPEG whose shorter side is at least 2 * side (below that no reduction keeps `side`). The
    orientation does not matter: a transpose keeps the shorter side. The mode is kept (a CMYK JPEG stays
    CMYK and is converted as without draft)."""
    if not side or image.format not in DRAFT_FORMATS:
        return False
    width, height = image.size
    if min(width, height) < 2 * side:
        return False
    scale = side / min(width, height)
    try:
        # Pillow picks the largest reduction (8, 4, 2) keeping both sides at least the requested ones
        reduced = image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
    except (OSError, ValueError):  # a JPEG the decoder cannot reduce is decoded whole, as without draft
        return False
    return reduced is not None and image.size != (width, height)


def _orientation(image: Image.Image) -> object:
    try:
        return image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a corrupt EXIF block is no orientation, as for exif_transpose
        return 1


def inspect_image(source: Path | bytes | BinaryIO, *, where: str | None = None,
                  max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Fully decode an image (so truncation is caught) and describe it. Raises `InputError`. `source`: a path,
    the bytes, or a binary stream open at the image's start (read only as far as decoding needs).

    `exif_rotated` is true only when the EXIF orientation asks for a transpose (2..8), the ones `load_rgb`
    applies; width and height are the upright image's."""
    where = where or str(source)
    with _open(source, where, max_pixels) as image:
        _decode(image, where, max_pixels)
        _pixel_range(image, where)
        orientation = _orientation(image)
        width, height = (image.height, image.width) if orientation in SWAPS_SIDES else image.size
        return ImageInfo(image.mode, width, height, image.format or "", orientation in TRANSPOSED)


def _pixel_range(image: Image.Image, where: str) -> tuple[float, float] | None:
    """For 32-bit integer ("I") and float ("F") images: their (min, max) if they can be shown in 8 bits,
    else an `InputError` naming the file. None for every other mode.

    Integers must lie in 0..65535 (16-bit data, the only kind Pillow stores in "I" from PNG and TIFF scans);
    floats in 0..1 (the convention of float image files). Anything else has no agreed meaning as a colour."""
    if image.mode not in ("I", "F"):
        return None
    low, high = image.getextrema()
    if image.mode == "F":
        if not (math.isfinite(low) and math.isfinite(high) and low >= 0 and high <= 1):
            raise InputError(where, f"float pixels range {low:g}..{high:g}; only 0..1 can be read as an image",
                             "save it as 8 or 16 bits per channel")
    elif not (low >= 0 and high <= 65535):
        raise InputError(where, f"32-bit integer pixels range {low}..{high}; only 0..65535 (16-bit data) can be "
                                "read as an image", "save it as 8 or 16 bits per channel")
    return low, high


def load_rgb(source: Path | bytes, *, where: str | None = None, max_pixels: int = MAX_PIXELS,
             draft: int | None = None) -> Image.Image:
    """Decode an image to 8-bit RGB, upright by its EXIF orientation. Raises `InputError`.

    `draft`: the shorter side (pixels) the caller's preprocessing resizes to; a JPEG at least twice that is
    decoded reduced in the DCT domain, never below it (module docstring). None (the default): full decode.

    Grey, palette, CMYK, 16-bit and alpha images are converted (alpha is composited on white, the way a
    viewer shows it); the first frame of an animation is used. 16-bit grey is scaled to 8 bits, float grey
    in 0..1 is scaled by 255; 32-bit integers beyond 16 bits and floats outside 0..1 are refused by name
    (converting them would clip to white or black)."""
    where = where or str(source)
    with _open(source, where, max_pixels) as image:
        _draft(image, draft)
        _decode(image, where, max_pixels)
        _pixel_range(image, where)
        try:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey: scale to 8 bits rather than clip (PIL's convert("L") clips at 255)
                image = image.point(lambda v: v / 257).convert("L")
            elif image.mode == "F":
                image = image.point(lambda v: v * 255).convert("L")
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return image.convert("RGB")
        except (OSError, ValueError) as error:
            raise InputError(where, f"cannot be converted to RGB ({error})") from error
