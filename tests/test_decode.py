"""Draft decoding of JPEGs (stages.imaging.load), the decode side of a backbone's transform, and how embed,
the detector and detect pass it on."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from stages.imaging.load import load_rgb
from tests.images import photo, write_modes
from tests.wild_files import write_bad, write_good


def jpeg_bytes(size: tuple[int, int], *, mode: str = "RGB", orientation: int | None = None, seed: int = 3) -> bytes:
    image = photo(seed, size)
    image = image.convert(mode) if mode != "RGB" else image
    buffer = io.BytesIO()
    extra = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    image.save(buffer, format="JPEG", quality=90, **extra)
    return buffer.getvalue()


def reference(data: bytes) -> Image.Image:
    """The reader's pixels before draft existed, for an RGB/grey/CMYK JPEG: full decode, EXIF transpose, RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


@pytest.mark.parametrize(("size", "side", "expected"), [
    ((640, 480), 224, (320, 240)),   # 480 >= 2 * 224: reduced by 2, shorter side still >= 224
    ((640, 480), 256, (640, 480)),   # 480 < 2 * 256: decoded whole
    ((640, 480), 240, (320, 240)),   # exactly twice: reduced, to exactly the side
    ((2000, 1000), 224, (500, 250)),  # reduced by 4, never below the side
    ((4000, 3000), 224, (500, 375)),  # by 8 at most (libjpeg's largest reduction)
    ((480, 640), 224, (240, 320)),   # portrait
])
def test_draft_reduces_a_jpeg_only_when_it_is_at_least_twice_the_side(size, side, expected):
    image = load_rgb(jpeg_bytes(size), draft=side)
    assert image.size == expected
    assert image.mode == "RGB"
    assert min(image.size) >= side


def test_draft_off_or_too_small_gives_exactly_the_old_pixels():
    data = jpeg_bytes((640, 480))
    for draft in (None, 0, 256, 400):
        np.testing.assert_array_equal(np.asarray(load_rgb(data, draft=draft)), np.asarray(reference(data)))


def test_draft_pixels_are_close_to_a_full_decode_resized():
    data = jpeg_bytes((640, 480))
    drafted = np.asarray(load_rgb(data, draft=224), dtype=np.float32)
    full = np.asarray(reference(data).resize((320, 240), Image.BILINEAR), dtype=np.float32)
    assert np.abs(drafted - full).mean() < 4  # a smooth photo: the scaled IDCT and a resize agree closely


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_draft_keeps_the_exif_orientation(orientation):
    data = jpeg_bytes((640, 480), orientation=orientation)
    drafted, full = load_rgb(data, draft=224), reference(data)
    assert drafted.size == (full.width // 2, full.height // 2)
    # the same picture, the same way up: compare at the drafted size
    close = np.abs(np.asarray(drafted, np.float32) - np.asarray(full.resize(drafted.size, Image.BILINEAR),
                                                                  np.float32)).mean()
    assert close < 4


@pytest.mark.parametrize("mode", ["CMYK", "L"])
def test_draft_of_cmyk_and_grey_jpegs_gives_rgb(mode):
    data = jpeg_bytes((640, 480), mode=mode)
    drafted = load_rgb(data, draft=224)
    assert (drafted.mode, drafted.size) == ("RGB", (320, 240))
    full = reference(data).resize((320, 240), Image.BILINEAR)
    assert np.abs(np.asarray(drafted, np.float32) - np.asarray(full, np.float32)).mean() < 6


def test_draft_leaves_every_other_format_exactly_as_it_was(tmp_path):
    """PNG, GIF (palette), 16-bit grey, RGBA, WebP: the draft argument changes nothing, to the pixel."""
    big = tmp_path / "big"
    big.mkdir()
    photo(4, (640, 480)).save(big / "large.png")
    photo(4, (640, 480)).save(big / "large.webp", quality=80)
    files = [*write_modes(tmp_path / "modes").values(), *write_good(tmp_path / "good").values(),
             *big.iterdir()]
    for path in files:
        full, drafted = load_rgb(path), load_rgb(path, draft=8)
        if Image.open(path).format in ("JPEG", "MPO"):
            assert min(drafted.size) >= 8 and drafted.size[0] * 2 <= full.size[0]
            assert drafted.size[0] / drafted.size[1] == pytest.approx(full.size[0] / full.size[1], rel=0.1)
        else:
            np.testing.assert_array_equal(np.asarray(drafted), np.asarray(full), err_msg=str(path))


def test_draft_refuses_the_same_bad_files(tmp_path):
    from stages.contracts.errors import InputError

    for path in write_bad(tmp_path).values():
        with pytest.raises(InputError) as full:
            load_rgb(path)
        with pytest.raises(InputError) as drafted:
            load_rgb(path, draft=8)
        assert drafted.value.problem.split(" (")[0] == full.value.problem.split(" (")[0], path


def test_resize_side_reads_the_registry_transforms():
    from torchvision import models
    from torchvision import transforms as T

    from stages.embedding.backbones import resize_side

    assert resize_side(T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])) == 256
    assert resize_side(T.Compose([T.Resize((224, 300)), T.ToTensor()])) == 300
    assert resize_side(models.ResNet50_Weights.IMAGENET1K_V1.transforms()) == 256
    assert resize_side(T.Compose([T.CenterCrop(224), T.ToTensor()])) is None  # no resize: pixel scale matters
    assert resize_side(lambda image: image) is None


