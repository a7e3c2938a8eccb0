"""The detector stage and `parentage detect` end to end: with a tiny random open_clip registered in-process
(fast), and once with the real offline EfficientNet-Lite0 backbone of the registry file (slow)."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stages import detect, detector
from stages.contracts.children import iter_image_bytes, read_manifest
from stages.contracts.clusters import read_clusters
from stages.contracts.embeddings import EmbeddingTable, write_embeddings
from stages.contracts.ids import parent_id
from stages.contracts.io import metric_float
from stages.contracts.labels import FAKE, PARENT_CAPTION_INDEX, REAL
from stages.embedding.backbones import BackboneSpec, register
from stages.shipped.artifact import SPEC_FILE, load_detector
from stages.shipped.wild import ImageItems, embed_items, load_registry_backbone
from tests.fixtures import BOOTSTRAP, write_children, write_clusters
from tests.wild_files import write_wild_folder

BACKBONE = "tiny_clip"
GENERATORS = ("gen_a", "gen_b")
# the generators' registry entries: gen_a has random weights (as the demo's tiny_random), gen_b trained ones
# (gen_c: registered, never generated)
GENERATOR_REGISTRY = {gen: {"model_id": "", "height": 40, "width": 40, "steps": 2, "guidance_scale": 1.0,
                            "random_weights": gen == "gen_a"} for gen in (*GENERATORS, "gen_c")}
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                             "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module", autouse=True)
def tiny_clip():
    from stages.embedding.backbones import _registered

    register(BackboneSpec(alias=BACKBONE, library="open_clip", architecture="tiny", weights="random",
                          model_cfg=TINY_CLIP))
    yield
    _registered.pop(BACKBONE)


def embed_set(backbone, sources: list, ids: list[str], frame, attrs: dict, path: Path) -> None:
    """Write one embedding cache the way the embed stage does: rows in the given order, attrs of the backbone."""
    items = ImageItems(sources, ids, backbone.preprocess)
    vectors = np.stack([r.embeddings[0] for r in embed_items(backbone, items, workers=0, progress=False)])
    write_embeddings(path, EmbeddingTable(vectors, ids, frame["cluster_id"], frame["label"], frame["caption_index"],
                                          frame["split"], attrs=attrs))


def make_pipeline(root: Path, registry: Path, alias: str = BACKBONE) -> tuple[Path, Path]:
    """clusters (9 parents, 3 captions), two generators' children, their embedding caches, the generators'
    registry (generators.yaml) and the select stage's file of the two sets (selection.json)."""
    import pandas as pd
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    (root / "generators.yaml").write_text(yaml.safe_dump(GENERATOR_REGISTRY))

    clusters = write_clusters(root, n_parents=9, n_captions=3, size=(64, 48))
    frame = read_clusters(clusters)
    backbone = load_registry_backbone(alias, registry)
    folder = root / "embeddings" / alias
    attrs = backbone.loaded.attrs()
    parents = pd.DataFrame({"cluster_id": frame["cluster_id"], "label": REAL,
                            "caption_index": PARENT_CAPTION_INDEX, "split": frame["split"]})
    embed_set(backbone, [Path(p) for p in frame["image_path"]], [parent_id(c) for c in frame["cluster_id"]],
              parents, {**attrs, "image_set": "parents"}, folder / "parents.h5")
    for gen in GENERATORS:
        children = write_children(root / "children" / gen, frame, generator=gen, size=(40, 40))
        manifest = read_manifest(children)
        data = dict(iter_image_bytes(children))
        rows = manifest.assign(label=FAKE)
        embed_set(backbone, [data[c] for c in manifest["child_id"]], manifest["child_id"].tolist(), rows,
                  {**attrs, "image_set": gen}, folder / f"{gen}.h5")
    from stages.select import run as select

    select(root / "children", list(GENERATORS), root / "generators.yaml", root / "selection.json", progress=False)
    return root, clusters


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, repo_root):
    return make_pipeline(tmp_path_factory.mktemp("pipeline"), repo_root / "stages" / "embedding" / "backbones.yaml")


def run_stage(root: Path, clusters: Path, repo_root: Path, *extra: str, alias: str = BACKBONE,
              transforms: tuple[str, ...] = ("jpeg95", "jpeg75", "jpeg50", "half", "blur1", "crop")):
    args = ["--backbone", alias, *[a for g in GENERATORS for a in ("--generators", g)], "--head", "logreg",
            *[a for t in transforms for a in ("--transforms", t)], "--seed", "0", *BOOTSTRAP, "--batch-size", "32",
            "--device", "cpu", "--registry", str(repo_root / "stages" / "embedding" / "backbones.yaml"),
            "--selection", str(root / "selection.json"), "--embeddings", str(root / "embeddings" / alias),
            "--clusters", str(clusters), "--children", str(root / "children"), "--out", str(root / "detector"),
            "--metrics", str(root / "metrics.json"), "--robustness", str(root / "robustness.csv"),
            "--workers", "0", *extra]
    return CliRunner().invoke(detector.app, args)


