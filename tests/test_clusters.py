import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stages import clusters
from stages.clusters import Source
from stages.contracts.clusters import read_clusters
from stages.contracts.errors import InputError
from stages.sources.table import assign_splits
from tests.images import photo, write_modes, write_truncated

N = 5


def coco_json(path: Path, images: list[tuple[int, str]], captions: dict[int, list[str]]) -> Path:
    annotations, next_id = [], 100
    for image_id, texts in captions.items():
        for text in texts:
            # annotation ids deliberately out of caption order: the reader sorts by annotation id
            annotations.append({"id": next_id, "image_id": image_id, "caption": text})
            next_id -= 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": [{"id": i, "file_name": f} for i, f in images],
                                "annotations": annotations}))
    return path


def five(tag: str, n: int = N) -> list[str]:
    return [f"{tag} caption {k}" for k in range(n)]


def write_coco(root: Path) -> Path:
    """A COCO folder at `root`: ten photographs in val2017/ with five captions each."""
    (root / "val2017").mkdir(parents=True)
    for i in range(1, 11):
        photo(i).save(root / "val2017" / f"{i:012d}.jpg")
    coco_json(root / "annotations" / "captions_val2017.json",
              [(i, f"{i:012d}.jpg") for i in range(1, 11)], {i: five(str(i)) for i in range(1, 11)})
    return root


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    return write_coco(tmp_path / "coco")


# the values of params.yaml's clusters section, which the stage receives from dvc.yaml
SETTINGS = {"captions_per_parent": N, "coco_captions": "annotations/captions_*.json", "karpathy_split": None,
            "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0, "skip_bad": False}


def run(source: Source, input_path: Path, out: Path, metrics: Path, **overrides) -> dict:
    """The stage on a source whose images lie under its folder (COCO) or the manifest's, unless `images` says."""
    images = overrides.pop("images", input_path if input_path.is_dir() else input_path.parent)
    return clusters.run(source, input_path, images, out, metrics, progress=False, **{**SETTINGS, **overrides})


def run_coco(root: Path, tmp_path: Path, **overrides) -> dict:
    return run(Source.coco, root, tmp_path / "clusters.parquet", tmp_path / "metrics.json", **overrides)


def test_demo_source(tmp_path, repo_root, monkeypatch):
    """The demo's parents are read from the demo_parents stage's copy in the workspace, and the table stores
    them relative to it: nothing points into the virtual environment (`dvc exp run --temp` would lack it)."""
    import sys

    from stages import demo_parents

    captions = repo_root / "stages" / "sources" / "demo" / "captions.json"
    monkeypatch.chdir(tmp_path)
    copies = demo_parents.run(captions, Path("data/demo_parents"))
    assert len(copies) == 13 and all(p.is_file() for p in copies)
    result = run(Source.demo, captions.parent, Path("c.parquet"), Path("m.json"), images=Path("data/demo_parents"))
    frame = read_clusters(tmp_path / "c.parquet")
    assert len(frame) >= 10 and result["parents"]["total"] == len(frame)
    assert (frame["captions"].map(len) == N).all()
    colour = frame[frame["mode"] == "RGB"]
    assert len(colour) >= 10, "the demo promises at least 10 colour photographs"
    assert all(Path(p).is_file() for p in frame["image_path"])
    assert all(p.startswith("data/demo_parents/") for p in frame["image_path"]), frame["image_path"].tolist()
    assert not any(sys.prefix in p or "site-packages" in p for p in frame["image_path"])
    assert set(frame["split"]) == {"train", "val", "test"}
    assert json.loads((tmp_path / "m.json").read_text())["skipped"]["total"] == 0


def test_parquet_schema(tmp_path, coco_dir):
    run_coco(coco_dir, tmp_path)
    table = pq.read_table(tmp_path / "clusters.parquet")
    types = {f.name: str(f.type) for f in table.schema}
    assert types == {"cluster_id": "int64", "split": "string", "image_path": "string", "source_id": "string",
                     "captions": "list<element: string>", "mode": "string", "format": "string",
                     "width": "int32", "height": "int32", "exif_rotated": "bool",
                     "image_sha256": "string"}
    assert table.schema.metadata[b"captions_per_parent"] == b"5"
    assert table.column("cluster_id").to_pylist() == list(range(10))
    # sorted numerically by source id, not as strings ("10" after "9")
    assert table.column("source_id").to_pylist() == [str(i) for i in range(1, 11)]


def test_extra_captions_keep_first_n_by_annotation_id(tmp_path, coco_dir):
    path = coco_dir / "annotations" / "captions_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"] = [{"id": 1000 + k, "image_id": 1, "caption": f"seven {k}"} for k in range(7)] + [
        a for a in data["annotations"] if a["image_id"] != 1]
    path.write_text(json.dumps(data))
    result = run_coco(coco_dir, tmp_path)
    frame = read_clusters(tmp_path / "clusters.parquet")
    assert frame.loc[frame.source_id == "1", "captions"].iloc[0] == [f"seven {k}" for k in range(5)]
    assert result["extra_captions_dropped"] == 2
    # annotation ids run backwards in coco_json, so the kept order is the reverse of insertion order
    assert frame.loc[frame.source_id == "2", "captions"].iloc[0] == five("2")[::-1]