def test_image_items_draft_only_the_clean_view(tmp_path):
    """The robustness transforms start from the full decode; only the clean view is drafted."""
    from stages.imaging.transforms import Transform
    from stages.shipped.wild import ImageItems

    path = tmp_path / "p.jpg"
    path.write_bytes(jpeg_bytes((640, 480)))
    seen: list[tuple[int, int]] = []

    def preprocess(image):
        import torch

        seen.append(image.size)
        return torch.zeros(3, 2, 2)

    ImageItems([path], ["p"], preprocess, transforms=(Transform.clean, Transform.half), draft=224)[0]
    assert seen == [(320, 240), (320, 240)]  # drafted clean; half of the full 640x480
    seen.clear()
    ImageItems([path], ["p"], preprocess, transforms=(Transform.clean, Transform.blur1), draft=224)[0]
    assert seen == [(320, 240), (640, 480)]
    seen.clear()
    ImageItems([path], ["p"], preprocess, transforms=(Transform.clean,))[0]
    assert seen == [(640, 480)]


def test_detect_decodes_as_the_detector_was_trained(tmp_path):
    """A detector whose caches were drafted records jpeg_decode=draft; detect drafts by default, and a
    --jpeg-decode given overrides it. A full-decode detector records nothing (its id is unchanged)."""
    from stages.imaging.load import JpegDecode
    from stages.shipped.artifact import describe_backbone
    from stages.shipped.rows import score_inputs
    from stages.shipped.wild import Input
    from tests.test_detector_artifact import random_detector
    from tests.tiny_backbone import TinyBackbone

    class Recording(TinyBackbone):
        sizes: list[tuple[int, int]] = []

        def draft_side(self, decode: str) -> int | None:
            return 64 if decode == JpegDecode.draft else None

        def preprocess(self, image):
            self.sizes.append(image.size)
            return super().preprocess(image)

    path = tmp_path / "p.jpg"
    path.write_bytes(jpeg_bytes((640, 480)))
    full = random_detector()
    drafted = random_detector()
    drafted.backbone["jpeg_decode"] = "draft"
    assert (full.jpeg_decode, drafted.jpeg_decode) == ("full", "draft")
    backbone = Recording()
    for detector, decode, size in ((full, None, (640, 480)), (drafted, None, (160, 120)),
                                   (drafted, JpegDecode.full, (640, 480)), (full, JpegDecode.draft, (160, 120))):
        backbone.sizes.clear()
        rows = list(score_inputs(detector, backbone, [Input(str(path))], workers=0, progress=False,
                                 jpeg_decode=decode))
        assert rows[0].error is None and backbone.sizes == [size], (decode, backbone.sizes)
    attrs = {"backbone": "a", "library": "l", "architecture": "x", "weights": "w", "preprocessing": "p", "dim": 3}
    assert "jpeg_decode" not in describe_backbone(attrs)
    assert describe_backbone({**attrs, "jpeg_decode": "draft"})["jpeg_decode"] == "draft"


