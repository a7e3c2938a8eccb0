"""The check stage: an unknown alias or a missing download fails at once, every problem in one message."""

import shutil

import yaml
from typer.testing import CliRunner

from stages.check import PASSED, app


def run_check(repo_root, tmp_path, **changes):
    """The check as dvc.yaml renders it with params.yaml changed by `changes` (section__key=value), writing to
    tmp_path/check.txt; paths in the command stay relative to the working directory."""
    from tests.test_params import render

    root = tmp_path / "rendered"
    for name in ("dvc.yaml", ".dvc/config"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo_root / name, root / name)
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    module, args = render(root)["check@setting0"]
    assert module == "stages.check"
    args[args.index("--out") + 1] = str(tmp_path / "check.txt")
    return CliRunner().invoke(app, args)


def test_the_demo_passes(repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root)
    done = run_check(repo_root, tmp_path)
    assert done.exit_code == 0, done.output
    assert (tmp_path / "check.txt").read_text() == PASSED
    assert "warning" not in done.output


def test_model_backbone_also_in_embed_backbones_warns_once_and_passes(repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root)
    done = run_check(repo_root, tmp_path, embed__backbones=["efficientnet_lite0", "openclip_vitb32_random"])
    assert done.exit_code == 0, done.output
    assert done.output.count("warning: model.backbone 'efficientnet_lite0' is also listed in embed.backbones") == 1
    assert (tmp_path / "check.txt").read_text() == PASSED


def test_an_empty_embed_backbones_is_no_option_and_passes(repo_root, tmp_path, monkeypatch):
    """Only model.backbone studied: DVC renders the empty list as no option, which the check accepts."""
    monkeypatch.chdir(repo_root)
    done = run_check(repo_root, tmp_path, embed__backbones=[])
    assert done.exit_code == 0, done.output


def test_the_check_reads_no_params_file():
    """STYLE.md 2: its --help is its interface; dvc.yaml passes every param it reads (and lists them)."""
    import re

    from tests.imports import REPO

    source = (REPO / "stages" / "check.py").read_text()
    assert "params.yaml\")" not in source and not re.search(r"--params\b", source)
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["check"]
    for param in ("model.backbone", "model.generators", "embed.backbones", "generate.generators",
                  "generate.models_root", "code_train.data", "code_eval.data", "code_eval.protocol",
                  "code_eval.released_fit_images", "code_eval.threshold", "clusters.source", "clusters.input",
                  "clusters.coco_captions", "clusters.karpathy_split"):
        assert param in stage["params"], param


def test_an_unknown_model_backbone_names_the_registry_and_the_nearest(repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root)
    done = run_check(repo_root, tmp_path, model__backbone="efficientnet_lite")
    assert done.exit_code == 2
    assert "model.backbone: unknown backbone 'efficientnet_lite'" in done.output
    assert "backbones.yaml" in done.output and "nearest: efficientnet_lite0" in done.output
    assert "Traceback" not in done.output and not (tmp_path / "check.txt").exists()