def test_too_few_captions_errors_or_counts(tmp_path, coco_dir):
    path = coco_dir / "annotations" / "captions_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"] = [a for a in data["annotations"] if not (a["image_id"] == 3 and a["caption"].endswith("4"))]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"image 3 .*has 4 captions; 5 are needed"):
        run_coco(coco_dir, tmp_path)
    assert not (tmp_path / "clusters.parquet").exists(), "no output after an error"
    result = run_coco(coco_dir, tmp_path, skip_bad=True)
    assert result["skipped"]["too_few_captions"] == 1 and result["parents"]["total"] == 9
    assert run_coco(coco_dir, tmp_path, captions_per_parent=4)["parents"]["total"] == 10


@pytest.mark.parametrize("breakage, reason, message", [
    ("missing", "missing_file", "does not exist"),
    ("truncated", "unreadable_image", "truncated or corrupt"),
    ("text", "unreadable_image", "not a readable image"),
    ("empty_caption", "empty_caption", "caption 2 is empty"),
    ("duplicate", "duplicate_id", "duplicate image id 4"),
])
def test_bad_input_errors_or_counts(tmp_path, coco_dir, breakage, reason, message):
    path = coco_dir / "annotations" / "captions_val2017.json"
    data = json.loads(path.read_text())
    image = coco_dir / "val2017" / f"{4:012d}.jpg"
    if breakage == "missing":
        image.unlink()
    elif breakage == "truncated":
        write_truncated(image)
    elif breakage == "text":
        image.write_text("not an image at all")
    elif breakage == "empty_caption":
        next(a for a in sorted(data["annotations"], key=lambda a: a["id"]) if a["image_id"] == 4)
        ordered = sorted((a for a in data["annotations"] if a["image_id"] == 4), key=lambda a: a["id"])
        ordered[2]["caption"] = "   "
    elif breakage == "duplicate":
        data["images"].append({"id": 4, "file_name": f"{4:012d}.jpg"})
    path.write_text(json.dumps(data))

    with pytest.raises(InputError, match=message) as error:
        run_coco(coco_dir, tmp_path)
    assert "4" in str(error.value), "the error names the image"
    result = run_coco(coco_dir, tmp_path, skip_bad=True)
    assert result["skipped"][reason] == 1 and result["skipped"]["total"] == 1
    expected = 10 if breakage == "duplicate" else 9  # a duplicate entry is dropped, its first entry kept
    assert result["parents"]["total"] == expected


def test_modes_are_valid_parents(tmp_path):
    paths = write_modes(tmp_path / "images")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": k, "path": f"images/{p.name}", "captions": five(k)}) + "\n"
                                for k, p in paths.items()))
    run(Source.manifest, manifest, tmp_path / "c.parquet", tmp_path / "m.json")
    frame = read_clusters(tmp_path / "c.parquet").set_index("source_id")
    assert frame.loc["grey", "mode"] == "L" and frame.loc["cmyk", "mode"] == "CMYK"
    assert frame.loc["rgba", "mode"] == "RGBA" and frame.loc["palette", "mode"] == "P"
    assert frame.loc["grey16", "mode"].startswith("I")
    assert frame.loc["rotated", ["width", "height", "exif_rotated"]].tolist() == [32, 48, True]
    assert frame.loc["grey", ["width", "height", "exif_rotated"]].tolist() == [48, 32, False]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_formats(tmp_path, fmt):
    import pandas as pd

    (tmp_path / "img").mkdir()
    rows = []
    for i in range(6):
        photo(i).save(tmp_path / "img" / f"{i}.jpg")
        rows.append({"image_path": f"img/{i}.jpg", **{f"caption_{k + 1}": f"photo {i} text {k}" for k in range(N)}})
    frame = pd.DataFrame(rows)
    manifest = tmp_path / f"manifest.{fmt}"
    if fmt == "csv":
        frame.to_csv(manifest, index=False)
    elif fmt == "jsonl":
        frame.to_json(manifest, orient="records", lines=True)
    else:
        frame.to_parquet(manifest)
    run(Source.manifest, manifest, tmp_path / "c.parquet", tmp_path / "m.json")
    out = read_clusters(tmp_path / "c.parquet")
    assert len(out) == 6
    assert out.loc[out.source_id == "img/3.jpg", "captions"].iloc[0] == [f"photo 3 text {k}" for k in range(N)]
    assert Path(out["image_path"].iloc[0]).is_file()


