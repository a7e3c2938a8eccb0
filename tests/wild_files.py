"""The files `detect` meets in the wild: good images in every odd format, and broken or hostile ones."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.images import photo, write_truncated


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path: Path, width: int, height: int, *, real_data: bool = True) -> Path:
    """A 1-bit grey PNG of `width` x `height` black pixels: a few kilobytes on disk, width*height*3 bytes
    once decoded to RGB. Without `real_data` the pixel stream is a stub (the header alone is the bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grey, no interlace
    if real_data:
        row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
        compressor = zlib.compressobj(9)
        pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    else:
        pixels = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b""))
    return path


def write_good(folder: Path) -> dict[str, Path]:
    """Readable images in odd formats, each of which must get a score."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("photo.jpg", "grey16.png", "cmyk.jpg", "animated.gif",
                                              "lossy.webp", "rgba.png")}
    photo(1, (64, 48)).save(paths["photo.jpg"], quality=90)
    grey = np.asarray(photo(2, (40, 40)).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(paths["grey16.png"])
    assert Image.open(paths["grey16.png"]).mode.startswith("I")
    photo(3, (48, 48)).convert("CMYK").save(paths["cmyk.jpg"])
    frames = [photo(seed, (32, 32)).convert("P") for seed in (4, 5, 6)]
    frames[0].save(paths["animated.gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    photo(7, (50, 30)).save(paths["lossy.webp"], quality=80)
    photo(8, (30, 50)).convert("RGBA").save(paths["rgba.png"])
    return paths


def write_bad(folder: Path) -> dict[str, Path]:
    """Files that are not readable images, each of which must get an error row."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("truncated.jpg", "notes.txt", "empty.png", "bomb.png",
                                              "huge_header.png")}
    write_truncated(paths["truncated.jpg"])
    paths["notes.txt"].write_text("this is not an image\n")
    paths["empty.png"].write_bytes(b"")
    write_png_bomb(paths["bomb.png"], 12_000, 12_000)  # over our limit, under PIL's own (it only warns)
    write_png_bomb(paths["huge_header.png"], 100_000, 100_000, real_data=False)  # over PIL's limit too
    return paths


def write_wild_folder(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Good files at the top and one level down, bad files two levels down (so folders must recurse)."""
    good = write_good(root)
    (root / "nested").mkdir()
    good["nested/photo.jpg"] = root / "nested" / "photo.jpg"
    photo(9, (40, 60)).save(good["nested/photo.jpg"])
    bad = write_bad(root / "nested" / "deeper")
    return good, bad
