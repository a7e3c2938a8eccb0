"""The generate stage: the registry file and its errors, the tiny offline generator, seeds, the children folder
contract, safety-checker hits, resumption after SIGKILL and a 2-process accelerate run, compared byte for byte,
and in a DVC repository, editing one registry entry changes only that generator's instance."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from stages.contracts import children as contract
from stages.contracts.clusters import read_clusters
from stages.contracts.errors import InputError
from stages.generate import app, run
from stages.generation import shards as gen
from stages.generation.registry import (
    REGISTRY,
    GeneratorSpec,
    get_generator,
    load_pipeline,
    model_dir,
    read_registry,
    register,
    safety_checker_dir,
    unregister,
)
from stages.generation.tiny import TinyConfig, build_tokenizer, save_pipeline
from tests.fixtures import write_clusters

REPO = Path(__file__).resolve().parents[1]
# Same intra-op thread count in this process and in subprocesses: batched float kernels round differently
# with another thread count, and the byte comparisons below need the same arithmetic.
THREADS = "1"
torch.set_num_threads(int(THREADS))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models root holding tiny_random (as the tiny_generator stage builds it) and tiny_safe (the same with
    a tiny safety checker that flags every image)."""
    root = tmp_path_factory.mktemp("models")
    save_pipeline(TinyConfig(resolution=64), root / "tiny_random")
    save_flagging_pipeline(root / "tiny_safe")
    return root


@pytest.fixture(scope="module")
def clusters(tmp_path_factory) -> Path:
    """4 parents x 3 captions = 12 children."""
    return write_clusters(tmp_path_factory.mktemp("clusters"), n_parents=4, n_captions=3)


@pytest.fixture
def tiny_test():
    """A quick registry entry on the tiny model: 32 px, 3 steps."""
    spec = register(GeneratorSpec(alias="tiny_test", model_id="", height=32, width=32, steps=3, guidance_scale=7.5,
                                  scheduler="DDIMScheduler", batch_size=4, safety_checker=False,
                                  obtain="the tests build it"))
    yield spec
    unregister("tiny_test")


