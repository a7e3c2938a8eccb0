"""The image operations of CoDE: the released recipe's training augmentations, its crops, the evaluation
crop, and the transformations of the robustness test. All randomness comes from the `rng` passed in.

Augmentations (`AUGMENTATIONS`, in the released order, ranges of its defaults): a view draws k uniformly
from 0..num_transform (2 in the recipe) and applies k distinct ones in list order. The released code
builds them with AugLy on discrete grids of values; here they are PIL operations with the same ranges,
sampled continuously (AugLy is not a dependency)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

Augmentation = Callable[[Image.Image, np.random.Generator], Image.Image]


def _blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 2.0)))


def _brightness(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(rng.uniform(0.5, 2.0))


def _aspect_ratio(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    # new width / height = ratio, area kept
    ratio, area = rng.uniform(0.75, 2.0), img.width * img.height
    width = max(1, round(math.sqrt(area * ratio)))
    return img.resize((width, max(1, round(area / width))), Image.BICUBIC)


def _pixelize(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    ratio = rng.uniform(0.3, 1.0)
    small = img.resize((max(1, round(img.width * ratio)), max(1, round(img.height * ratio))), Image.NEAREST)
    return small.resize(img.size, Image.NEAREST)


def _rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.rotate(rng.uniform(90.0, 270.0), resample=Image.BICUBIC, expand=True)


def _contrast(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(rng.uniform(0.5, 1.5))


def _saturation(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Color(img).enhance(rng.uniform(0.5, 1.5))


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(quality))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return jpeg(img, int(rng.integers(40, 101)))


def _grayscale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.convert("L").convert("RGB")


def _hflip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.mirror(img)


def _opacity(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    # a transparent image as a viewer shows it: blended towards white (as stages.imaging.load does)
    return Image.blend(Image.new("RGB", img.size, (255, 255, 255)), img, rng.uniform(0.2, 1.0))


def _stripes(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    # horizontal white stripes every tenth of the height, each `width` of that period thick
    out, width = img.copy(), rng.uniform(0.05, 0.35)
    period = max(2.0, img.height / 10)
    draw = ImageDraw.Draw(out)
    for top in np.arange(0, img.height, period):
        draw.rectangle([0, int(top), img.width, int(top + max(1.0, width * period)) - 1], fill=(255, 255, 255))
    return out


def _pad(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    factor = rng.uniform(0.01, 0.25)
    return ImageOps.expand(img, (round(img.width * factor), round(img.height * factor)), fill=(0, 0, 0))


def _resize(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    side = int(rng.integers(64, 513))
    return img.resize((side, side), Image.BICUBIC)


def _random_crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return crop_at(img, int(rng.integers(64, 513)), rng)


def _scale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    factor = rng.uniform(0.5, 1.5)
    return img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))), Image.BICUBIC)


def _sharpen(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Sharpness(img).enhance(rng.uniform(1.2, 2.0))


def _shuffle_pixels(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(img).reshape(-1, 3).copy()  # (H*W, 3)
    chosen = rng.choice(len(pixels), size=round(len(pixels) * rng.uniform(0.0, 0.35)), replace=False)
    pixels[chosen] = pixels[rng.permutation(chosen)]
    return Image.fromarray(pixels.reshape(img.height, img.width, 3))


def _skew(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    # horizontal shear about the centre row: x_in = x_out + s * (y - H/2)
    s = rng.uniform(-1.0, 1.0)
    return img.transform(img.size, Image.AFFINE, (1, s, -s * img.height / 2, 0, 1, 0), resample=Image.BICUBIC)


AUGMENTATIONS: tuple[tuple[str, Augmentation], ...] = (
    ("blur", _blur), ("brightness", _brightness), ("aspect_ratio", _aspect_ratio), ("pixelize", _pixelize),
    ("rotate", _rotate), ("contrast", _contrast), ("saturation", _saturation), ("jpeg", _jpeg),
    ("grayscale", _grayscale), ("hflip", _hflip), ("opacity", _opacity), ("stripes", _stripes), ("pad", _pad),
    ("resize", _resize), ("random_crop", _random_crop), ("scale", _scale), ("sharpen", _sharpen),
    ("shuffle_pixels", _shuffle_pixels), ("skew", _skew),
)


def augment(img: Image.Image, rng: np.random.Generator, num_transform: int) -> Image.Image:
    """Apply k ~ U{0..num_transform} distinct augmentations, in list order (the released recipe)."""
    if not 0 <= num_transform <= len(AUGMENTATIONS):
        raise ValueError(f"num_transform is {num_transform}; expected 0..{len(AUGMENTATIONS)}")
    k = int(rng.integers(0, num_transform + 1))
    for index in sorted(rng.choice(len(AUGMENTATIONS), size=k, replace=False)):
        img = AUGMENTATIONS[index][1](img, rng)
    return img


def crop_box(width: int, height: int, scale: tuple[float, float], rng: np.random.Generator,
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a crop covering a `scale` fraction of the area with aspect ratio in `ratio`:
    torchvision's RandomResizedCrop protocol (10 tries, then the largest centred crop of valid ratio),
    drawn from `rng` so a view is reproducible from its seed."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    if width / height < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def random_resized_crop(img: Image.Image, size: int, scale: tuple[float, float],
                        rng: np.random.Generator) -> Image.Image:
    """A `crop_box` of the image resized to size x size (bicubic)."""
    left, top, w, h = crop_box(img.width, img.height, scale, rng)
    return img.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))


def resize_center_crop(img: Image.Image, size: int, crop_pct: float) -> Image.Image:
    """The released recipe's last step in training (--last-crop): shorter side to floor(size / crop_pct),
    bicubic, then the centre size x size."""
    short = math.floor(size / crop_pct)
    scale = short / min(img.size)
    resized = img.resize((max(short, round(img.width * scale)), max(short, round(img.height * scale))),
                         Image.BICUBIC)
    return center_crop(resized, size)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The centre size x size window without resizing; a side shorter than `size` is padded with black on
    both sides (torchvision's CenterCrop behaviour, which the released inference uses). This is how the
    evaluation sees images smaller than the crop, such as the demo's 64-128 px children."""
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))  # PIL fills outside the image with black


def crop_at(img: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """A size x size window at a random position; a side shorter than `size` is padded with black."""
    left = int(rng.integers(0, img.width - size + 1)) if img.width > size else (img.width - size) // 2
    top = int(rng.integers(0, img.height - size + 1)) if img.height > size else (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image):
    """(H, W, 3) uint8 -> (3, H, W) float32, normalised with the recipe's ImageNet mean and std."""
    return normalize(to_uint8(img))


def to_uint8(img: Image.Image):
    """(H, W, 3) uint8 image -> (3, H, W) uint8 tensor: a view as the loader ships it (a quarter of float32's
    bytes through the workers' shared memory and the host-to-device copy); `normalize` finishes it."""
    import torch

    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W)


def normalize(pixels):
    """(..., 3, H, W) uint8 -> float32 in [0, 1], normalised with the recipe's ImageNet mean and std, on the
    tensor's own device. The same float32 operations as before the split, so the same values to the bit."""
    import torch

    from stages.code.net import MEAN, STD

    mean = torch.tensor(MEAN, device=pixels.device)[:, None, None]
    std = torch.tensor(STD, device=pixels.device)[:, None, None]
    return (pixels.to(torch.float32) / 255.0 - mean) / std


CLEAN = "clean"  # the untransformed test images (stages.imaging.transforms.Transform.clean)
