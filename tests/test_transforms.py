import numpy as np
import pytest

from stages.imaging.transforms import CROP_SIDE, Transform, apply_transform
from tests.images import photo


def test_each_transform_does_what_it_says():
    image = photo(3, (100, 60))
    assert apply_transform("clean", image) is image
    assert apply_transform(Transform.half, image).size == (50, 30)
    for seed in range(5):
        width, height = apply_transform(Transform.crop, image, seed=seed).size
        assert 100 * CROP_SIDE[0] <= width <= 100 and 60 * CROP_SIDE[0] <= height <= 60
    pixels = np.asarray(image, dtype=np.int16)
    gaps = {}
    for name in ("jpeg95", "jpeg75", "jpeg50", "blur1"):
        out = apply_transform(name, image)
        assert out.size == image.size and out.mode == "RGB"
        gaps[name] = np.abs(np.asarray(out, dtype=np.int16) - pixels).mean()
        assert gaps[name] > 0, name
    assert gaps["jpeg95"] < gaps["jpeg75"] < gaps["jpeg50"], "lower quality, larger error"


def test_random_crop_is_seeded():
    image = photo(4, (120, 90))
    same = [np.asarray(apply_transform("crop", image, seed=7)) for _ in range(2)]
    assert np.array_equal(*same)
    others = {apply_transform("crop", image, seed=s).tobytes() for s in range(10)}
    assert len(others) > 1, "different seeds place the crop differently"


def test_unknown_transform_lists_the_known_ones():
    with pytest.raises(ValueError, match="jpeg95"):
        apply_transform("sharpen", photo(1))