def flagging_safety_checker():
    """A tiny StableDiffusionSafetyChecker whose thresholds flag every image, and its image processor."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    tower = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    checker = StableDiffusionSafetyChecker(CLIPConfig(text_config=tower, projection_dim=8,
                                                      vision_config={**tower, "image_size": 32, "patch_size": 8}))
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)  # every cosine score clears a threshold of -10: all flagged
    return checker, CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def save_flagging_pipeline(out: Path) -> None:
    """The tiny pipeline with the flagging safety checker inside (as SD 1.4 ships its checker)."""
    import tempfile

    from diffusers import StableDiffusionPipeline

    from stages.generation.tiny import build_pipeline

    with tempfile.TemporaryDirectory() as scratch:
        base = build_pipeline(TinyConfig(resolution=64), Path(scratch))
    checker, processor = flagging_safety_checker()
    pipeline = StableDiffusionPipeline(**{**base.components, "safety_checker": checker,
                                          "feature_extractor": processor}, requires_safety_checker=True)
    pipeline.save_pretrained(out)


# params.yaml's generate values (the stage receives them from dvc.yaml), as `run` keywords and as options
SETTINGS = {"registry": REGISTRY, "encoding": gen.Encoding.jpeg, "jpeg_quality": 95, "shard_size": 64,
            "batch_size": 0, "device": "auto"}
OPTIONS = ["--encoding", "jpeg", "--jpeg-quality", "95", "--shard-size", "64", "--batch-size", "0", "--device", "cpu"]


def generate(clusters: Path, models: Path, out: Path, generator: str = "tiny_random", **options) -> dict | None:
    return run(generator, clusters, models, out, out.parent / f"{out.name}.json", progress=False,
               **{**SETTINGS, **options})


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": THREADS, "MKL_NUM_THREADS": THREADS,
            "TQDM_DISABLE": "1"}


def stage_args(clusters: Path, models: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "stages.generate", "--generator", "tiny_random", "--registry", str(REGISTRY),
            "--clusters", str(clusters), "--models-root",
            str(models), "--out", str(out), "--metrics", str(out.parent / f"{out.name}.json"), *OPTIONS, *extra]


# ------------------------------------------------------------------------------------------------ registry


def test_unknown_alias_names_the_registry_file_and_lists_the_known_ones():
    with pytest.raises(InputError, match=rf"{REGISTRY}: unknown generator 'sd13'.*'sd14', 'sd15', 'sd21', 'sd3_m"):
        get_generator("sd13")
    with pytest.raises(ValueError, match="no dashes"):
        register(GeneratorSpec(alias="sd-14", model_id="x", height=64, width=64, steps=1, guidance_scale=1))


def test_registry_file_holds_the_three_entries_as_they_were():
    """The entries moved from Python to generators.yaml with every value kept (the settings recorded with the
    children, and so their fingerprints, are unchanged)."""
    obtain = ("it is built offline by the tiny_generator stage: `dvc repro tiny_generator` "
              "(or `python -m stages.tiny_generator --seed 0 --registry stages/generation/generators.yaml "
              "--out <models_root>/tiny_random`)")
    assert {a: s for a, s in read_registry(REGISTRY).items() if a in ("tiny_random", "sd14", "sd21")} == {
        "tiny_random": GeneratorSpec(alias="tiny_random", model_id="", height=64, width=64, steps=10,
                                     guidance_scale=7.5, scheduler="DDIMScheduler", batch_size=13,
                                     safety_checker=False, base_seed=0, obtain=obtain, random_weights=True),
        "sd14": GeneratorSpec(alias="sd14", model_id="CompVis/stable-diffusion-v1-4", height=512, width=512,
                              steps=50, guidance_scale=7.5, scheduler="", dtype="float16", batch_size=8,
                              safety_checker=True, base_seed=0),
        "sd21": GeneratorSpec(alias="sd21", model_id="stabilityai/stable-diffusion-2-1", height=768, width=768,
                              steps=50, guidance_scale=7.5, scheduler="", dtype="float16", batch_size=4,
                              safety_checker=True, base_seed=0,
                              safety_checker_id="CompVis/stable-diffusion-safety-checker")}


def test_random_weights_labels_a_generator_without_changing_its_children():
    """tiny_random says its weights are random (the detector trained on its children says so), but the flag is
    not a setting: the settings recorded with the children, and so the children, are those of before."""
    from stages.generation.registry import random_weight_generators

    tiny = read_registry(REGISTRY)["tiny_random"]
    assert tiny.random_weights and "random_weights" not in tiny.settings()
    assert tiny.settings() == dataclasses.replace(tiny, random_weights=False).settings()
    assert random_weight_generators(["sd14", "tiny_random", "sd21"]) == ["tiny_random"]


# The settings the first three entries recorded with their children before call_args, cascade and vae_tiling
# existed, byte for byte: new registry fields must not change them (nor so the children's fingerprints).
RECORDED = {
    "tiny_random": '{"alias": "tiny_random", "base_seed": 0, "dtype": "float32", "guidance_scale": 7.5, "height": 64, '
                   '"model_id": "", "negative_prompt": "", "safety_checker": false, "safety_checker_id": "", '
                   '"scheduler": "DDIMScheduler", "steps": 10, "watermark": false, "width": 64}',
    "sd14": '{"alias": "sd14", "base_seed": 0, "dtype": "float16", "guidance_scale": 7.5, "height": 512, "model_id": '
            '"CompVis/stable-diffusion-v1-4", "negative_prompt": "", "safety_checker": true, "safety_checker_id": "", '
            '"scheduler": "", "steps": 50, "watermark": false, "width": 512}',
    "sd21": '{"alias": "sd21", "base_seed": 0, "dtype": "float16", "guidance_scale": 7.5, "height": 768, "model_id": '
            '"stabilityai/stable-diffusion-2-1", "negative_prompt": "", "safety_checker": true, "safety_checker_id": '
            '"CompVis/stable-diffusion-safety-checker", "scheduler": "", "steps": 50, "watermark": false, '
            '"width": 768}'}


@pytest.mark.parametrize("alias", sorted(RECORDED))
def test_new_registry_fields_leave_the_recorded_settings_of_older_entries_unchanged(alias):
    assert json.dumps(get_generator(alias).settings(), sort_keys=True) == RECORDED[alias]


def test_new_registry_fields_are_recorded_only_when_set():
    spec = GeneratorSpec(alias="x", model_id="", height=32, width=32, steps=2, guidance_scale=1,
                         call_args={"max_sequence_length": 77}, vae_tiling=True,
                         cascade=[{"model_id": "a/b", "steps": 3, "guidance_scale": 4}])
    settings = spec.settings()
    assert settings["call_args"] == {"max_sequence_length": 77} and settings["vae_tiling"] is True
    assert settings["cascade"] == [{"model_id": "a/b", "steps": 3, "guidance_scale": 4.0, "call_args": {}}]
    json.dumps(settings)  # plain data


def test_registry_has_an_entry_per_peer_generator_with_its_model_card_values():
    specs = read_registry(REGISTRY)
    expected = {  # alias: (hub id, side, steps, guidance, dtype)
        "sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5", 512, 50, 7.5, "float16"),
        "sdxl": ("stabilityai/stable-diffusion-xl-base-1.0", 1024, 50, 5.0, "float16"),
        "sdxl_turbo": ("stabilityai/sdxl-turbo", 512, 1, 0.0, "float16"),
        "sd_turbo": ("stabilityai/sd-turbo", 512, 1, 0.0, "float16"),
        "sd3_medium": ("stabilityai/stable-diffusion-3-medium-diffusers", 1024, 28, 7.0, "float16"),
        "flux_dev": ("black-forest-labs/FLUX.1-dev", 1024, 50, 3.5, "bfloat16"),
        "flux_schnell": ("black-forest-labs/FLUX.1-schnell", 1024, 4, 0.0, "bfloat16"),
        "pixart_sigma": ("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", 1024, 20, 4.5, "float16"),
        "playground25": ("playgroundai/playground-v2.5-1024px-aesthetic", 1024, 50, 3.0, "float16"),
        "kandinsky3": ("kandinsky-community/kandinsky-3", 1024, 25, 3.0, "float16"),
        "deepfloyd_if": ("DeepFloyd/IF-I-XL-v1.0", 64, 100, 7.0, "float16"),
    }
    for alias, (hub, side, steps, guidance, dtype) in expected.items():
        spec = specs[alias]
        assert (spec.model_id, spec.height, spec.width, spec.steps, spec.guidance_scale, spec.dtype) == (
            hub, side, side, steps, guidance, dtype), alias
        assert not spec.watermark
    assert specs["flux_dev"].call_args == {"max_sequence_length": 512}
    assert specs["flux_schnell"].call_args == {"max_sequence_length": 256}
    assert [(s.model_id, s.steps, s.guidance_scale) for s in specs["deepfloyd_if"].cascade] == [
        ("DeepFloyd/IF-II-L-v1.0", 50, 4.0)]


GOOD = {"model_id": "", "height": 32, "width": 32, "steps": 2, "guidance_scale": 7.5}


@pytest.mark.parametrize(("entry", "message"), [
    ({**GOOD, "stepz": 3}, r"unknown keys \['stepz'\]; known: \[.*'steps'"),
    ({k: v for k, v in GOOD.items() if k != "steps"}, r"missing keys \['steps'\]"),
    ({**GOOD, "height": 36}, r"height and width must be positive multiples of 8 .*got 36x32"),
    ({**GOOD, "width": 0}, r"height and width must be positive multiples of 8 .*got 32x0"),
    ({**GOOD, "steps": "50"}, r"steps must be int, got str '50'"),
    ({**GOOD, "steps": 0}, r"steps and batch_size must be at least 1"),
    ({**GOOD, "guidance_scale": True}, r"guidance_scale must be float, got bool"),
    ({**GOOD, "safety_checker": "yes please"}, r"safety_checker must be bool, got str"),
    ({**GOOD, "dtype": "float64"}, r"dtype must be one of \['float32', 'float16', 'bfloat16'\], got 'float64'"),
    ({**GOOD, "model_id": None}, r"model_id must be str, got NoneType"),
    ("sd14", r"expected a mapping with the keys"),
    ({**GOOD, "call_args": {"max_sequence_length": [1]}}, r"call_args must map names to numbers, strings or booleans"),
    ({**GOOD, "call_args": {"generator": 1}}, r"call_args cannot set 'generator': the stage sets it"),
    ({**GOOD, "call_args": "x"}, r"call_args must be a mapping"),
    ({**GOOD, "cascade": [{"model_id": "a/b"}]}, r"cascade stage 2 must have the keys model_id, steps, guidance_scale"),
    ({**GOOD, "cascade": [{"model_id": "a/b", "steps": "5", "guidance_scale": 4}]}, r"cascade steps must be int"),
    ({**GOOD, "vae_tiling": "yes"}, r"vae_tiling must be bool"),
])
def test_registry_file_entries_are_checked(tmp_path, entry, message):
    path = tmp_path / "generators.yaml"
    path.write_text(yaml.safe_dump({"fine": GOOD, "broken": entry}))
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: broken: {message}"):
        read_registry(path)


def test_registry_file_aliases_and_the_file_itself_are_checked(tmp_path):
    path = tmp_path / "generators.yaml"
    path.write_text(yaml.safe_dump({"sd-14": GOOD}))
    with pytest.raises(InputError, match=rf"^{path}: sd-14: generator alias 'sd-14' .*\(no dashes\)"):
        read_registry(path)
    path.write_text("a:\n  model_id: ''\na:\n  model_id: x\n")  # PyYAML alone would keep the second silently
    with pytest.raises(InputError, match=rf"^{path}: is not valid YAML .*'a' is given twice"):
        read_registry(path)
    path.write_text("- tiny_random\n")
    with pytest.raises(InputError, match=rf"^{path}: expected a mapping of generator aliases"):
        read_registry(path)
    with pytest.raises(InputError, match=rf"^{tmp_path / 'none.yaml'}: generator registry file not found"):
        get_generator("tiny_random", tmp_path / "none.yaml")
    path.write_text(yaml.safe_dump({"mine": {**GOOD, "guidance_scale": 7}}))
    assert get_generator("mine", path).settings()["guidance_scale"] == 7.0  # one setting, one recorded value
    with pytest.raises(InputError, match=rf"^{path}: unknown generator 'sd14'; known: \['mine'\]"):
        get_generator("sd14", path)


def test_dvc_tracks_only_each_instances_own_registry_entry():
    """In dvc.yaml every generate instance and tiny_generator read the registry file they track, and track
    only their own entry of it (the whole file would rerun every generator on any edit)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    generate, tiny = stages["generate"]["do"], stages["tiny_generator"]
    entry = "stages/generation/generators.yaml"
    assert Path(REPO / entry) == REGISTRY
    assert f"--registry {entry} " in generate["cmd"] and f"--registry {entry} " in tiny["cmd"]
    assert {entry: ["${item}"]} in generate["params"] and {entry: ["tiny_random"]} in tiny["params"]
    assert entry not in generate["params"] + tiny["params"] + generate["deps"] + tiny["deps"]


