"""benchmark: external labelled sets of every layout read as what they hold, the TPR at a low FPR against a hand
computation, bad files counted (never a crash), bad sets and options refused by name (exit 2), the command end to
end with a tiny shipped detector and a tiny CoDE model, the demo's set built from the pipeline's test split, and
wild-generated scored beside COCO-mini photographs."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stages import benchmark, benchmark_demo
from stages.code.heads import SCALES
from stages.contracts.errors import InputError, Skips
from stages.contracts.io import MARKER, PLOT_DIGITS
from stages.contracts.labels import FAKE, REAL
from stages.external.scoring import (
    GRID_COLUMNS,
    OVERALL,
    SHIPPED,
    Duplicates,
    Scorer,
    counts,
    groups_of,
    results,
    score_entries,
)
from stages.external.sets import SHARED, Entry, Layout, read_set
from stages.heads.metrics import TPR_AT_FPR, classification_metrics, tpr_at_fpr
from stages.imaging.transforms import Transform
from stages.uncertainty.bootstrap import Bootstrap
from tests.fixtures import BOOTSTRAP
from tests.images import photo, write_truncated
from tests.test_detector_artifact import random_detector
from tests.tiny_backbone import TinyBackbone

torch.set_num_threads(1)


def images(folder: Path, n: int, seed: int = 0, suffix: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{seed + i}{suffix}"
        photo(seed + i, (24, 20)).save(path)
        paths.append(path)
    return paths


def tally(entries: list[Entry]) -> dict[tuple[str, str], int]:
    """(generator, real | fake) -> number of entries."""
    found: dict[tuple[str, str], int] = {}
    for e in entries:
        key = (e.generator, "real" if e.label == REAL else "fake")
        found[key] = found.get(key, 0) + 1
    return found


def shipped() -> Scorer:
    detector = random_detector()
    return Scorer(SHIPPED, TinyBackbone(), detector.decision, detector.threshold)


# ------------------------------------------------------------------------------------------------ layouts
def test_forensynths_layout_per_generator_with_nested_categories(tmp_path):
    root = tmp_path / "cnn_synth"
    images(root / "biggan" / "0_real", 3)
    images(root / "biggan" / "1_fake", 4, seed=10)
    images(root / "progan" / "airplane" / "0_real", 2, seed=20)
    images(root / "progan" / "airplane" / "1_fake", 2, seed=30)
    images(root / "progan" / "cat" / "0_real", 1, seed=40)
    images(root / "progan" / "cat" / "1_fake", 3, seed=50)
    entries = read_set(Layout.forensynths, root)
    assert tally(entries) == {("biggan", "real"): 3, ("biggan", "fake"): 4, ("progan", "real"): 3,
                              ("progan", "fake"): 5}
    groups = groups_of(entries)
    assert {g: int(m.sum()) for g, m in groups.items()} == {"biggan": 7, "progan": 8, OVERALL: 15}


def test_flat_forensynths_layout_is_one_generator_named_after_the_root(tmp_path):
    root = tmp_path / "whichfaceisreal"
    images(root / "0_real", 2)
    images(root / "1_fake", 3, seed=5)
    assert tally(read_set(Layout.forensynths, root)) == {("whichfaceisreal", "real"): 2,
                                                        ("whichfaceisreal", "fake"): 3}


def test_genimage_layout_with_and_without_splits(tmp_path):
    root = tmp_path / "genimage"
    images(root / "midjourney" / "nature", 2)
    images(root / "midjourney" / "ai", 3, seed=10)
    for split, n in (("train", 4), ("val", 2)):
        images(root / "adm" / split / "nature", n, seed=100 + n)
        images(root / "adm" / split / "ai", n + 1, seed=200 + n)
    assert tally(read_set(Layout.genimage, root)) == {("midjourney", "real"): 2, ("midjourney", "fake"): 3,
                                                     ("adm", "real"): 6, ("adm", "fake"): 8}
    assert tally(read_set(Layout.genimage, root, split="val")) == {("adm", "real"): 2, ("adm", "fake"): 3}


def test_real_fake_layout_shares_its_reals_and_names_fakes_by_subfolder(tmp_path):
    root = tmp_path / "mine"
    images(root / "real", 3)
    images(root / "fake" / "sdxl", 2, seed=10)
    images(root / "fake" / "flux", 4, seed=20)
    images(root / "fake", 1, seed=30)  # directly in fake/: named after the root
    entries = read_set(Layout.real_fake, root)
    assert tally(entries) == {(SHARED, "real"): 3, ("sdxl", "fake"): 2, ("flux", "fake"): 4, ("mine", "fake"): 1}
    groups = groups_of(entries)
    assert {g: int(m.sum()) for g, m in groups.items()} == {"flux": 7, "mine": 4, "sdxl": 5, OVERALL: 10}


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_manifest_layout_labels_generators_and_shared_reals(tmp_path, suffix):
    root = tmp_path / "set"
    paths = images(root / "img", 6)
    rows = [{"path": "img/0.png", "label": "real", "generator": ""},
            {"path": "img/1.png", "label": "0", "generator": "sd14"},  # a real of sd14's own
            {"path": "img/2.png", "label": "fake", "generator": "sd14"},
            {"path": "img/3.png", "label": "1", "generator": "flux"},
            {"path": str(paths[4]), "label": "AI", "generator": ""},  # absolute; a fake with no generator
            {"path": "img/missing.png", "label": "fake", "generator": "flux"}]
    manifest = root / f"list{suffix}"
    write_manifest(manifest, rows)
    entries = read_set(Layout.manifest, root, manifest=manifest.name)
    assert tally(entries) == {(SHARED, "real"): 1, ("sd14", "real"): 1, ("sd14", "fake"): 1, ("flux", "fake"): 2,
                              ("list", "fake"): 1}
    assert [e.problem for e in entries] == [None] * 5 + ["file not found"]


def write_manifest(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)


def test_manifest_without_label_column_reads_reals_from_kind_or_generator(tmp_path):
    """wild-generated's form: file and generator columns, its real row marked REAL (and kind real)."""
    images(tmp_path, 3)
    write_manifest(tmp_path / "MANIFEST.tsv", [{"file": "0.png", "generator": "REAL", "kind": "real"},
                                               {"file": "1.png", "generator": "FLUX.1-dev", "kind": "txt2img"},
                                               {"file": "2.png", "generator": "SD3.5-Large", "kind": "txt2img"}])
    assert tally(read_set(Layout.manifest, tmp_path, manifest="MANIFEST.tsv")) == {
        (SHARED, "real"): 1, ("FLUX.1-dev", "fake"): 1, ("SD3.5-Large", "fake"): 1}