@pytest.fixture(scope="module")
def trained(pipeline, repo_root):
    root, clusters = pipeline
    result = run_stage(root, clusters, repo_root)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root


def test_stage_writes_artifact_metrics_and_robustness(trained):
    shipped = load_detector(trained / "detector")
    assert shipped.backbone["alias"] == BACKBONE and shipped.backbone["dim"] == TINY_CLIP["embed_dim"]
    assert shipped.trained_on["generators"] == list(GENERATORS)
    assert shipped.trained_on["random_weight_generators"] == ["gen_a"]
    assert shipped.caveat == "trained on random-weight backbone tiny_clip and random-weight generators gen_a"
    assert shipped.trained_on["counts"]["train"] == {"real": 3, "fake": 18}
    metrics = json.loads((trained / "metrics.json").read_text())
    for split in ("val", "test"):
        assert set(metrics[split]) == {*GENERATORS, "all"}
        for values in metrics[split].values():
            assert set(values) >= {"real_accuracy", "fake_accuracy", "overall_accuracy", "full_cluster_accuracy",
                                   "auc", "ap"}
        assert metrics[split]["all"]["count"] == 3 + 2 * 9
    # the test images read again through the registry's backbone give the cached embeddings back
    assert metrics["checks"]["clean_embedding_within_tolerance"] == 1
    rows = list(csv.DictReader((trained / "robustness.csv").open()))
    assert {r["transform"] for r in rows} == {"clean", "jpeg95", "jpeg75", "jpeg50", "half", "blur1", "crop"}
    assert len(rows) == 7 * 3
    clean = next(r for r in rows if r["transform"] == "clean" and r["generator"] == "all")
    assert metric_float(float(clean["overall_accuracy"])) == metrics["test"]["all"]["overall_accuracy"]


def test_stage_is_deterministic(pipeline, trained, repo_root, tmp_path):
    root, clusters = pipeline
    first = json.loads((trained / "detector" / SPEC_FILE).read_text())
    again = tmp_path / "again"
    again.mkdir()
    for name in ("embeddings", "children", "selection.json"):
        (again / name).symlink_to(root / name)
    result = run_stage(again, clusters, repo_root)
    assert result.exit_code == 0, result.output
    assert json.loads((again / "detector" / SPEC_FILE).read_text())["id"] == first["id"]
    assert (again / "robustness.csv").read_text() == (trained / "robustness.csv").read_text()


def test_stage_errors_name_the_missing_cache(pipeline, repo_root, tmp_path):
    root, clusters = pipeline
    # a set the selection does not hold: the consumer's list and its select instance's disagree
    result = run_stage(root, clusters, repo_root, "--generators", "gen_c")
    assert result.exit_code == 2 and "does not select ['gen_c']" in result.output
    fake = {"bytes": 1, "files": 1, "sha256": "0" * 64}
    selection = tmp_path / "selection.json"
    names = [*GENERATORS, "gen_c", "nope"]  # run_stage passes GENERATORS, the extra option adds one
    selection.write_text(json.dumps({"caches": {}, "registry": {name: None for name in names},
                                     "sets": {name: fake for name in names}}))
    result = run_stage(root, clusters, repo_root, "--generators", "gen_c", "--selection", str(selection))
    assert result.exit_code == 2 and "gen_c.h5" in result.output
    # a name without a registry entry may be an imported set (import_children): its missing cache is named (the
    # check stage names a typo in model.generators before anything runs)
    result = run_stage(root, clusters, repo_root, "--generators", "nope", "--selection", str(selection))
    assert result.exit_code == 2 and "nope.h5: no embedding cache here" in result.output


def detect_cli(*args: str):
    return CliRunner().invoke(detect.app, ["--workers", "0", "--no-progress", *args])


def test_detect_cli_on_a_mixed_folder(trained, tmp_path):
    good, bad = write_wild_folder(tmp_path / "wild")
    out = tmp_path / "scores.jsonl"
    result = detect_cli(str(tmp_path / "wild"), "--detector", str(trained / "detector"), "--out", str(out),
                        "--format", "jsonl")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # notes.txt inside the folder is not an image: skipped and counted, not a row
    assert len(records) == len(good) + len(bad) - 1
    assert str(bad["notes.txt"]) not in {r["path"] for r in records}
    called = {name: sum(r["label"] == name for r in records) for name in ("real", "fake")}
    assert (f"detect: {len(good)} scored ({called['real']} real, {called['fake']} fake), {len(bad) - 1} failed, "
            "1 skipped (1 not an image)") in result.stderr
    assert f"skipped {bad['notes.txt']}: not an image" in result.stderr
    scored = {r["path"] for r in records if r["error"] is None}
    assert scored == {str(p) for p in good.values()}
    assert {r["detector"] for r in records} == {load_detector(trained / "detector").id}
    # the detector says what it is: in every row, and once on stderr
    caveat = load_detector(trained / "detector").caveat
    assert caveat and {r["caveat"] for r in records} == {caveat}
    assert result.stderr.count("warning: ") == 1 and caveat in result.stderr
    assert "say nothing about real generators" in result.stderr