def test_batch_source_drafts_only_when_asked(tmp_path):
    import pandas as pd

    from stages.embedding.runner import BatchSource

    path = tmp_path / "p.jpg"
    path.write_bytes(jpeg_bytes((640, 480)))
    rows = pd.DataFrame({"id": ["a"], "source": [str(path)], "row": [-1]})
    sizes: list[tuple[int, int]] = []

    def transform(image):
        import torch

        sizes.append(image.size)
        return torch.zeros(3, 2, 2)

    BatchSource(rows, [(0, 0, 1)], transform=transform)[0]
    BatchSource(rows, [(0, 0, 1)], transform=transform, draft=224)[0]
    assert sizes == [(640, 480), (320, 240)]


def test_the_embed_fingerprint_changes_only_with_draft_on():
    from types import SimpleNamespace

    import pandas as pd

    from stages.embedding.runner import Precision, RunConfig, fingerprint

    backbone = SimpleNamespace(spec=SimpleNamespace(as_dict=lambda: {"alias": "a"}), attrs=lambda: {"x": 1})
    rows = pd.DataFrame({"id": ["a"]})
    base = dict(batch_size=2, chunk_size=4, workers=0, precision=Precision.fp32, skip_bad=False)
    off = fingerprint(backbone, rows, kind="images", config=RunConfig(**base), device="cpu")
    assert off == "0aba52e022e0d3a4"  # what the code gave before the option existed
    # the value made before the option existed: caches embedded without draft stay valid
    assert off == fingerprint(backbone, rows, kind="images", config=RunConfig(**base, jpeg_draft=False), device="cpu")
    assert off != fingerprint(backbone, rows, kind="images", config=RunConfig(**base, jpeg_draft=True), device="cpu")


def test_a_path_and_its_bytes_draft_alike(tmp_path):
    data = jpeg_bytes((640, 480))
    path = Path(tmp_path / "x.jpg")
    path.write_bytes(data)
    np.testing.assert_array_equal(np.asarray(load_rgb(path, draft=224)), np.asarray(load_rgb(data, draft=224)))


# -- decoding on the device (embed.jpeg_decode=gpu), run here with torchvision's CPU decoder ----------------
def test_gpu_decodable_takes_rgb_and_grey_jpegs_only(tmp_path):
    from stages.imaging.gpu import gpu_decodable

    assert gpu_decodable(jpeg_bytes((64, 48))) and gpu_decodable(jpeg_bytes((64, 48), mode="L"))
    assert not gpu_decodable(jpeg_bytes((64, 48), mode="CMYK"))
    png = io.BytesIO()
    photo(1, (64, 48)).save(png, format="PNG")
    assert not gpu_decodable(png.getvalue()) and not gpu_decodable(b"not an image")
    assert not gpu_decodable(jpeg_bytes((64, 48)), max_pixels=100)  # the pixel limit holds here too


def test_decode_batch_matches_the_cpu_reader_and_turns_by_exif():
    import torch

    from stages.imaging.gpu import decode_batch

    datas = [jpeg_bytes((64, 48)), jpeg_bytes((64, 48), orientation=6), jpeg_bytes((40, 40), mode="L")]
    decoded = decode_batch(datas, torch.device("cpu"))
    for data, pixels in zip(datas, decoded, strict=True):
        expected = torch.from_numpy(np.array(load_rgb(data))).permute(2, 0, 1)
        assert pixels.shape == expected.shape and pixels.dtype == torch.uint8
        assert (pixels.int() - expected.int()).abs().max() <= 2
    assert decode_batch([b"\xff\xd8 truncated"], torch.device("cpu")) == [None]