@pytest.mark.parametrize("alias", ["sd14", "sd21"])
def test_missing_paper_model_says_what_to_download_and_which_param(tmp_path, alias):
    spec = get_generator(alias)
    with pytest.raises(InputError) as error:
        load_pipeline(spec, tmp_path / "models")
    message = str(error.value)
    assert f"hf download {spec.model_id} --local-dir {tmp_path / 'models' / alias}" in message
    assert "generate.models_root" in message and "nothing is downloaded (generate --hub is offline)" in message


def test_a_missing_model_reaches_for_the_hub_only_when_allowed(tmp_path, monkeypatch):
    """With <models_root>/<alias> missing and HF_HUB_OFFLINE unset, nothing asks the hub for the id unless the
    hub is allowed (generate --hub download)."""
    from diffusers import DiffusionPipeline

    from stages.contracts.hub import Hub

    asked = []

    def from_pretrained(source, **kwargs):
        asked.append(source)
        raise OSError("no network in the tests")

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # the loader reads the pipeline's config first, then the weights: either is a request to the hub
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", from_pretrained)
    monkeypatch.setattr(DiffusionPipeline, "load_config", from_pretrained)
    spec = get_generator("sd14")
    with pytest.raises(InputError, match="generate --hub is offline"):
        load_pipeline(spec, tmp_path / "models")
    assert asked == []
    with pytest.raises(InputError, match="not on disk and not reachable"):
        load_pipeline(spec, tmp_path / "models", hub=Hub.download)
    assert asked == [spec.model_id]