def test_the_papers_setting_lists_everything_missing_at_once(repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/ here
    shutil.copytree(repo_root / "stages", tmp_path / "stages")
    coco = tmp_path / "coco"
    done = run_check(repo_root, tmp_path, clusters__source="coco", clusters__input=str(coco),
                     clusters__coco_captions="annotations/captions_*2014.json",
                     clusters__karpathy_split=str(coco / "dataset_coco.json"),
                     generate__generators=["sd14", "sd21"], children__sets=["sd14", "sd21"],
                     model__backbone="clip_vitb32_openai",
                     model__generators=["sd14", "sd21"], embed__backbones=["resnet50_imagenet", "tiny_randomm"])
    assert done.exit_code == 2
    text = done.output
    for piece in ("caption files", "train2014", "val2014", "dataset_coco.json", "hf download CompVis/stable-",
                  "hf download stabilityai/stable-diffusion-2-1", "safety checker", "clip_vitb32_openai",
                  "resnet50-0676ba61.pth", "unknown backbone 'tiny_randomm'",
                  "code_train.data.generators: children set 'tiny_random' is not in children.sets"):
        assert piece in text, (piece, text)


# ------------------------------------------------------------------ imported children sets (import_children)
def test_an_imported_set_in_children_sets_passes(repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root)
    (tmp_path / "cocofake").mkdir()
    done = run_check(repo_root, tmp_path, children__sets=["tiny_random", "cocofake_sd14"],
                     import_children__sets={"cocofake_sd14": {"layout": "cocofake", "root": str(tmp_path / "cocofake"),
                                                              "generator": ""}},
                     model__generators=["tiny_random", "cocofake_sd14"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "check.txt").read_text() == PASSED


def test_every_children_set_is_made_by_exactly_one_stage_and_each_import_is_checked(repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root)
    done = run_check(repo_root, tmp_path, children__sets=["tiny_random", "drct_sdxl", "nowhere"],
                     import_children__sets={
                         "drct_sdxl": {"layout": "per_parnet", "root": str(tmp_path / "missing"), "generator": "sdxl"},
                         "tiny_random": {"layout": "manifest", "root": "params.yaml", "generator": ""},
                         # a missing key DVC itself refuses ("Could not find 'item.generator'"); an extra one passes
                         "bad-name": {"layout": "cocofake", "root": "stages", "generator": "", "reencode": "png"},
                         "captions": {"layout": "cocofake", "root": "stages", "generator": ""}},
                     code_train__data={"generators": ["tiny_random", "sd14"]})
    assert done.exit_code == 2
    text = done.output
    for piece in ("children.sets: 'nowhere' is made by neither generate.generators",
                  "'tiny_random' is in both generate.generators and import_children.sets",
                  "import_children.sets.drct_sdxl.layout: 'per_parnet' is not a layout",
                  f"import_children.sets.drct_sdxl.root: {tmp_path / 'missing'} does not exist",
                  "import_children.sets.bad-name: the name may hold only",
                  "import_children.sets.bad-name: expected the keys ['layout', 'root', 'generator']; unknown "
                  "['reencode']",
                  "code_train.data.generators: children set 'sd14' is not in children.sets",
                  "import_children.sets.captions: 'captions' is the name of the parents' or captions' embedding"):
        assert piece in text, (piece, text)
    assert "Traceback" not in text and not (tmp_path / "check.txt").exists()


def test_an_option_the_check_does_not_know_is_refused(repo_root, tmp_path, monkeypatch):
    from tests.test_params import render

    monkeypatch.chdir(repo_root)
    _, args = render(repo_root)["check@setting0"]
    args[args.index("--out") + 1] = str(tmp_path / "check.txt")
    for extra in (["--bogus", "x"], ["--imports.a.layout"], ["--imports.a", "cocofake"]):
        done = CliRunner().invoke(app, [*args, *extra])
        assert done.exit_code == 2 and f"{extra[0]}: no such option" in done.output, (extra, done.output)
        assert "Traceback" not in done.output


def test_metrics_files_no_stage_owns_any_more_are_listed_and_the_check_passes(repo_root, tmp_path, monkeypatch):
    """A backbone taken out of embed.backbones (here: the demo's openclip_vitb32_random) leaves its metrics files
    in the workspace and in git; the check lists each for removal and still passes (they are never read)."""
    monkeypatch.chdir(repo_root)
    done = run_check(repo_root, tmp_path, embed__backbones=[])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "check.txt").read_text() == PASSED
    stale = [line.strip() for line in done.output.splitlines() if line.startswith("  metrics/")]
    assert "metrics/distances/openclip_vitb32_random/tiny_random.json" in stale
    # (embed's own files are in DVC's cache, in the workspace only after a run: a clean clone has none)
    assert "metrics/probe/openclip_vitb32_random/tiny_random.json" in stale
    assert all("openclip_vitb32_random" in name for name in stale), stale
    assert f"warning: {len(stale)} files under metrics are written by no stage of these params" in done.output


def test_the_owned_files_are_those_dvc_renders(tmp_path):
    """stages.contracts.instances names every file under metrics/ a stage writes: for the demo and for a setting
    with two backbones, two sets (one imported) and two benchmarks, exactly the outputs DVC renders from
    dvc.yaml (folders of plot data as one entry), so the check's list and the report's reads cannot drift."""
    from dvc.repo import Repo

    from stages.contracts.instances import from_params, owned
    from stages.reporting.layout import study_stages
    from tests.imports import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    wider = yaml.safe_load((REPO / "params.yaml").read_text())
    wider["embed"]["backbones"] = ["openclip_vitb32_random", "resnet50_imagenet"]
    wider["import_children"]["sets"] = {"wild": {"layout": "manifest", "root": "wild.csv", "generator": ""}}
    wider["children"]["sets"] = ["tiny_random", "wild"]
    wider["benchmark"]["sets"]["second"] = dict(wider["benchmark"]["sets"]["demo"])
    for case, values in (("demo", params), ("wider", wider)):
        root = tmp_path / case
        (root / ".dvc").mkdir(parents=True)
        for name in ("dvc.yaml", ".dvc/config"):
            shutil.copy(REPO / name, root / name)
        (root / "params.yaml").write_text(yaml.safe_dump(values))
        with Repo.init(root, no_scm=True, force=True) as repo:
            rendered = {str(out.def_path) + ("/" if not out.def_path.endswith((".json", ".csv", ".md")) else "")
                        for stage in repo.index.stages for out in stage.outs
                        if str(out.def_path).startswith("metrics/")}
        assert owned(from_params(values), study_stages(REPO / "stages/reporting/layout.yaml")) == rendered, case


def test_too_few_bootstrap_resamples_are_named(repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root)
    done = run_check(repo_root, tmp_path, bootstrap__resamples=10)
    assert done.exit_code == 2 and "bootstrap.resamples: 10; a 95 % interval needs at least 40" in done.output
    assert "Traceback" not in done.output and not (tmp_path / "check.txt").exists()


def test_code_eval_protocol_size_and_threshold_are_checked(repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root)
    done = run_check(repo_root, tmp_path, code_eval__protocol="relased", code_eval__released_fit_images=0,
                     code_eval__threshold="best")
    assert done.exit_code == 2, done.output
    assert "code_eval.protocol: 'relased' is not one of ['toolkit', 'released']" in done.output
    assert "code_eval.threshold: 'best' is not one of ['val', 'natural']" in done.output
    assert "code_eval.released_fit_images: '0' is not a positive whole number" in done.output
    assert not (tmp_path / "check.txt").exists()
    released = run_check(repo_root, tmp_path, code_eval__protocol="released", code_eval__released_fit_images=9600)
    assert released.exit_code == 0, released.output


def test_a_benchmark_sets_duplicates_rule_is_checked(repo_root, tmp_path, monkeypatch):
    from stages.check import DUPLICATE_RULES
    from stages.external.scoring import Duplicates

    assert tuple(Duplicates) == DUPLICATE_RULES
    monkeypatch.chdir(repo_root)
    sets = yaml.safe_load((repo_root / "params.yaml").read_text())["benchmark"]["sets"]
    sets["demo"]["duplicates"] = "drop"
    done = run_check(repo_root, tmp_path, benchmark__sets=sets)
    assert done.exit_code == 2, done.output
    assert "benchmark.sets.demo.duplicates: 'drop' is not one of ['error', 'exclude']" in done.output
