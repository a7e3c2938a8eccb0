"""The Python API (`import parentage`): a detector loaded from its artifact scores paths, PIL images and tensors
alike, and exactly as `parentage detect` does; an embedding cache reads as aligned arrays."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import parentage
from stages import detect
from stages.contracts.embeddings import EmbeddingTable, write_embeddings
from stages.embedding.backbones import BackboneSpec, register
from stages.heads.linear import LinearHead
from stages.shipped.artifact import Detector, describe_backbone, save_detector
from stages.shipped.wild import load_registry_backbone

ALIAS = "tiny_api_clip"
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                             "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, repo_root):
    from stages.embedding.backbones import _registered

    register(BackboneSpec(alias=ALIAS, library="open_clip", architecture="tiny", weights="random", model_cfg=TINY_CLIP))
    root = tmp_path_factory.mktemp("api")
    backbone = load_registry_backbone(ALIAS, repo_root / "stages" / "embedding" / "backbones.yaml")
    rng = np.random.default_rng(0)
    dim = backbone.spec["dim"]
    head = LinearHead(mean=rng.normal(size=dim) * 0.1, scale=rng.uniform(0.5, 2, size=dim), coef=rng.normal(size=dim),
                      intercept=[0.1])
    save_detector(Detector(backbone=describe_backbone(backbone.loaded.attrs()), head=head, threshold=0.2),
                  root / "detector")
    images = []
    for i in range(5):
        pixels = rng.integers(0, 256, size=(40 + 4 * i, 48, 3), dtype=np.uint8)
        images.append(root / f"img{i}.png")
        Image.fromarray(pixels).save(images[-1])
    yield root / "detector", images
    _registered.pop(ALIAS)


def test_the_api_and_parentage_detect_give_the_same_logits(artifact, tmp_path):
    folder, images = artifact
    missing = tmp_path / "missing.png"
    scores = parentage.Detector.load(folder).score([*images, missing])
    assert len(scores) == 6 and scores.errors[-1] == "file not found" and scores.label[-1] == -1
    assert np.isnan(scores.logit[-1]) and all(e is None for e in scores.errors[:-1])

    out = tmp_path / "scores.jsonl"
    result = CliRunner().invoke(detect.app, [*map(str, images), str(missing), "--detector", str(folder), "--out",
                                             str(out), "--format", "jsonl", "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [*map(str, images), str(missing)]
    np.testing.assert_array_equal(scores.logit[:-1], [r["logit"] for r in rows[:-1]])
    assert rows[-1]["logit"] is None and rows[-1]["error"] == "file not found"
    assert [("fake", "real")[1 - int(label)] for label in scores.label[:-1]] == [r["label"] for r in rows[:-1]]
    np.testing.assert_allclose(scores.probability[:-1], [r["score"] for r in rows[:-1]], rtol=1e-12)


def test_paths_pil_images_and_tensors_score_alike_in_any_batch(artifact):
    import torch

    folder, images = artifact
    detector = parentage.Detector.load(folder)
    by_path = detector.score(images, batch_size=2)
    pictures = [Image.open(p).convert("RGB") for p in images]
    by_pil = detector.score(pictures, batch_size=3)
    tensors = [torch.from_numpy(np.array(p)).permute(2, 0, 1) for p in pictures]  # (H, W, 3) -> (3, H, W)
    by_tensor = detector.score([*tensors[:2], tensors[2].float() / 255, *tensors[3:]])
    mixed = detector.score([str(images[0]), pictures[1], tensors[2], images[3], pictures[4]])
    for other in (by_pil, by_tensor, mixed):
        np.testing.assert_allclose(other.logit, by_path.logit, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(other.label, by_path.label)
    stacked = detector.score(torch.stack([tensors[0], tensors[0]]))  # (B, 3, H, W): B images
    np.testing.assert_allclose(stacked.logit, by_path.logit[[0, 0]], rtol=1e-5, atol=1e-5)
    assert detector.score(images[0]).logit.shape == (1,)
    with pytest.raises(TypeError, match="cannot score a int"):
        detector.score([3])


def test_a_missing_detector_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no detector here"):
        parentage.Detector.load(tmp_path / "nothing")


def test_read_embeddings_gives_aligned_arrays(tmp_path):
    rng = np.random.default_rng(0)
    table = EmbeddingTable(rng.normal(size=(3, 4)), ["p0", "c0_0", "c0_1"], [0, 0, 0], [0, 1, 1], [-1, 0, 1],
                           ["train"] * 3, attrs={"backbone": "x", "dim": 4})
    write_embeddings(tmp_path / "set.h5", table)
    cache = parentage.read_embeddings(tmp_path / "set.h5")
    assert len(cache) == 3 and cache.ids.tolist() == ["p0", "c0_0", "c0_1"] and cache.labels.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(cache.embeddings, table.embeddings)
    assert cache.attrs["backbone"] == "x" and cache.caption_index.tolist() == [-1, 0, 1]
    with pytest.raises(FileNotFoundError, match="no embedding cache"):
        parentage.read_embeddings(tmp_path / "none.h5")