MODEL_COMMANDS = ["stages.generate", "stages.embed", "stages.detector", "stages.detect", "stages.tiny_generator",
                  "stages.code_train", "stages.code_eval"]


def dummy_args(main, tmp_path: Path) -> list[str]:
    """A value for every required option of a command's `main`: a missing path, the first choice, a number."""
    import enum
    import inspect
    import typing

    hints = typing.get_type_hints(main)
    args = []
    for name, param in inspect.signature(main).parameters.items():
        info = param.default
        if info.default is not ...:
            continue
        kind = hints[name]
        kind = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
        value = (next(iter(kind)).value if isinstance(kind, type) and issubclass(kind, enum.Enum)
                 else {int: "16", float: "0.5"}.get(kind, str(tmp_path / "missing")))  # 16: a valid crop size too
        if type(info).__name__ == "ArgumentInfo":  # positional
            args.append(str(value))
            continue
        flag = next((d for d in info.param_decls or () if d.startswith("--")), f"--{name.replace('_', '-')}")
        args += [flag.split("/")[0], str(value)]
    return args


@pytest.mark.parametrize("module", MODEL_COMMANDS)
def test_every_command_that_loads_a_model_runs_offline(module, tmp_path, monkeypatch):
    """Whatever the caller's environment, the command forbids hub downloads in its own process (and so in its
    DataLoader workers and launched processes): HF_HUB_OFFLINE is set before any hub library is imported."""
    import importlib

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    command = importlib.import_module(module)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(command.app, dummy_args(command.main, tmp_path))
    assert result.exit_code != 0  # every input is missing
    assert os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("TRANSFORMERS_OFFLINE") == "1", module


def test_generate_leaves_the_hub_to_the_environment_when_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from stages.generate import main

    CliRunner().invoke(app, [*dummy_args(main, tmp_path), "--hub", "download"])
    assert "HF_HUB_OFFLINE" not in os.environ