@pytest.mark.parametrize(("layout", "make", "kwargs", "problem"), [
    (Layout.forensynths, lambda r: images(r / "real", 1), {}, "no folder named 0_real or 1_fake"),
    (Layout.genimage, lambda r: images(r / "g" / "train" / "ai", 1), {"split": "val"}, "with a folder 'val'"),
    (Layout.real_fake, lambda r: images(r / "real", 1), {"manifest": "x.csv"}, "only layout manifest reads one"),
    (Layout.manifest, lambda r: None, {}, "manifest: is empty"),
    (Layout.manifest, lambda r: (r / "m.txt").write_text("x"), {"manifest": "m.txt"}, "unknown manifest type"),
    (Layout.manifest, lambda r: (r / "m.csv").write_text("path,label\na.png,maybe\n"), {"manifest": "m.csv"},
     "line 2: label 'maybe'"),
    (Layout.manifest, lambda r: (r / "m.csv").write_text("path,label\na.png,1\na.png,0\n"), {"manifest": "m.csv"},
     "line 3: names 'a.png' again (first at line 2)"),
    (Layout.manifest, lambda r: (r / "m.csv").write_text("name,label\na.png,1\n"), {"manifest": "m.csv"},
     "has no path column"),
    (Layout.manifest, lambda r: (r / "m.csv").write_text("path\na.png\n"), {"manifest": "m.csv"},
     "has no label column"),
    (Layout.manifest, lambda r: (r / "m.jsonl").write_text('{"path": "a.png", "label": 1}\n[1]\n'),
     {"manifest": "m.jsonl"}, "line 2: holds a list"),
    (Layout.manifest, lambda r: (r / "m.csv").write_text("path,label\n"), {"manifest": "m.csv"}, "holds no rows"),
])
def test_a_bad_set_is_named(tmp_path, layout, make, kwargs, problem):
    root = tmp_path / "set"
    root.mkdir()
    make(root)
    with pytest.raises(InputError, match=re_escape(problem)):
        read_set(layout, root, **kwargs)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_a_missing_root_or_a_file_root_is_named(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_set(Layout.real_fake, tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        read_set(Layout.real_fake, tmp_path / "file")


# ------------------------------------------------------------------------------------------------ metrics
def test_a_root_is_walked_only_to_its_layouts_depth_and_the_filesystems_root_is_refused(tmp_path, monkeypatch):
    """Issue 23: class folders deeper than the layout puts them are not looked for (the root is named), and `/` is
    refused by name before a folder is listed (main walked the whole filesystem)."""
    import os

    root = tmp_path / "deep"
    for name in ("0_real", "1_fake"):
        images(root / "a" / "b" / "c" / name, 1)  # 4 levels down; forensynths puts them at most 3
    with pytest.raises(InputError, match=re_escape(f"{root}: no folder named 0_real or 1_fake within 3 levels")):
        read_set(Layout.forensynths, root)
    listed, scandir = [], os.scandir

    def counted(path):
        listed.append(path)
        if len(listed) > 1000:
            raise AssertionError(f"walked {len(listed)} folders of /")
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counted)
    for layout in (Layout.forensynths, Layout.genimage, Layout.real_fake):
        with pytest.raises(InputError, match="^/: is the filesystem's root"):
            read_set(layout, Path("/"))
    assert listed == []


def test_tpr_at_fpr_against_a_hand_computation():
    # 20 reals scoring 0..19; fakes scoring 17.5, 18.5, 18.5, 19.5, 5
    reals = np.arange(20.0)
    fakes = np.array([17.5, 18.5, 18.5, 19.5, 5.0])
    score = np.concatenate([reals, fakes])
    label = np.array([REAL] * 20 + [FAKE] * 5)
    # 5 % of 20 reals: one may score at or above the threshold; the 2nd highest real is 18, so fakes above 18
    # count: 18.5, 18.5, 19.5 -> 3 / 5
    assert tpr_at_fpr(score, label, 0.05) == 3 / 5
    # 1 % of 20 reals is 0.2 -> none may: fakes above the highest real (19): 19.5 -> 1 / 5 (a TPR at 0 % FPR)
    assert tpr_at_fpr(score, label, 0.01) == 1 / 5
    # 10 %: two reals may (19 and 18), fakes above 17: 4 / 5
    assert tpr_at_fpr(score, label, 0.10) == 4 / 5
    assert tpr_at_fpr(score, label, 1.0) == 1.0
    # ties with the (k + 1)-th real stay below the threshold: the FPR reached is under the one asked, never over
    tied = np.array([1.0, 1.0, 1.0, 1.0, 0.0] * 4 + [1.0, 2.0])
    assert tpr_at_fpr(tied, np.array([REAL] * 20 + [FAKE] * 2), 0.05) == 1 / 2
    got = classification_metrics(score, label, low_fpr=True)
    # 20 reals: enough for 5 % (20), not for 1 % (100), where the metrics report null rather than a TPR at 0 % FPR
    assert (got["tpr_at_fpr_1pct"], got["tpr_at_fpr_5pct"]) == (None, 3 / 5) and set(TPR_AT_FPR) <= set(got)
    assert classification_metrics(reals, np.zeros(20, int), low_fpr=True)["tpr_at_fpr_5pct"] is None
    with pytest.raises(ValueError, match="both real and fake"):
        tpr_at_fpr(reals, np.zeros(20, int), 0.05)


# ------------------------------------------------------------------------------------- scoring, bad files
def bad_real_fake(root: Path) -> Path:
    """real/ (4 photos, a truncated JPEG, an empty file, a text file, a broken link) and fake/g1, fake/g2."""
    images(root / "real", 4)
    write_truncated(root / "real" / "cut.jpg")
    (root / "real" / "empty.png").write_bytes(b"")
    (root / "real" / "notes.txt").write_text("not an image")
    os.symlink(root / "gone.png", root / "real" / "broken.png")
    images(root / "fake" / "g1", 3, seed=10)
    images(root / "fake" / "g2", 2, seed=20, suffix=".jpg")
    return root


def test_bad_files_are_counted_and_listed_never_a_crash(tmp_path):
    root = bad_real_fake(tmp_path / "set")
    skips = Skips(skip=True)
    entries = read_set(Layout.real_fake, root, skips=skips)
    scored = score_entries(entries, [shipped()], [Transform.jpeg75], progress=False)
    assert dict(skips.counts) == {"not_an_image": 1, "broken_link": 1}
    errors = {Path(entries[i].path).name: e for i, e in scored.errors.items()}
    assert set(errors) == {"cut.jpg", "empty.png"} and errors["empty.png"] == "empty file"
    assert "truncated" in errors["cut.jpg"]
    figures = counts(scored, skips.as_metrics(("not_an_image", "special_file", "broken_link")))
    assert figures == {"images": {"real": 4, "fake": 5, "shared_real": 4},
                       "skipped": {"not_an_image": 1, "special_file": 0, "broken_link": 1, "unreadable": 2}}
    metrics, rows = results(scored)
    assert {g: (m["n_real"], m["n_fake"]) for g, m in metrics[SHIPPED].items()} == {
        "g1": (4, 3), "g2": (4, 2), OVERALL: (4, 5)}
    assert len(rows) == 1 * 3 * 2 and {r["transform"] for r in rows} == {"clean", "jpeg75"}
    # the figures are the toolkit's at the detector's threshold on the images read
    good = scored.good
    labels = np.array([e.label for e in entries])
    expected = classification_metrics(scored.scores[SHIPPED][0, good], labels[good],
                                      threshold=random_detector().threshold, low_fpr=True)
    assert {k: metrics[SHIPPED][OVERALL][k] for k in expected} == expected


def test_scores_match_detect_for_the_same_files(tmp_path):
    """The benchmark reads and scores an image as `parentage detect` does: same decision, same label."""
    from stages.shipped.rows import score_inputs
    from stages.shipped.wild import expand_inputs

    root = bad_real_fake(tmp_path / "set")
    entries = [e for e in read_set(Layout.real_fake, root) if e.problem is None]
    scored = score_entries(entries, [shipped()], [], progress=False)
    rows = {r.path: r for r in score_inputs(random_detector(), TinyBackbone(),
                                              expand_inputs([e.path for e in entries]), workers=0,
                                              progress=False)}
    detector = random_detector()
    for i, entry in enumerate(entries):
        if i in scored.errors:
            assert rows[entry.path].error == scored.errors[i]
            continue
        decision = scored.scores[SHIPPED][0, i]
        assert rows[entry.path].label == ("fake" if decision >= detector.threshold else "real")
        assert rows[entry.path].score == pytest.approx(1 / (1 + np.exp(-decision)), rel=1e-5)


def test_auc_recomputed_from_detect_output_is_the_benchmarks(tmp_path):
    """detect's logit column is the benchmark's decision value: the AUC recomputed from detect's output on the same
    images is the benchmark's, even where logits are so large that the probabilities tie at 0.0 and 1.0."""
    import io

    from sklearn.metrics import roc_auc_score

    from stages import detect
    from stages.shipped.wild import expand_inputs

    root = tmp_path / "set"
    images(root / "real", 10)
    images(root / "fake" / "g1", 10, seed=10)
    detector = random_detector()
    from stages.shipped.rows import score_inputs

    detector.head.coef *= 3000  # logits in the thousands: exp under- and overflows in float64
    entries = read_set(Layout.real_fake, root)
    scorer = Scorer(SHIPPED, TinyBackbone(), detector.decision, detector.threshold)
    benchmark_auc = results(score_entries(entries, [scorer], [], progress=False))[0][SHIPPED][OVERALL]["auc"]
    stream = io.StringIO()
    tally = detect.write_rows(score_inputs(detector, TinyBackbone(), expand_inputs([str(root)]), workers=0,
                                           progress=False), stream, detect.OutputFormat.csv)
    rows = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert len(rows) == tally.scored == 20
    truth = [Path(r["path"]).parent.name != "real" for r in rows]
    assert roc_auc_score(truth, [float(r["logit"]) for r in rows]) == benchmark_auc
    # the probability column alone cannot give it: saturated probabilities tie
    probabilities = [float(r["score"]) for r in rows]
    assert 0.0 not in probabilities and len(set(probabilities)) < len(rows)
    assert roc_auc_score(truth, probabilities) != benchmark_auc


# ------------------------------------------------------------------------------------------------ duplicates
def run_set(root: Path, out: Path, layout: Layout = Layout.genimage, **options) -> dict:
    return benchmark.run(layout, root, "", "", [], lambda: [shipped()], scores=out / "scores.csv",
                         metrics=out / "m.json", grid=out / "grid.csv", roc=out / "roc", seed=0, workers=0,
                         progress=False, **options)


def test_reals_repeated_per_generator_count_once_overall(tmp_path):
    """A GenImage-style set repeats its photographs under every generator: each is one real in the overall row
    (and one in each generator's row), and a byte-identical fake counts once too."""
    root = tmp_path / "genimage"
    for generator, seed in (("adm", 10), ("midjourney", 20)):
        images(root / generator / "nature", 4)  # the same 4 photographs, byte for byte, under both
        images(root / generator / "ai", 3, seed=seed)
    shutil.copy(root / "adm" / "ai" / "10.png", root / "adm" / "ai" / "copy.png")
    figures = run_set(root, tmp_path / "out")
    overall = figures[SHIPPED][OVERALL]
    assert (overall["n_real"], overall["n_fake"]) == (4, 6)
    assert (figures[SHIPPED]["adm"]["n_real"], figures[SHIPPED]["adm"]["n_fake"]) == (4, 3)
    assert (figures[SHIPPED]["midjourney"]["n_real"], figures[SHIPPED]["midjourney"]["n_fake"]) == (4, 3)
    assert figures["images"] == {"real": 4, "fake": 6, "shared_real": 0}
    assert figures["duplicates"] == {"within_class": 5, "real_and_fake": 0}  # 4 photographs and 1 fake again
    written = json.loads((tmp_path / "out" / "m.json").read_text())
    assert written["duplicates"] == figures["duplicates"]


def test_an_image_both_real_and_fake_is_an_error_naming_both_or_a_counted_exclusion(tmp_path):
    root = tmp_path / "set"
    images(root / "real", 3)
    images(root / "fake" / "g1", 3, seed=10)
    shutil.copy(root / "real" / "1.png", root / "fake" / "g1" / "leak.png")
    with pytest.raises(InputError, match=r"fake/g1/leak\.png.*same image.*real/1\.png") as caught:
        run_set(root, tmp_path / "out", layout=Layout.real_fake)
    assert "duplicates: exclude" in str(caught.value) and not (tmp_path / "out" / "m.json").exists()
    figures = run_set(root, tmp_path / "out", layout=Layout.real_fake, duplicates=Duplicates.exclude)
    assert figures["duplicates"] == {"within_class": 0, "real_and_fake": 2}
    assert (figures[SHIPPED][OVERALL]["n_real"], figures[SHIPPED][OVERALL]["n_fake"]) == (2, 3)
    rows = {Path(r["path"]).name: r for r in csv.DictReader((tmp_path / "out" / "scores.csv").open())}
    assert rows["leak.png"]["error"].startswith("left out") and rows["leak.png"][SHIPPED] == ""
    assert rows["1.png"]["error"].startswith("left out") and rows["0.png"]["error"] == ""
    done = run_command(root, tmp_path / "cli")
    assert done.exit_code == 2 and "leak.png" in done.output and "real/1.png" in done.output


# ------------------------------------------------------------------------------------------------ command
def no_extra_detectors(out: Path) -> Path:
    """An empty folder for --detectors: the benchmark's own detectors only."""
    folder = out.parent / f"{out.name}-no-extra-detectors"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_command(root: Path, out: Path, *extra: str, layout: str = "real_fake", manifest: str = "",
                split: str = ""):
    args = ["--layout", layout, "--root", str(root), "--manifest", manifest, "--split", split,
            "--detector", str(out / "no-detector"), "--registry", str(out / "none.yaml"),
            "--code-model", str(out / "none.pt"), "--code-setting", str(out / "setting.json"),
            "--clusters", str(out / "clusters.parquet"), "--children-root", str(out / "children"),
            "--code-threshold", "val", "--duplicates", "error", "--seed", "0", *BOOTSTRAP, "--scores",
            str(out / "scores.csv"),
            "--metrics", str(out / "m.json"), "--grid", str(out / "grid.csv"), "--roc", str(out / "roc"),
            "--detectors", str(no_extra_detectors(out)), "--workers", "0", *extra]
    return CliRunner().invoke(benchmark.app, args)


@pytest.mark.parametrize(("change", "problem"), [
    ({"layout": "folders"}, "'folders' is not one of"),
    ({"root": "nowhere"}, "nowhere: not found"),
    ({"root": "/"}, "/: is the filesystem's root"),
    ({"layout": "forensynths"}, "no folder named 0_real or 1_fake"),
    ({"manifest": "list.csv"}, "manifest: is 'list.csv'; only layout manifest reads one"),
    ({"layout": "manifest", "manifest": "list.csv"}, "list.csv: not found"),
    ({"split": "val"}, "no folder named real or fake with a folder 'val'"),
    ({"extra": ("--transforms", "sepia")}, "'sepia' is not one of"),
    ({"extra": ("--transforms", "half", "--transforms", "half")}, "each at most once"),
    ({"extra": ("--seed", "-1")}, "--seed"),
])
def test_bad_set_or_option_exits_2_naming_it(tmp_path, change, problem):
    root = tmp_path / "set"
    images(root / "real", 1)
    images(root / "fake", 1, seed=3)
    change = dict(change)
    if change.get("root"):
        root = tmp_path / change.pop("root")
    extra = change.pop("extra", ())
    result = run_command(root, tmp_path, *extra, **change)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert problem in text, text
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.json").exists()


def test_models_are_loaded_after_the_set_is_read(tmp_path):
    """A good set with missing models names the detector (exit 2) instead of crashing."""
    root = tmp_path / "set"
    images(root / "real", 1)
    images(root / "fake", 1, seed=3)
    result = run_command(root, tmp_path)
    assert result.exit_code == 2 and "no-detector" in result.output, result.output


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny pipeline's products: clusters, children of g1, a tiny registered backbone with a detector on it,
    an untrained 32 px CoDE model and its setting."""
    from stages.code.net import CodeNetConfig, build_model, save_model
    from stages.code.setting import CodeSetting, write_setting
    from stages.contracts.clusters import read_clusters
    from stages.embedding.backbones import BackboneSpec, _registered, register
    from stages.heads.linear import LinearHead
    from stages.shipped.artifact import Detector, save_detector
    from stages.shipped.wild import load_registry_backbone
    from tests.fixtures import write_children, write_clusters
    from tests.test_detector import TINY_CLIP

    root = tmp_path_factory.mktemp("benchmark_pipeline")
    register(BackboneSpec(alias="tiny_bench", library="open_clip", architecture="tiny", weights="random",
                          model_cfg=TINY_CLIP))
    clusters = write_clusters(root, n_parents=9, n_captions=2, size=(40, 36))
    write_children(root / "children" / "g1", read_clusters(clusters), generator="g1", size=(32, 32))
    backbone = load_registry_backbone("tiny_bench", root / "none.yaml")
    rng = np.random.default_rng(0)
    dim = backbone.spec["dim"]
    head = LinearHead(mean=np.zeros(dim), scale=np.ones(dim), coef=rng.normal(size=dim), intercept=[0.0],
                      params={"C": 1.0})
    save_detector(Detector(backbone=backbone.spec, head=head, threshold=0.1, trained_on={"generators": ["g1"]}),
                  root / "detector")
    config = CodeNetConfig(arch="vit_tiny_patch16_224", image_size=32, local_size=16)
    save_model(root / "model.pt", build_model(config, seed=0), config, {"epoch": 0})
    write_setting(root / "setting.json", CodeSetting(arch=config.arch, image_size=32, local_size=16, epochs=1,
                                                     generators=("g1",)))
    yield root, clusters
    _registered.pop("tiny_bench")


def full_args(root: Path, pipeline_root: Path, out: Path, *extra: str) -> list[str]:
    return ["--layout", "real_fake", "--root", str(root), "--manifest", "", "--split", "",
            "--detector", str(pipeline_root / "detector"), "--registry", str(pipeline_root / "none.yaml"),
            "--code-model", str(pipeline_root / "model.pt"), "--code-setting", str(pipeline_root / "setting.json"),
            "--clusters", str(pipeline_root / "clusters.parquet"), "--children-root", str(pipeline_root / "children"),
            "--code-threshold", "val", "--duplicates", "error", "--seed", "0", *BOOTSTRAP, "--scores",
            str(out / "scores.csv"),
            "--metrics", str(out / "m.json"), "--grid", str(out / "grid.csv"), "--roc", str(out / "roc"),
            "--detectors", str(no_extra_detectors(out)), "--workers", "0", "--batch-size", "4", *extra]


def test_command_on_the_demo_set_built_from_the_test_split(pipeline, tmp_path):
    root, clusters = pipeline
    built = benchmark_demo.run(clusters, root / "children", ["g1"], tmp_path / "demo_set")
    assert built == {"real": 3, "fake/g1": 6}
    assert sorted(p.name for p in (tmp_path / "demo_set" / "real").iterdir()) == ["p000000000002.jpg",
                                                                                  "p000000000005.jpg",
                                                                                  "p000000000008.jpg"]
    (tmp_path / "demo_set" / "fake" / "g1" / "broken.jpg").write_bytes(b"\xff\xd8\xff")  # a bad file
    out = tmp_path / "out"
    result = CliRunner().invoke(benchmark.app, full_args(tmp_path / "demo_set", root, out, "--transforms", "half"))
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "m.json").read_text())
    assert metrics["images"] == {"real": 3, "fake": 6, "shared_real": 3}
    assert metrics["skipped"]["unreadable"] == 1
    detectors = ["shipped", "code_logreg", "code_knn", "code_ocsvm"]
    assert [k for k in metrics if k not in ("images", "skipped", "duplicates", "detectors")] == sorted(detectors)
    assert metrics["duplicates"] == {"within_class": 0, "real_and_fake": 0}
    # the file names what produced its figures: each detector's id, threshold on its own scale, and caveat
    assert sorted(metrics["detectors"]) == sorted(detectors)
    assert metrics["detectors"]["shipped"]["scale"] == "logit" and metrics["detectors"]["shipped"]["id"]
    assert metrics["detectors"]["code_knn"]["scale"] == SCALES["knn"]
    assert metrics["detectors"]["code_knn"]["id"].startswith("code-") and metrics["detectors"]["code_knn"]["caveat"]
    for name in detectors:
        assert set(metrics[name]) == {"g1", OVERALL}
        assert set(metrics[name][OVERALL]) == set(GRID_COLUMNS[3:-1])
        assert (metrics[name]["g1"]["n_real"], metrics[name]["g1"]["n_fake"]) == (3, 6)
    rows = list(csv.DictReader((out / "grid.csv").open()))
    assert len(rows) == len(detectors) * 2 * 2
    assert sorted(p.name for p in (out / "roc").iterdir()) == sorted([MARKER, *(f"{d}.json" for d in detectors)])
    assert {"fpr", "tpr"} <= set(json.loads((out / "roc" / "shipped.json").read_text())[0])
    scores = list(csv.DictReader((out / "scores.csv").open()))
    # ROC thresholds stay on each detector's own scale, named: every one is a score an image got, never squashed
    for name, scale in [("shipped", "logit"), *((f"code_{head}", SCALES[head]) for head in SCALES)]:
        roc = json.loads((out / "roc" / f"{name}.json").read_text())
        given = [float(r[name]) for r in scores if r[name]]
        assert roc[0]["threshold"] is None and {r["scale"] for r in roc} == {scale}
        for point in roc[1:]:  # plot data keeps PLOT_DIGITS significant digits
            assert min(abs(point["threshold"] - g) for g in given) <= 0.5 * 10 ** (1 - PLOT_DIGITS) * max(
                1e-3, abs(point["threshold"]))
    assert len(scores) == 10
    broken = next(r for r in scores if r["path"].endswith("broken.jpg"))
    assert broken["error"] and broken["shipped"] == ""
    # deterministic
    again = tmp_path / "again"
    assert CliRunner().invoke(benchmark.app, full_args(tmp_path / "demo_set", root, again, "--transforms",
                                                       "half")).exit_code == 0
    assert (again / "m.json").read_text() == (out / "m.json").read_text()
    assert (again / "grid.csv").read_text() == (out / "grid.csv").read_text()


def test_benchmark_demo_refuses_a_bad_generator_list(pipeline, tmp_path):
    root, clusters = pipeline
    result = CliRunner().invoke(benchmark_demo.app, ["--clusters", str(clusters), "--children", str(root / "children"),
                                                     "--generators", "g1", "--generators", "g1",
                                                     "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "give each generator once" in result.output
    result = CliRunner().invoke(benchmark_demo.app, ["--clusters", str(clusters), "--children", str(root / "children"),
                                                     "--generators", "nope", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "nope" in result.output


# ------------------------------------------------------------------------------------------- ../shared
def test_wild_generated_beside_coco_mini_photographs_per_generator(wild_generated, coco_mini, tmp_path):
    """wild-generated's MANIFEST.tsv (each image's generator; its one real marked REAL) with COCO-mini's val
    photographs as more shared reals, scored as one external benchmark: one group per generator."""
    with (wild_generated / "MANIFEST.tsv").open(newline="") as stream:
        wild = list(csv.DictReader(stream, delimiter="\t"))
    photos = sorted((coco_mini / "images" / "val2017").glob("*.jpg"))[:40]
    rows = [{"path": str(wild_generated / r["file"]), "generator": r["generator"], "kind": r["kind"]} for r in wild]
    rows += [{"path": str(p), "generator": "REAL", "kind": "real"} for p in photos]
    write_manifest(tmp_path / "benchmark.tsv", rows)
    entries = read_set(Layout.manifest, tmp_path, manifest="benchmark.tsv")
    fakes = [r for r in wild if r["kind"] != "real"]
    generators = sorted({r["generator"] for r in fakes})
    n_real = len(wild) - len(fakes) + len(photos)
    assert tally(entries) == {(SHARED, "real"): n_real,
                              **{(g, "fake"): sum(r["generator"] == g for r in fakes) for g in generators}}
    scored = score_entries(entries, [shipped()], [], workers=2, progress=False)
    assert not scored.errors, scored.errors
    metrics, _ = results(scored)
    assert sorted(metrics[SHIPPED]) == sorted([*generators, OVERALL])
    for g in generators:
        assert metrics[SHIPPED][g]["n_real"] == n_real and metrics[SHIPPED][g]["n_fake"] == 1
    assert (metrics[SHIPPED][OVERALL]["n_real"], metrics[SHIPPED][OVERALL]["n_fake"]) == (n_real, len(fakes))
    # its own MANIFEST.tsv is a valid manifest as it is
    own = read_set(Layout.manifest, wild_generated, manifest="MANIFEST.tsv")
    assert len(own) == len(wild) and sum(e.label == FAKE for e in own) == len(fakes)


# ------------------------------------------------------------------------------------------------- report
def test_report_section_shows_each_detector_per_generator_with_counts(tmp_path):
    from stages.reporting.detectors import render_benchmarks

    root = bad_real_fake(tmp_path / "set")
    benchmark.run(Layout.real_fake, root, "", "", [Transform.half], lambda: [shipped()],
                  scores=tmp_path / "data" / "mine.csv", metrics=tmp_path / "metrics" / "mine.json",
                  grid=tmp_path / "grids" / "mine.csv", roc=tmp_path / "roc" / "mine", seed=0, progress=False,
                  bootstrap=Bootstrap(resamples=50, seed=0))
    text = "\n".join(render_benchmarks(tmp_path / "metrics", tmp_path / "grids", ["mine"]))
    assert "## Benchmark `mine`" in text
    assert "Images scored: 4 real (4 shared by every generator), 5 fake; left out: 1 not images, 0 special files, " \
           "1 broken links, 2 unreadable" in text
    assert "Duplicates (same bytes): 0 further copies of an image within its class, each counted once; 0 images " \
           "present as both real and fake, left out." in text
    metrics = json.loads((tmp_path / "metrics" / "mine.json").read_text())
    g1 = metrics[SHIPPED]["g1"]
    # the headline: AUC / balanced accuracy per generator and detector, then which detector each column is
    headline = next(line for line in text.splitlines() if line.startswith("| `g1` |"))
    assert headline == f"| `g1` | {100 * g1['auc']:.2f} / {100 * g1['balanced_accuracy']:.2f} |"
    assert f"- Shipped detector: `{metrics['detectors'][SHIPPED]['id']}`, threshold" in text
    # the detail, folded: every figure with its interval and counts
    row = [line for line in text.splitlines() if line.startswith("| `g1` |")][1]
    assert text.index("<details>") < text.index(row)
    # k/n beside each class accuracy and overall; 4 reals are under 20 and 100: both TPRs are n/a and say why
    assert f"({g1['real_correct']}/4)" in row and f"({g1['fake_correct']}/{g1['n_fake']})" in row
    assert f"({g1['real_correct'] + g1['fake_correct']}/7)" in row
    assert row.count("n/a (4 reals < 100)") == 1 and row.count("n/a (4 reals < 20)") == 1
    # the headline leads, with its 95 % interval (images resampled)
    assert "| Detector / generator | AUC | Balanced acc. | TPR @ 1 % FPR | TPR @ 5 % FPR | Real acc. |" in text
    assert row.startswith(f"| `g1` | {100 * g1['auc']:.2f} [{100 * g1['auc_low']:.2f}, {100 * g1['auc_high']:.2f}] | ")
    assert "| Detector | Clean | Resize 1/2 |" in text
    assert "No benchmark results" in "\n".join(render_benchmarks(tmp_path / "none", tmp_path / "none", ["wild"]))


# ---------------------------------------------------------------------------------------------- DVC wiring
SETS = {"mine": {"layout": "real_fake", "root": "sets/mine", "manifest": "", "split": "", "duplicates": "error",
                 "transforms": []},
        "listed": {"layout": "manifest", "root": "sets/listed", "manifest": "list.csv", "split": "",
                   "duplicates": "exclude", "transforms": ["jpeg75", "crop"]}}


def with_sets(params: Path, sets: dict, **model) -> None:
    import yaml

    values = yaml.safe_load(params.read_text())
    values["benchmark"]["sets"] = sets
    values["model"].update(model)
    params.write_text(yaml.safe_dump(values, sort_keys=False))


def test_each_configured_set_renders_its_own_instance(tmp_path):
    """DVC's resolver turns every entry of benchmark.sets into benchmark@<name> with the entry's keys as options
    (an empty transforms list: no option) and outputs named after it; the command parses each."""
    import shutil

    from tests.imports import REPO
    from tests.test_params import parse, render

    for name in ("dvc.yaml", "params.yaml", ".dvc/config"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    with_sets(tmp_path / "params.yaml", SETS)
    commands = {k: v for k, v in render(tmp_path).items() if k.startswith("benchmark@")}
    assert sorted(commands) == ["benchmark@listed", "benchmark@mine"]
    mine, listed = (parse(*commands[f"benchmark@{n}"]).params for n in ("mine", "listed"))
    assert (mine["layout"], str(mine["root"]), mine["manifest"], mine["transforms"]) == \
        (Layout.real_fake, "sets/mine", "", [])
    assert (listed["layout"], listed["manifest"], listed["transforms"]) == \
        (Layout.manifest, "list.csv", [Transform.jpeg75, Transform.crop])
    assert str(listed["metrics"]) == "metrics/benchmark/listed.json" and str(listed["roc"]).endswith("listed")


@pytest.mark.slow
def test_under_dvc_each_set_runs_and_reruns_alone(dvc_repo, pipeline, tmp_path):
    """In a copy of the pipeline with its upstream products in place (a tiny detector on a registry entry, a tiny
    CoDE model): `dvc repro` of two configured sets writes their outputs, and editing one set's entry reruns
    that instance only."""
    import shutil

    import yaml

    from tests.test_detector import TINY_CLIP

    repo = dvc_repo.path
    root, clusters = pipeline
    registry = repo / "stages" / "embedding" / "backbones.yaml"
    entries = yaml.safe_load(registry.read_text())
    entries["tiny_bench"] = {"library": "open_clip", "architecture": "tiny", "weights": "random", "seed": 0,
                             "model_cfg": TINY_CLIP}
    registry.write_text(yaml.safe_dump(entries, sort_keys=False))
    (repo / "data" / "code").mkdir(parents=True)
    shutil.copytree(root / "detector", repo / "data" / "detector")
    shutil.copytree(root / "children", repo / "data" / "children")
    for name in ("model.pt", "setting.json"):
        shutil.copy(root / name, repo / "data" / "code" / name)
    shutil.copy(clusters, repo / "data" / "clusters.parquet")
    # the gate of the children sets CoDE's heads are fitted on (the select stage's output, a dependency here)
    from stages import select
    from stages.code.setting import read_setting

    select.run(repo / "data" / "children", list(read_setting(repo / "data" / "code" / "setting.json").generators),
               None, repo / "data" / "selections" / "code_train.json", progress=False)
    images(repo / "sets" / "mine" / "real", 3)
    images(repo / "sets" / "mine" / "fake" / "sdx", 3, seed=10)
    listed = images(repo / "sets" / "listed", 4, seed=20)
    write_manifest(repo / "sets" / "listed" / "list.csv", [{"path": p.name, "label": i % 2, "generator": "g"}
                                                           for i, p in enumerate(listed)])
    with_sets(repo / "params.yaml", SETS, backbone="tiny_bench")
    dvc_repo("dvc", "repro", "--single-item", "benchmark@mine", "benchmark@listed")
    for name in ("mine", "listed"):
        metrics = json.loads((repo / "metrics" / "benchmark" / f"{name}.json").read_text())
        assert set(metrics["shipped"]) >= {OVERALL}
        assert (repo / "data" / "benchmark" / f"{name}.csv").is_file()
    assert json.loads((repo / "metrics" / "benchmark" / "mine.json").read_text())["images"] == {
        "real": 3, "fake": 3, "shared_real": 3}
    sets = json.loads(json.dumps(SETS))
    sets["listed"]["transforms"] = ["half"]
    with_sets(repo / "params.yaml", sets)
    status = json.loads(dvc_repo("dvc", "status", "--json", "benchmark@mine", "benchmark@listed"))
    assert set(status) == {"benchmark@listed"}, status
