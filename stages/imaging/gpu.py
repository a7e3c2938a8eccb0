"""JPEG decoding on the device (embed.jpeg_decode=gpu): torchvision's `decode_jpeg` (nvjpeg on CUDA) on a batch of
encoded files, and the backbone's preprocessing rebuilt on tensors, so a GPU box decodes and resizes where the
forward runs instead of on a few CPU cores.

Protocol: loader workers only read the bytes and sort them (`gpu_decodable`: a JPEG that libjpeg would read as
RGB or grey, within the pixel limit; everything else, and every file the device refuses, goes through
`stages.imaging.load.load_rgb` on the CPU as with full decoding). The training process decodes the batch on the
device (`decode_batch`, EXIF orientation applied), then `tensor_preprocess(transform)` resizes, crops and
normalises each image there. The pixels differ from the CPU path by rounding (nvjpeg's IDCT, the tensor resize):
it is a setting of its own, recorded like draft. On a CPU device the same code runs with torchvision's CPU
decoder (what the tests exercise)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from stages.imaging.load import MAX_PIXELS

# open_clip's transform steps that only make sure a PIL image is RGB / a tensor: a decoded RGB tensor is both
PASS_THROUGH = ("MaybeConvertMode", "_convert_to_rgb")
TO_FLOAT = ("ToTensor", "MaybeToTensor", "PILToTensor")


def gpu_decodable(data: bytes, max_pixels: int = MAX_PIXELS) -> bool:
    """True for a baseline or progressive JPEG in RGB (YCbCr) or grey, declaring at most `max_pixels`: what
    `decode_jpeg(mode=RGB)` reads as the CPU reader does. Only the header is parsed."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return image.format == "JPEG" and image.mode in ("RGB", "L") and width * height <= max_pixels
    except Exception:  # noqa: BLE001 - anything the header parser refuses goes to the CPU reader, which names it
        return False


def decode_batch(datas: Sequence[bytes], device: Any) -> list[Any]:
    """(3, H, W) uint8 RGB tensors on `device`, upright by EXIF, one per input; None where the decoder failed
    (the caller reads those on the CPU). One batched call; if it fails, each file alone."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    if not encoded:
        return []
    try:
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True))
    except (RuntimeError, ValueError):
        out = []
        for one in encoded:
            try:
                out.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True))
            except (RuntimeError, ValueError):
                out.append(None)
        return out


def tensor_preprocess(transform: Any) -> Callable[[Any], Any] | None:
    """The backbone's PIL transform as a function of a (3, H, W) uint8 tensor, or None when a step has no tensor
    equivalent here (then the GPU path is not used). Resize, CenterCrop and Normalize run on tensors as they
    are (antialiased resize, as on PIL); ToTensor becomes a division by 255 in float32."""
    from torchvision import transforms as T

    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    kept: list[Callable[[Any], Any]] = []
    for step in steps:
        name = getattr(step, "__name__", type(step).__name__)
        if isinstance(step, T.Resize | T.CenterCrop | T.Normalize):
            kept.append(step)
        elif name in TO_FLOAT:
            kept.append(lambda x: x.float() / 255.0)
        elif name not in PASS_THROUGH:
            return None

    def run(pixels):
        for step in kept:
            pixels = step(pixels)
        return pixels

    return run