def test_missing_tiny_model_says_which_stage_builds_it(tmp_path):
    with pytest.raises(InputError, match="tiny_generator"):
        load_pipeline(get_generator("tiny_random"), tmp_path)


def test_corrupt_or_incomplete_model_directory_is_named(tmp_path, models):
    import shutil

    broken = tmp_path / "tiny_random"
    broken.mkdir()
    with pytest.raises(InputError, match=r"tiny_random.*model_index.json is missing"):
        load_pipeline(get_generator("tiny_random"), tmp_path)
    shutil.rmtree(broken)
    shutil.copytree(models / "tiny_random", broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(InputError, match=r"component folder vae/ .* is missing"):
        load_pipeline(get_generator("tiny_random"), tmp_path)
    shutil.rmtree(broken)
    shutil.copytree(models / "tiny_random", broken)
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # a truncated download
    with pytest.raises(InputError, match=rf"{broken}.*corrupt or incomplete"):
        load_pipeline(get_generator("tiny_random"), tmp_path)


def test_unknown_scheduler_lists_compatible_ones(models):
    spec = register(GeneratorSpec(alias="tiny_bad_scheduler", model_id="", height=32, width=32, steps=2,
                                  guidance_scale=1.0, scheduler="NoSuchScheduler", safety_checker=False))
    try:
        (models / "tiny_bad_scheduler").symlink_to(models / "tiny_random")
        with pytest.raises(InputError, match=r"unknown scheduler 'NoSuchScheduler'.*EulerDiscreteScheduler"):
            load_pipeline(spec, models)
    finally:
        unregister("tiny_bad_scheduler")
        (models / "tiny_bad_scheduler").unlink(missing_ok=True)


# ----------------------------------------------------------------------------------- tiny generator, seeds


def test_tiny_generator_loads_through_from_pretrained_with_clip_tokens(models, tmp_path):
    import open_clip
    from diffusers import StableDiffusionPipeline

    pipeline = load_pipeline(get_generator("tiny_random"), models)
    assert isinstance(pipeline, StableDiffusionPipeline) and type(pipeline.scheduler).__name__ == "DDIMScheduler"
    assert pipeline.vae_scale_factor == 8
    text = "A giraffe, standing next to a tree!"
    ids = build_tokenizer(tmp_path)([text]).input_ids[0]
    assert ids == open_clip.tokenize([text])[0].tolist()[:len(ids)]
    assert pipeline.tokenizer([text]).input_ids[0] == ids


def test_tiny_generator_is_built_for_the_size_of_its_registry_entry(tmp_path):
    from stages import tiny_generator

    registry = tmp_path / "generators.yaml"
    registry.write_text(yaml.safe_dump({"tiny_random": {**GOOD, "height": 40, "width": 40}}))
    result = CliRunner().invoke(tiny_generator.app, ["--registry", str(registry), "--seed", "0",
                                                       "--out", str(tmp_path / "tiny")])
    assert result.exit_code == 0 and "40 px" in result.output, result.output
    assert json.loads((tmp_path / "tiny" / "unet" / "config.json").read_text())["sample_size"] == 5


def test_tiny_generator_files_do_not_depend_on_the_environment(models, tmp_path):
    # the module fixture was built in-process with HF_HUB_OFFLINE=1 (conftest); the hub reads that variable at
    # import, so build again in a process without it: the saved model must be the same bytes
    environment = {k: v for k, v in env().items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    subprocess.run([sys.executable, "-m", "stages.tiny_generator", "--seed", "0", "--registry", str(REGISTRY),
                    "--out", str(tmp_path / "tiny_random")], env=environment, check=True, capture_output=True)
    assert files(tmp_path / "tiny_random") == files(models / "tiny_random")


def test_child_seed_depends_on_cluster_caption_and_base_seed_only():
    seeds = {gen.child_seed(c, i, 0) for c in range(50) for i in range(5)}
    assert len(seeds) == 250 and all(0 <= s < 2**63 for s in seeds)
    assert gen.child_seed(7, 2, 0) == gen.child_seed(7, 2, 0) != gen.child_seed(7, 2, 1)
    assert gen.child_seed(7, 2, 0) == 3651048400458094868  # pinned: changing it changes every child


def test_shards_are_a_pure_function_of_the_children_and_the_shard_size(clusters):
    children = gen.plan_children(read_clusters(clusters), base_seed=0)
    assert [c.child_id for c in children[:4]] == ["c000000000000_0", "c000000000000_1", "c000000000000_2",
                                                  "c000000000001_0"]
    shards = gen.plan_shards(children, 5)
    assert [len(s.children) for s in shards] == [5, 5, 2] and shards[2].name == "shard-00002.parquet"
    assert [s.index for s in gen.shards_of_process(shards, 1, 2)] == [1]
    assert sum((list(s.children) for s in shards), []) == children


def test_seeds_and_noise_do_not_depend_on_batch_size(clusters, models, tmp_path, tiny_test):
    (models / "tiny_test").symlink_to(models / "tiny_random")
    try:
        generate(clusters, models, tmp_path / "b1", "tiny_test", batch_size=1)
        generate(clusters, models, tmp_path / "b5", "tiny_test", batch_size=5)
    finally:
        (models / "tiny_test").unlink()
    one, five = contract.read_manifest(tmp_path / "b1"), contract.read_manifest(tmp_path / "b5")
    assert one.equals(five)  # same children, seeds, shards, rows
    assert contract.read_settings(tmp_path / "b1") == contract.read_settings(tmp_path / "b5")
    pixels = {name: {c: np.asarray(Image.open(io.BytesIO(b)), np.int16)
                     for c, b in contract.iter_image_bytes(tmp_path / name)} for name in ("b1", "b5")}
    # The same noise per child: batching changes a pixel by at most float rounding (after JPEG), while two
    # different children differ everywhere.
    for child, image in pixels["b1"].items():
        assert np.abs(image - pixels["b5"][child]).max() <= 6
    first, second = list(pixels["b1"].values())[:2]
    assert np.abs(first - second).mean() > 10


# ------------------------------------------------------------------------------------------ the children


def test_stage_writes_the_children_contract(clusters, models, tmp_path):
    out = tmp_path / "children"
    result = CliRunner().invoke(app, ["--generator", "tiny_random", "--registry", str(REGISTRY), "--clusters",
                                      str(clusters), "--models-root", str(models), "--out", str(out), "--metrics",
                                      str(tmp_path / "m.json"), *OPTIONS, "--shard-size", "5"])
    assert result.exit_code == 0, result.output
    manifest = contract.read_manifest(out)
    assert list(manifest.columns) == [*contract.MANIFEST_COLUMNS, *contract.RECORDED_COLUMNS]
    import pyarrow.parquet as pq

    assert [str(t) for t in pq.read_schema(out / contract.MANIFEST).types] == [
        "string", "int64", "int16", "string", "int64", "string", "string", "int32", "bool", "string", "bool"]
    frame = read_clusters(clusters)
    assert manifest["caption"].tolist() == [c for caps in frame["captions"] for c in caps]
    assert manifest["shard"].tolist() == ["shard-00000.parquet"] * 5 + ["shard-00001.parquet"] * 5 + \
        ["shard-00002.parquet"] * 2
    keys = zip(manifest["cluster_id"], manifest["caption_index"], strict=True)
    assert manifest["seed"].tolist() == [gen.child_seed(c, i, 0) for c, i in keys]
    # tiny_random runs no safety checker: its children are recorded as not checked (null), not as clean
    assert manifest["nsfw"].isna().all() and set(manifest["generator"]) == {"tiny_random"}
    assert not manifest["truncated"].any()
    settings = contract.read_settings(out)
    assert (settings["steps"], settings["height"], settings["encoding"], settings["jpeg_quality"]) == (10, 64,
                                                                                                      "jpeg", 95)
    images = dict(contract.iter_image_bytes(out))
    assert all(Image.open(io.BytesIO(b)).format == "JPEG" for b in images.values())
    assert Image.open(io.BytesIO(images["c000000000000_0"])).size == (64, 64)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics == {"children": {"train": 6.0, "val": 3.0, "test": 3.0, "total": 12.0},
                       "nsfw": {"total": 0.0, "checked": 0.0, "fraction": None}, "prompts": {"truncated": 0.0}}
    assert "not checked by a safety checker, 0 prompts truncated" in result.output


def test_stage_generates_with_the_entry_of_the_registry_file_it_is_given(clusters, models, tmp_path):
    registry = tmp_path / "generators.yaml"
    registry.write_text(yaml.safe_dump({"tiny_yaml": {**GOOD, "scheduler": "DDIMScheduler", "batch_size": 12,
                                                      "safety_checker": False, "base_seed": 3}}))
    root = tmp_path / "models"
    root.mkdir()
    (root / "tiny_yaml").symlink_to(models / "tiny_random")
    args = ["--registry", str(registry), "--clusters", str(clusters), "--models-root", str(root), "--out",
            str(tmp_path / "children"), "--metrics", str(tmp_path / "m.json"), *OPTIONS]
    result = CliRunner().invoke(app, ["--generator", "tiny_yaml", *args])
    assert result.exit_code == 0, result.output
    settings = contract.read_settings(tmp_path / "children")
    assert (settings["alias"], settings["steps"], settings["height"], settings["base_seed"]) == ("tiny_yaml", 2, 32, 3)
    manifest = contract.read_manifest(tmp_path / "children")
    keys = zip(manifest["cluster_id"], manifest["caption_index"], strict=True)
    assert manifest["seed"].tolist() == [gen.child_seed(c, i, 3) for c, i in keys]
    assert Image.open(io.BytesIO(next(contract.iter_image_bytes(tmp_path / "children"))[1])).size == (32, 32)
    # the shipped entries are not in this file
    unknown = CliRunner().invoke(app, ["--generator", "tiny_random", *args])
    assert unknown.exit_code == 2, unknown.output
    assert f"{registry}: unknown generator 'tiny_random'; known: ['tiny_yaml']" in unknown.output


def test_shards_open_with_datasets_and_pyarrow(clusters, models, tmp_path):
    import datasets
    import pyarrow.parquet as pq

    out = tmp_path / "children"
    generate(clusters, models, out, encoding=gen.Encoding.png, shard_size=5)
    shards = sorted(str(p) for p in (out / "shards").iterdir())
    loaded = datasets.load_dataset("parquet", data_files=shards, split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(loaded.features["image"], datasets.Image) and len(loaded) == 12
    picture = loaded[0]["image"]
    assert picture.format == "PNG" and picture.size == (64, 64) and loaded[0]["child_id"] == "c000000000000_0"
    table = pq.read_table(shards[0])
    assert table.column_names == ["child_id", "image"]
    assert table.column("image").to_pylist()[0]["path"] == "c000000000000_0.png"


def test_safety_checker_hits_are_recorded_and_counted(clusters, models, tmp_path):
    register(GeneratorSpec(alias="tiny_safe", model_id="", height=32, width=32, steps=2, guidance_scale=7.5,
                           batch_size=4, safety_checker=True))
    try:
        result = generate(clusters, models, tmp_path / "children", "tiny_safe")
    finally:
        unregister("tiny_safe")
    manifest = contract.read_manifest(tmp_path / "children")
    assert manifest["nsfw"].all() and result["nsfw"] == {"total": 12.0, "checked": 12.0, "fraction": 1.0}
    # diffusers blacks out flagged images; they are kept (and flagged) so no child goes missing
    _, data = next(contract.iter_image_bytes(tmp_path / "children"))
    assert np.asarray(Image.open(io.BytesIO(data))).max() == 0


def test_a_separate_safety_checker_is_added_or_its_download_named(clusters, models, tmp_path):
    """SD 2.x ships without a checker: the registry names one, read from <models_root>/<alias>/safety_checker/,
    inside the generator's folder that is the stage's DVC dependency (never fetched from the hub unasked)."""
    import shutil

    spec = register(GeneratorSpec(alias="tiny_sep", model_id="", height=32, width=32, steps=2, guidance_scale=7.5,
                                  batch_size=4, safety_checker=True, safety_checker_id="someone/tiny-checker"))
    root = tmp_path / "models"
    shutil.copytree(models / "tiny_random", root / "tiny_sep")
    checker_dir = root / "tiny_sep" / "safety_checker"
    try:
        assert safety_checker_dir(spec, root) == checker_dir and checker_dir.is_relative_to(model_dir(spec, root))
        with pytest.raises(InputError, match=rf"hf download someone/tiny-checker --local-dir {checker_dir}"):
            load_pipeline(spec, root)
        checker, processor = flagging_safety_checker()
        checker.save_pretrained(checker_dir)
        processor.save_pretrained(checker_dir)
        result = generate(clusters, root, tmp_path / "children", "tiny_sep")
    finally:
        unregister("tiny_sep")
    assert result["nsfw"]["total"] == 12.0


def test_the_model_folder_dependency_covers_every_folder_generate_reads():
    """dvc.yaml's generate instance depends on <models_root>/<alias>; SD 2.1's separate checker lives inside."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["generate"]["do"]
    assert "${generate.models_root}/${item}" in stage["deps"]
    spec = get_generator("sd21")
    assert safety_checker_dir(spec, Path("models")) == Path("models/sd21/safety_checker")


def test_bad_params_and_unknown_generator_exit_with_a_message(clusters, models, tmp_path):
    for args, message in ((["--generator", "nope"], f"{REGISTRY}: unknown generator 'nope'"),
                          (["--jpeg-quality", "101"], "Invalid value for '--jpeg-quality'"),
                          (["--shard-size", "0"], "Invalid value for '--shard-size'"),
                          (["--batch-size", "-1"], "PARENTAGE_GENERATE_BATCH_SIZE (--batch-size)")):
        result = CliRunner().invoke(app, ["--generator", "tiny_random", "--registry", str(REGISTRY), "--clusters",
                                          str(clusters), "--models-root", str(models), "--out", str(tmp_path / "c"),
                                          "--metrics", str(tmp_path / "m.json"), *OPTIONS, *args])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "c").exists()


def test_changed_settings_regenerate_stale_shards(clusters, models, tmp_path):
    """DVC keeps the persisted folder across runs: shards made with other settings must not survive."""
    generate(clusters, models, tmp_path / "reused", jpeg_quality=60, shard_size=5)
    (tmp_path / "reused" / "shards" / ".shard-00001.parquet.tmp-999").write_bytes(b"half")
    (tmp_path / "reused" / "shards" / "shard-00007.parquet").write_bytes(b"not in the plan")
    generate(clusters, models, tmp_path / "reused", jpeg_quality=95, shard_size=5)
    generate(clusters, models, tmp_path / "fresh", jpeg_quality=95, shard_size=5)
    assert files(tmp_path / "reused") == files(tmp_path / "fresh")


# ------------------------------------------------------------------------------- kill, resume, distribute


@pytest.mark.slow
def test_sigkill_then_resume_is_byte_identical_to_an_uninterrupted_run(clusters, models, tmp_path):
    out = tmp_path / "killed"
    args = stage_args(clusters, models, out, "--shard-size", "1", "--batch-size", "1")
    process = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "shards").glob("shard-*.parquet"))) < 2:
        assert process.poll() is None, process.stdout.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list((out / "shards").glob("shard-*.parquet")))
    assert 2 <= finished < 12 and not (out / contract.MANIFEST).exists()

    resumed = subprocess.run([sys.executable, *args], cwd=REPO, env=env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming, {finished} of 12 shards already finished" in resumed.stdout
    generate(clusters, models, tmp_path / "whole", shard_size=1, batch_size=1, device="cpu")
    assert files(out) == files(tmp_path / "whole") and len(files(out)) == 14  # 12 shards, manifest, marker
    assert (tmp_path / "killed.json").read_bytes() == (tmp_path / "whole.json").read_bytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_accelerate_equal_one(clusters, models, tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    # On a machine without GPUs, --multi_gpu starts torch's elastic launcher with the gloo backend on CPU
    # (accelerate's --cpu flag starts a single process).
    launched = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
                               "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                               str(free_port()), *stage_args(clusters, models, tmp_path / "two", "--shard-size", "5")],
                              cwd=REPO, env=env(), capture_output=True, text=True)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "process 0 of 2: 2 of 3 missing shards" in launched.stdout
    assert "process 1 of 2: 1 of 3 missing shards" in launched.stdout
    generate(clusters, models, tmp_path / "one", shard_size=5, device="cpu")
    assert files(tmp_path / "two") == files(tmp_path / "one")


# ----------------------------------------------------------------------------------------------- DVC


@pytest.mark.slow
def test_editing_one_registry_entry_reruns_only_its_generator(dvc_repo, models):
    """Two generators on the tiny model under two aliases, 13 demo parents with one caption each, 1 step: after
    a repro, editing tiny_b's entry in generators.yaml changes generate@tiny_b (its params), not tiny_a."""
    import shutil

    repo = dvc_repo.path
    entry = {**GOOD, "steps": 1, "scheduler": "DDIMScheduler", "batch_size": 13, "safety_checker": False}
    registry = repo / "stages" / "generation" / "generators.yaml"
    registry.write_text(yaml.safe_dump({"tiny_a": entry, "tiny_b": entry}))
    for alias in ("tiny_a", "tiny_b"):
        shutil.copytree(models / "tiny_random", repo / "models" / alias)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["clusters"]["captions_per_parent"] = 1
    params["generate"].update(generators=["tiny_a", "tiny_b"])
    # the check stage, first in every repro, wants every generator the pipeline reads to be generated
    params["model"]["generators"] = params["code_train"]["data"]["generators"] = ["tiny_a"]
    params["children"]["sets"] = ["tiny_a"]
    params["code_eval"]["data"].update(generators=["tiny_a"], fit=["tiny_a"])
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    first = dvc_repo("dvc", "repro", "generate")
    assert "Running stage 'generate@tiny_a'" in first and "Running stage 'generate@tiny_b'" in first
    assert json.loads(dvc_repo("dvc", "status", "--json", "generate")) == {}
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "two generators")

    registry.write_text(yaml.safe_dump({"tiny_a": entry, "tiny_b": {**entry, "steps": 2}}))
    status = json.loads(dvc_repo("dvc", "status", "--json", "generate"))
    # DVC lists a params file under "changed deps", naming the keys that changed
    assert status == {"generate@tiny_b": [{"changed deps": {"stages/generation/generators.yaml": {
        "tiny_b": "modified"}}}]}, status
    dry = dvc_repo("dvc", "repro", "--dry", "generate")
    assert "Running stage 'generate@tiny_b'" in dry and "Running stage 'generate@tiny_a'" not in dry, dry
