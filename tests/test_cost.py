"""The cost estimate (stages.compute.cost, `parentage estimate`, and the check stage in the COCO setting): its
figures follow the params, the registries and measured rates."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from stages.compute import cost
from stages.contracts.errors import InputError
from stages.estimate import app
from stages.generation.registry import REGISTRY as GENERATORS
from tests.imports import REPO

SD14 = cost.Generator("sd14", 512, 512, 50)
SD21 = cost.Generator("sd21", 768, 768, 50)
CLIP = cost.Backbone("clip", "ViT-B-32", text_tower=True)


def rows(**changes) -> dict[tuple[str, str], cost.Row]:
    arguments = {"scale": cost.Scale(), "generators": [SD14], "backbones": [CLIP], **changes}
    return {(r.stage, r.instance): r for r in cost.estimate(**arguments)}


def test_twice_the_captions_per_parent_is_twice_generates_hours_and_disk():
    five, ten = rows(), rows(scale=cost.Scale(captions_per_parent=10))
    assert ten["generate", "sd14"].items == 2 * five["generate", "sd14"].items == 2 * 123_287 * 5
    assert ten["generate", "sd14"].gpu_hours == pytest.approx(2 * five["generate", "sd14"].gpu_hours)
    assert ten["generate", "sd14"].disk_bytes == pytest.approx(2 * five["generate", "sd14"].disk_bytes)
    # embed: the parents stay, the children double
    assert ten["embed", "clip"].items - five["embed", "clip"].items == 123_287 * 5


def test_the_paper_figures_at_the_assumed_rates():
    """SD 1.4's 616,435 children at 3.5 images/s are about 2 GPU-days (COCOFake's measure); SD 2.1's 768 px
    children cost 2.25 times as much; a 512-d float32 cache of the parents, 2 sets and the captions."""
    found = rows(generators=[SD14, SD21])
    assert found["generate", "sd14"].per_gpu == pytest.approx(3.5)
    assert 44 < found["generate", "sd14"].gpu_hours < 52
    assert found["generate", "sd21"].gpu_hours == pytest.approx(2.25 * found["generate", "sd14"].gpu_hours)
    embedded = 123_287 + 2 * 616_435
    assert found["embed", "clip"].items == embedded
    assert found["embed", "clip"].disk_bytes == (embedded + 616_435) * (512 * 4 + 64)
    assert found["code_train", "vit_tiny, 150 epochs"].items == 150 * 113_287 * 8


def test_steps_guidance_and_epochs_move_the_hours():
    base = rows()
    assert rows(generators=[cost.Generator("sd14", 512, 512, 25)])["generate", "sd14"].gpu_hours == \
        pytest.approx(base["generate", "sd14"].gpu_hours / 2)
    assert rows(generators=[cost.Generator("sd14", 512, 512, 50, guidance=False)])["generate", "sd14"].gpu_hours == \
        pytest.approx(base["generate", "sd14"].gpu_hours / 2)
    code = rows(code=cost.Code(epochs=75))
    assert code["code_train", "vit_tiny, 75 epochs"].gpu_hours == \
        pytest.approx(base["code_train", "vit_tiny, 150 epochs"].gpu_hours / 2)
    assert not any(stage == "code_train" for stage, _ in rows(code=None))


def test_the_registry_entries_decide_the_generators_cost(tmp_path):
    paper = cost.generators_of(["sd14", "sd21"], GENERATORS)
    assert [(g.height, g.steps, g.guidance) for g in paper] == [(512, 50, True), (768, 50, True)]
    entries = yaml.safe_load(GENERATORS.read_text())
    entries["sd14"]["steps"] = 10
    edited = tmp_path / "generators.yaml"
    edited.write_text(yaml.safe_dump(entries))
    assert cost.generators_of(["sd14"], edited)[0].steps == 10
    with pytest.raises(InputError, match="unknown generator 'sd13'"):
        cost.generators_of(["sd13"], GENERATORS)
    backbones = cost.backbones_of(["resnet50_imagenet", "clip_vitb32_openai"], REPO / "stages/embedding/backbones.yaml")
    assert [(b.width, b.text_tower) for b in backbones] == [(2048, False), (512, True)]


def test_measured_rates_replace_the_assumed_ones_and_bad_files_are_named(tmp_path):
    measured = tmp_path / "rates.yaml"
    measured.write_text("unet_steps_per_s: 350\n")
    rates = cost.Rates.from_file(measured)
    assert rates.unet_steps_per_s == 350 and rates.embed_images_per_s == cost.Rates().embed_images_per_s
    assert rows(rates=rates)["generate", "sd14"].gpu_hours == pytest.approx(rows()["generate", "sd14"].gpu_hours / 2)
    for text, message in (("unet_steps: 3\n", "unknown rate 'unet_steps'"),
                          ("unet_steps_per_s: 0\n", "unet_steps_per_s: is 0; expected a number above 0"),
                          ("- 1\n", "is not a mapping")):
        measured.write_text(text)
        with pytest.raises(InputError, match=message):
            cost.Rates.from_file(measured)


def test_the_command_prints_the_table_and_names_an_unknown_alias(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    done = CliRunner().invoke(app, ["--generators", "sd14", "--backbones", "clip_vitb32_openai",
                                    "--captions-per-parent", "5"])
    assert done.exit_code == 0, done.output
    assert "| generate | sd14 | 616,435 | 3.5 |" in done.output and "| total |" in done.output
    wrong = CliRunner().invoke(app, ["--generators", "sd14", "--backbones", "clip_vit"])
    assert wrong.exit_code == 2 and "unknown backbone 'clip_vit'" in wrong.output, wrong.output


def test_the_check_prints_the_estimate_in_the_coco_setting_only(repo_root, tmp_path, monkeypatch):
    """Everything else the check looks at stubbed (no COCO or weights here): on coco it prints the table of its
    generators and backbones, and writes the same check.txt; on the demo it prints none."""
    from stages import check
    from tests.test_check import run_check

    monkeypatch.chdir(repo_root)
    monkeypatch.setattr(check, "problems", lambda *args: [])
    (tmp_path / "coco").mkdir()
    done = run_check(repo_root, tmp_path, clusters__source="coco", clusters__input=str(tmp_path / "coco"),
                     clusters__captions_per_parent=5, generate__generators=["sd14", "sd21"],
                     children__sets=["sd14", "sd21"], model__backbone="clip_vitb32_openai",
                     embed__backbones=["resnet50_imagenet"])
    assert done.exit_code == 0, done.output
    assert "| generate | sd21 | 616,435 |" in done.output and "| embed | resnet50_imagenet |" in done.output
    assert "| embed | clip_vitb32_openai |" in done.output and "parents + 2 children sets" in done.output
    assert (tmp_path / "check.txt").read_text() == check.PASSED
    doubled = run_check(repo_root, tmp_path, clusters__source="coco", clusters__input=str(tmp_path / "coco"),
                        clusters__captions_per_parent=10, generate__generators=["sd14"], children__sets=["sd14"],
                        model__backbone="clip_vitb32_openai", embed__backbones=[])
    assert "| generate | sd14 | 1,232,870 |" in doubled.output, doubled.output
    demo = run_check(repo_root, tmp_path)
    assert demo.exit_code == 0 and "GPU-hours" not in demo.output


def test_docs_cluster_shows_the_estimate_this_code_prints(repo_root, monkeypatch):
    """docs/cluster.md's table is the output of the command it shows (a derived copy that must not drift)."""
    import re
    import shlex

    monkeypatch.chdir(repo_root)
    text = (repo_root / "docs" / "cluster.md").read_text()
    command = re.search(r"```bash\n(parentage estimate .*?)\n```", text, re.S).group(1).replace("\\\n", " ")
    done = CliRunner().invoke(app, shlex.split(command)[2:])
    assert done.exit_code == 0, done.output
    assert done.output.strip() in text