def test_tensor_preprocess_is_the_pil_transform_on_tensors():
    import torch
    from torchvision import transforms as T

    from stages.imaging.gpu import tensor_preprocess

    transform = T.Compose([T.Resize(40, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                           T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    image = load_rgb(jpeg_bytes((96, 72)))
    on_tensors = tensor_preprocess(transform)(torch.from_numpy(np.array(image)).permute(2, 0, 1))
    assert on_tensors.shape == (3, 32, 32)
    assert (on_tensors - transform(image)).abs().mean() < 0.02  # rounding of two resize implementations
    assert tensor_preprocess(T.Compose([T.RandomHorizontalFlip(), T.ToTensor()])) is None


def test_embed_decodes_on_the_device_with_a_cpu_fallback(tmp_path, monkeypatch):
    """The embed loop with device decoding (here the CPU device): JPEGs take the device path, a PNG and a
    CMYK JPEG the CPU reader, a truncated JPEG fails on both and is a bad row; embeddings match full decoding
    to rounding and the rows stay in order."""
    import pandas as pd
    import torch
    from accelerate import PartialState
    from torchvision import transforms as T

    import stages.imaging.gpu as gpu
    from stages.contracts.embeddings import read_embeddings
    from stages.embedding import runner
    from stages.embedding.backbones import Backbone, BackboneSpec
    from tests.images import write_truncated

    on_device: list[int] = []
    decode_batch = gpu.decode_batch
    monkeypatch.setattr(gpu, "decode_batch", lambda datas, device: on_device.append(len(datas)) or
                        decode_batch(datas, device))
    files = []
    for k, (name, data) in enumerate([("a.jpg", jpeg_bytes((96, 72), seed=1)),
                                      ("b.jpg", jpeg_bytes((80, 80), mode="CMYK")),
                                      ("c.jpg", jpeg_bytes((72, 96), orientation=8, seed=2))]):
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
        if k == 0:
            photo(5, (70, 50)).save(tmp_path / "d.png")
            files.append(tmp_path / "d.png")
    files.append(write_truncated(tmp_path / "e.jpg"))
    rows = pd.DataFrame({"id": [f"p{k}" for k in range(len(files))], "cluster_id": range(len(files)), "label": 0,
                         "caption_index": -1, "split": "train", "source": [str(f) for f in files], "row": -1,
                         "content": ""})
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    transform = T.Compose([T.Resize(40, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                           T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    backbone = Backbone(BackboneSpec("tiny_device", "timm", "conv", "random"), encoder.eval(), transform, 4)
    out = {}
    for device_decode in (False, True):
        config = runner.RunConfig(batch_size=4, chunk_size=8, workers=0, precision=runner.Precision.fp32,
                                  skip_bad=True, progress=False, device_decode=device_decode)
        out[device_decode] = runner.embed_rows(rows, backbone, tmp_path / f"{device_decode}.h5", kind="images",
                                               attrs={**backbone.attrs(), "image_set": "parents"}, config=config,
                                               state=PartialState(cpu=True))
    assert on_device == [2, 1]  # batch 1: a.jpg and c.jpg (b is CMYK, d a PNG); batch 2: the truncated e.jpg
    assert out[True]["skipped_ids"] == out[False]["skipped_ids"] == ["p4"]
    full, device = read_embeddings(tmp_path / "False.h5"), read_embeddings(tmp_path / "True.h5")
    assert list(device.id) == list(full.id) == ["p0", "p1", "p2", "p3"]
    np.testing.assert_allclose(device.embeddings, full.embeddings, atol=0.02)