def test_manifest_errors_name_the_problem(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("file_path,text\nx.jpg,hello\n")
    with pytest.raises(InputError, match="no image path column"):
        run(Source.manifest, bad, tmp_path / "c.parquet", tmp_path / "m.json")
    bad.write_text("path,caption_1\nx.jpg,hello\nx.jpg,again\n")
    with pytest.raises(InputError, match="row 2: duplicate id 'x.jpg'"):
        run(Source.manifest, bad, tmp_path / "c.parquet", tmp_path / "m.json")


def test_split_deterministic_per_seed():
    ids = [str(i) for i in range(200)]
    a = assign_splits(ids, val_fraction=0.2, test_fraction=0.1, seed=0)
    assert a == assign_splits(ids, val_fraction=0.2, test_fraction=0.1, seed=0)
    assert a != assign_splits(ids, val_fraction=0.2, test_fraction=0.1, seed=1)
    assert (a.count("train"), a.count("val"), a.count("test")) == (140, 40, 20)
    # the split of an id does not depend on the order the source lists ids in
    shuffled = ids[::-1]
    b = dict(zip(shuffled, assign_splits(shuffled, val_fraction=0.2, test_fraction=0.1, seed=0), strict=True))
    assert b == dict(zip(ids, a, strict=True))


def test_karpathy_split_decides(tmp_path, coco_dir):
    karpathy = tmp_path / "dataset_coco.json"
    splits = ["train", "restval", "val", "test"]
    karpathy.write_text(json.dumps({"images": [{"cocoid": i, "split": splits[i % 4]} for i in range(1, 10)]}))
    with pytest.raises(InputError, match="not listed in"):
        run_coco(coco_dir, tmp_path, karpathy_split=karpathy)
    result = run_coco(coco_dir, tmp_path, karpathy_split=karpathy, skip_bad=True)
    assert result["skipped"]["not_in_split_file"] == 1  # image 10
    frame = read_clusters(tmp_path / "clusters.parquet").set_index("source_id")
    assert frame.loc["1", "split"] == "train" and frame.loc["2", "split"] == "val"
    assert frame.loc["3", "split"] == "test" and frame.loc["4", "split"] == "train"  # restval -> train


def test_cli_reports_bad_input_without_traceback(tmp_path, coco_dir):
    (coco_dir / "val2017" / f"{2:012d}.jpg").unlink()
    runner = CliRunner()
    args = ["--source", "coco", "--input", str(coco_dir), "--images", str(coco_dir),
            "--coco-captions", "annotations/captions_*.json",
            "--karpathy-split", "", "--captions-per-parent", "5", "--val-fraction", "0.2", "--test-fraction", "0.2",
            "--seed", "0", "--on-bad", "error", "--out", str(tmp_path / "c.parquet"),
            "--metrics", str(tmp_path / "m.json")]
    result = runner.invoke(clusters.app, args)
    assert result.exit_code == 2
    assert "000000000002.jpg does not exist" in result.output
    result = runner.invoke(clusters.app, [*args, "--on-bad", "skip"])
    assert result.exit_code == 0, result.output
    assert "9 parents" in result.output and "1 skipped" in result.output
    assert "skipped missing_file:" in result.output and "000000000002.jpg does not exist" in result.output
    assert json.loads((tmp_path / "m.json").read_text())["skipped"]["missing_file"] == 1


@pytest.mark.shared
def test_coco_mini(tmp_path, coco_mini):
    result = run_coco(coco_mini, tmp_path, coco_captions="annotations/captions_*2017.json")
    assert result["parents"]["total"] == 239 and result["skipped"]["total"] == 0
    frame = read_clusters(tmp_path / "clusters.parquet")
    assert (frame["captions"].map(len) == 5).all()


@pytest.mark.shared
def test_coco_mini_all5000_with_extra_captions_and_missing_images(tmp_path, coco_mini):
    glob = "annotations/captions_val2017_all5000.json"
    with pytest.raises(InputError, match="does not exist"):
        run_coco(coco_mini, tmp_path, coco_captions=glob)
    result = run_coco(coco_mini, tmp_path, coco_captions=glob, skip_bad=True)
    assert result["skipped"]["missing_file"] == 4841
    assert result["parents"]["total"] == 159  # the val2017 photos on disk
    assert result["extra_captions_dropped"] > 0  # some images have 6 or 7 captions
    frame = read_clusters(tmp_path / "clusters.parquet")
    assert (frame["captions"].map(len) == 5).all()


def test_image_paths_below_the_working_directory_are_stored_relative(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    photo(0).save(tmp_path / "img" / "a.jpg")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": str(tmp_path / "img" / "a.jpg"), "captions": five("a")}) + "\n")
    monkeypatch.chdir(tmp_path)
    run(Source.manifest, manifest, tmp_path / "c.parquet", tmp_path / "m.json")
    assert read_clusters(tmp_path / "c.parquet")["image_path"].tolist() == ["img/a.jpg"]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)  # the image does not lie below this folder: kept absolute
    run(Source.manifest, manifest, tmp_path / "c.parquet", tmp_path / "m.json")
    assert read_clusters(tmp_path / "c.parquet")["image_path"].tolist() == [str(tmp_path / "img" / "a.jpg")]


def test_the_table_records_each_images_content(tmp_path):
    """Replacing an image under the same name changes the table (its image_sha256), so DVC sees a changed
    clusters table and every embedding downstream goes stale."""
    import hashlib

    (tmp_path / "img").mkdir()
    rows = []
    for i in range(4):
        photo(i).save(tmp_path / "img" / f"{i}.jpg")
        rows.append({"image_path": f"img/{i}.jpg", **{f"caption_{k + 1}": f"photo {i} text {k}" for k in range(N)}})
    manifest = tmp_path / "manifest.csv"
    import pandas as pd

    pd.DataFrame(rows).to_csv(manifest, index=False)
    run(Source.manifest, manifest, tmp_path / "before.parquet", tmp_path / "m.json")
    photo(99).save(tmp_path / "img" / "2.jpg")
    run(Source.manifest, manifest, tmp_path / "after.parquet", tmp_path / "m.json")
    before, after = read_clusters(tmp_path / "before.parquet"), read_clusters(tmp_path / "after.parquet")
    assert after["image_sha256"].tolist()[2] == hashlib.sha256((tmp_path / "img" / "2.jpg").read_bytes()).hexdigest()
    assert (before["image_sha256"] != after["image_sha256"]).tolist() == [False, False, True, False]


def test_an_image_outside_the_image_folder_is_named(tmp_path):
    """clusters.images is what DVC watches: an image elsewhere (here reached with `..`) could change unseen."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "other").mkdir()
    photo(0).save(tmp_path / "photos" / "a.jpg")
    photo(1).save(tmp_path / "other" / "b.jpg")
    manifest = tmp_path / "photos" / "m.jsonl"
    manifest.write_text(json.dumps({"path": "a.jpg", "captions": five("a")}) + "\n"
                        + json.dumps({"path": "../other/b.jpg", "captions": five("b")}) + "\n")
    with pytest.raises(InputError, match=r"row 2 .*other/b.jpg is outside the image folder .*photos "
                                         r"\(clusters.images\)"):
        run(Source.manifest, manifest, tmp_path / "c.parquet", tmp_path / "m.json", images=tmp_path / "photos")
    assert not (tmp_path / "c.parquet").exists()
    with pytest.raises(InputError, match=r"nowhere: the image folder does not exist \(clusters.images\)"):
        run(Source.manifest, manifest, tmp_path / "c.parquet", tmp_path / "m.json", images=tmp_path / "nowhere")
    run(Source.manifest, manifest, tmp_path / "c.parquet", tmp_path / "m.json", images=tmp_path)


@pytest.mark.slow
def test_dvc_sees_a_replaced_added_or_deleted_parent_image(dvc_repo):
    """With a manifest source the images are not the manifest: the image folder (clusters.images) is a
    dependency, so replacing, adding or deleting one image marks the clusters stage changed."""
    import pandas as pd
    import yaml

    repo = dvc_repo.path
    (repo / "photos").mkdir()
    for i in range(4):
        photo(i).save(repo / "photos" / f"{i}.jpg")
    pd.DataFrame([{"image_path": f"photos/{i}.jpg", **{f"caption_{k + 1}": f"photo {i} text {k}" for k in range(N)}}
                  for i in range(4)]).to_csv(repo / "manifest.csv", index=False)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["clusters"].update(source="manifest", input="manifest.csv", images="photos")
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    dvc_repo("dvc", "repro", "clusters")
    assert json.loads(dvc_repo("dvc", "status", "--json", "clusters")) == {}
    before = read_clusters(repo / "data" / "clusters.parquet")["image_sha256"].tolist()

    def changed() -> bool:
        return "clusters" in json.loads(dvc_repo("dvc", "status", "--json", "clusters"))

    photo(99).save(repo / "photos" / "2.jpg")  # replaced under the same name
    assert changed()
    dvc_repo("dvc", "repro", "clusters")
    after = read_clusters(repo / "data" / "clusters.parquet")["image_sha256"].tolist()
    assert [a != b for a, b in zip(before, after, strict=True)] == [False, False, True, False]
    assert not changed()
    photo(5).save(repo / "photos" / "5.jpg")  # added
    assert changed()
    dvc_repo("dvc", "repro", "clusters")
    (repo / "photos" / "5.jpg").unlink()  # deleted
    assert changed()
