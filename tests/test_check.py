"""The check stage: an unknown alias or a missing download fails at once, every problem in one message."""

import shutil

import yaml
from typer.testing import CliRunner

from stages.check import PASSED, app

REGISTRIES = ("--backbone-registry", "stages/embedding/backbones.yaml",
              "--generator-registry", "stages/generation/generators.yaml", "--built", "tiny_random")


def run_check(repo_root, tmp_path, params_from=None, **changes):
    params = yaml.safe_load(((params_from or repo_root) / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        params[section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    args = ["--params", str(path), *REGISTRIES, "--out", str(tmp_path / "check.txt")]
    return CliRunner().invoke(app, [a if not a.startswith("stages/") else str(repo_root / a) for a in args])


def test_the_demo_passes(repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root)
    done = run_check(repo_root, tmp_path)
    assert done.exit_code == 0, done.output
    assert (tmp_path / "check.txt").read_text() == PASSED


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
    done = run_check(tmp_path, tmp_path, params_from=repo_root, clusters__source="coco", clusters__input=str(coco),
                     clusters__coco_captions="annotations/captions_*2014.json",
                     clusters__karpathy_split=str(coco / "dataset_coco.json"),
                     generate__generators=["sd14", "sd21"], model__backbone="clip_vitb32_openai",
                     model__generators=["sd14", "sd21"], embed__backbones=["resnet50_imagenet", "tiny_randomm"])
    assert done.exit_code == 2
    text = done.output
    for piece in ("caption files", "train2014", "val2014", "dataset_coco.json", "hf download CompVis/stable-",
                  "hf download stabilityai/stable-diffusion-2-1", "safety checker", "clip_vitb32_openai",
                  "resnet50-0676ba61.pth", "unknown backbone 'tiny_randomm'",
                  "code_train.data.generators: generator 'tiny_random' is not made"):
        assert piece in text, (piece, text)