def test_a_detector_of_trained_weights_has_no_caveat(trained, tmp_path):
    """Neither the backbone nor a training generator random: an empty caveat column and no warning."""
    from stages.shipped.artifact import save_detector

    shipped = load_detector(trained / "detector")
    shipped.trained_on["random_weight_generators"] = []
    shipped.backbone["random_weights"] = False  # as recorded for a trained backbone (neither is in the id)
    save_detector(shipped, tmp_path / "detector")
    assert load_detector(tmp_path / "detector").caveat == ""
    photo = write_wild_folder(tmp_path / "wild")[0]["photo.jpg"]
    result = detect_cli(str(photo), "--detector", str(tmp_path / "detector"))
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    [row] = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row["caveat"] == "" and row["label"] in ("real", "fake")


def test_detect_cli_stdout_csv_and_exit_codes(trained, tmp_path):
    good, bad = write_wild_folder(tmp_path / "wild")
    result = detect_cli(str(good["photo.jpg"]), str(bad["notes.txt"]), "--detector", str(trained / "detector"))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["path"] for r in rows] == [str(good["photo.jpg"]), str(bad["notes.txt"])]
    assert rows[0]["label"] in ("real", "fake") and rows[1]["error"]
    # every input failed: exit 1, rows still written
    result = detect_cli(str(tmp_path / "wild" / "nested" / "deeper"), "--detector", str(trained / "detector"))
    assert result.exit_code == 1
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == len(bad) - 1  # notes.txt skipped
    # usage errors: exit 2, with no rows
    assert detect_cli("--detector", str(trained / "detector")).exit_code == 2
    missing = detect_cli(str(good["photo.jpg"]), "--detector", str(tmp_path / "none"))
    assert missing.exit_code == 2 and "no detector here" in missing.output


def test_detect_refuses_a_detector_of_another_backbone(trained, tmp_path):
    from stages.embedding.backbones import _registered

    good, _ = write_wild_folder(tmp_path / "wild")
    register(BackboneSpec(alias=BACKBONE, library="open_clip", architecture="tiny", weights="random", seed=1,
                          model_cfg=TINY_CLIP))
    try:
        result = detect_cli(str(good["photo.jpg"]), "--detector", str(trained / "detector"))
    finally:
        register(BackboneSpec(alias=BACKBONE, library="open_clip", architecture="tiny", weights="random",
                              model_cfg=TINY_CLIP))
    assert BACKBONE in _registered
    assert result.exit_code == 2, result.output
    assert "cannot score" in result.output and "seed: detector 0, the registry's backbone 1" in result.output


@pytest.mark.slow
def test_efficientnet_lite0_end_to_end(tmp_path, repo_root, wild_generated):
    """The real offline backbone: train, then detect on real generated files from the wild (PNG and JPEG)."""
    registry = repo_root / "stages" / "embedding" / "backbones.yaml"
    root, clusters = make_pipeline(tmp_path, registry, alias="efficientnet_lite0")
    result = run_stage(root, clusters, repo_root, alias="efficientnet_lite0", transforms=("jpeg50",))
    assert result.exit_code == 0, result.output + repr(result.exception)
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["checks"]["clean_embedding_within_tolerance"] == 1
    shipped = load_detector(root / "detector")
    assert shipped.backbone["dim"] == 1280 and shipped.backbone["weights"] == "package"
    out = tmp_path / "wild.csv"
    result = detect_cli(str(wild_generated), "--detector", str(root / "detector"), "--out", str(out),
                        "--registry", str(registry))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    images = [p for p in wild_generated.iterdir() if p.suffix in (".png", ".jpg")]
    assert len(rows) == len(images), "the folder's README and TSV are skipped, not rows"
    assert sum(r["error"] == "" for r in rows) == len(images), "every real image is scored"
    assert all(0 <= float(r["score"]) <= 1 for r in rows if not r["error"])


def test_detect_device_auto_works_and_bad_devices_are_named(trained, tmp_path):
    good, _ = write_wild_folder(tmp_path / "wild")
    result = detect_cli(str(good["photo.jpg"]), "--detector", str(trained / "detector"), "--device", "auto")
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 1
    bad = detect_cli(str(good["photo.jpg"]), "--detector", str(trained / "detector"), "--device", "tpu9")
    assert bad.exit_code == 2 and "--device" in bad.output and "tpu9" in bad.output and "Traceback" not in bad.output
