"""Every architecture family runs through the generate stage: a tiny random-weight pipeline of each family's
shape (tests/tiny_pipelines.py), saved as a diffusers directory and loaded by DiffusionPipeline.from_pretrained,
gives per-child seeded children in shards, resumes byte for byte, records 'not checked' where no safety
checker runs, counts the prompts a text encoder truncates, and takes the runtime speed settings."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from stages.contracts import children as contract
from stages.contracts.errors import InputError
from stages.generate import run
from stages.generation import shards as gen
from stages.generation import speed
from stages.generation.registry import GeneratorSpec, load_generator, register, unregister
from tests import tiny_pipelines
from tests.fixtures import write_clusters

torch.set_num_threads(1)  # the byte comparisons need the same arithmetic in every run
LONG = " ".join(["dog"] * 90)  # 90 words: more tokens than CLIP's 77 and DeepFloyd IF's 77 T5 tokens
NO_CLEANING = {"clean_caption": False}  # bs4 is not installed here; the entries say so instead of skipping silently
# family: (size, extra registry fields). T5 families cut at tiny_pipelines.T5_LIMIT through call_args.
FAMILIES = {
    "sd": (32, {}),
    "sdxl": (32, {}),
    "sd3": (32, {"call_args": {"max_sequence_length": tiny_pipelines.T5_LIMIT}}),
    "flux": (32, {"call_args": {"max_sequence_length": tiny_pipelines.T5_LIMIT}}),
    "pixart": (32, {"call_args": {"max_sequence_length": tiny_pipelines.T5_LIMIT, "use_resolution_binning": False,
                                  **NO_CLEANING}}),
    "cascade": (16, {"call_args": NO_CLEANING,
                     "cascade": [{"model_id": "tests/tiny-if-ii", "steps": 2, "guidance_scale": 4.0,
                                  "call_args": NO_CLEANING}]}),
}
OUTPUT = {"cascade": 32}  # stage II upsamples 16 px to 32


@pytest.fixture(scope="module")
def clusters(tmp_path_factory) -> Path:
    """2 parents x 2 captions; caption 1 of parent 0 is longer than any text encoder takes."""
    path = write_clusters(tmp_path_factory.mktemp("clusters"), n_parents=2, n_captions=2)
    table = pq.read_table(path)
    captions = [["a man with a dog", LONG], ["a cat on the table", "two people on the street"]]  # few T5 tokens
    column = pa.array(captions, table.schema.field("captions").type)
    table = table.set_column(table.schema.get_field_index("captions"), "captions", column)
    pq.write_table(table.replace_schema_metadata(table.schema.metadata), path)
    return path


def spec_of(family: str) -> GeneratorSpec:
    size, extra = FAMILIES[family]
    return GeneratorSpec(alias=f"tiny_{family}", model_id="", height=size, width=size, steps=2, guidance_scale=5.0,
                         batch_size=4, safety_checker=False, **extra)


def generate(clusters: Path, models: Path, out: Path, alias: str, **options) -> dict:
    settings = {"encoding": gen.Encoding.png, "jpeg_quality": 95, "shard_size": 2, "batch_size": 0, "device": "cpu",
                **options}
    return run(alias, clusters, models, out, out.parent / f"{out.name}.json", registry=Path("unused.yaml"),
               progress=False, **settings)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def pixels(folder: Path) -> dict[str, np.ndarray]:
    return {c: np.asarray(Image.open(io.BytesIO(b)), np.int16) for c, b in contract.iter_image_bytes(folder)}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_runs_through_the_stage_with_seeds_shards_and_resume(family, clusters, tmp_path):
    models = tmp_path / "models"
    spec = register(spec_of(family))
    try:
        tiny_pipelines.save_family(family, models / spec.alias)
        result = generate(clusters, models, tmp_path / "whole", spec.alias)
        manifest = contract.read_manifest(tmp_path / "whole")
        # shards and per-child seeds
        assert manifest["shard"].tolist() == ["shard-00000.parquet"] * 2 + ["shard-00001.parquet"] * 2
        keys = zip(manifest["cluster_id"], manifest["caption_index"], strict=True)
        assert manifest["seed"].tolist() == [gen.child_seed(c, i, 0) for c, i in keys]
        side = OUTPUT.get(family, spec.height)
        images = pixels(tmp_path / "whole")
        assert {im.shape[:2] for im in images.values()} == {(side, side)}
        # no safety checker: not checked, never 'clean'; the long caption is cut by a text encoder and counted
        assert manifest["nsfw"].isna().all()
        assert manifest["truncated"].tolist() == [False, True, False, False]
        assert result["nsfw"] == {"total": 0.0, "checked": 0.0, "fraction": None}
        assert result["prompts"] == {"truncated": 1.0}
        assert json.loads((tmp_path / "whole.json").read_text()) == result
        # resume: a lost shard is made again, byte for byte
        whole = files(tmp_path / "whole")
        (tmp_path / "whole" / "shards" / "shard-00001.parquet").unlink()
        generate(clusters, models, tmp_path / "whole", spec.alias)
        assert files(tmp_path / "whole") == whole
        # each child's noise is its own: one prompt per call gives the same children up to float rounding
        generate(clusters, models, tmp_path / "one", spec.alias, batch_size=1)
        alone = pixels(tmp_path / "one")
        for child, image in images.items():
            assert np.abs(image - alone[child]).max() <= 3, child
        first, second = list(images.values())[:2]
        assert np.abs(first - second).mean() > 1
    finally:
        unregister(spec.alias)


def test_cascade_shares_the_text_encoder_and_loads_stage_two_from_its_folder(tmp_path):
    spec = spec_of("cascade")
    tiny_pipelines.save_family("cascade", tmp_path / spec.alias)
    first, second = load_generator(spec, tmp_path)
    assert (type(first).__name__, type(second).__name__) == ("IFPipeline", "IFSuperResolutionPipeline")
    assert second.text_encoder is first.text_encoder and second.watermarker is None
    import shutil

    shutil.rmtree(tmp_path / spec.alias / "stage2")
    with pytest.raises(InputError, match=r"hf download tests/tiny-if-ii --local-dir .*tiny_cascade/stage2"):
        load_generator(spec, tmp_path)


def test_a_safety_checker_where_the_pipeline_has_none_is_a_named_error(tmp_path):
    spec = GeneratorSpec(alias="tiny_flux", model_id="", height=32, width=32, steps=1, guidance_scale=0.0,
                         safety_checker=True)
    tiny_pipelines.save_family("flux", tmp_path / "tiny_flux")
    with pytest.raises(InputError, match=r"FluxPipeline has none to run.*set safety_checker: false"):
        load_generator(spec, tmp_path)


def test_call_args_must_be_arguments_of_the_pipeline_and_caption_cleaning_must_be_able_to_run(tmp_path):
    tiny_pipelines.save_family("pixart", tmp_path / "tiny_pixart")
    base = {"alias": "tiny_pixart", "model_id": "", "height": 32, "width": 32, "steps": 1, "guidance_scale": 1.0,
            "safety_checker": False}
    with pytest.raises(InputError, match=r"call_args \['max_seq_len'\] are not arguments of PixArtSigmaPipeline"):
        load_generator(GeneratorSpec(**base, call_args={"max_seq_len": 5, **NO_CLEANING}), tmp_path)
    import importlib.util

    if importlib.util.find_spec("bs4") is None or importlib.util.find_spec("ftfy") is None:
        with pytest.raises(InputError, match=r"cleans captions with bs4 and ftfy.*clean_caption: false"):
            load_generator(GeneratorSpec(**base), tmp_path)


def test_sdxl_watermark_follows_the_registry_whatever_is_installed(tmp_path, monkeypatch):
    """SDXL adds an invisible watermark whenever invisible-watermark is installed: the entry decides instead."""
    from diffusers.pipelines.stable_diffusion_xl import pipeline_stable_diffusion_xl as module

    tiny_pipelines.save_family("sdxl", tmp_path / "tiny_sdxl")
    spec = GeneratorSpec(alias="tiny_sdxl", model_id="", height=32, width=32, steps=1, guidance_scale=1.0,
                         safety_checker=False)
    marked = GeneratorSpec(**{**spec.__dict__, "watermark": True})
    with pytest.raises(InputError, match="asks for a watermark but StableDiffusionXLPipeline adds none"):
        load_generator(marked, tmp_path)  # invisible-watermark is not installed here

    class Marker:
        def apply_watermark(self, images):
            return images

    # as on a machine with invisible-watermark installed
    monkeypatch.setattr(module, "is_invisible_watermark_available", lambda: True)
    monkeypatch.setattr(module, "StableDiffusionXLWatermarker", Marker, raising=False)
    (pipeline,) = load_generator(spec, tmp_path)
    assert pipeline.watermark is None
    (pipeline,) = load_generator(marked, tmp_path)
    assert isinstance(pipeline.watermark, Marker)


# ------------------------------------------------------------------------------------ the pieces, fast


class FakeTokenizer:
    """Splits on spaces; an instance of a class the recorder must stand in for without changing results."""

    model_max_length = 5

    def __call__(self, text, padding=None, max_length=None, truncation=False, add_special_tokens=True, **_):
        texts = [text] if isinstance(text, str) else text
        ids = [[len(w) for w in t.split()] for t in texts]
        if truncation:
            ids = [i[:max_length] for i in ids]
        return type("Encoding", (), {"input_ids": ids})()


class FakePipeline:
    def __init__(self) -> None:
        self.tokenizer = FakeTokenizer()
        self.tokenizer_2 = FakeTokenizer()

    def __call__(self, prompt, negative):
        untruncated = self.tokenizer(prompt)  # the pipelines' own warning check: not counted
        first = self.tokenizer(prompt, truncation=True, max_length=3).input_ids
        self.tokenizer(negative, truncation=True, max_length=1)  # the negative prompt: not counted
        second = self.tokenizer_2(prompt, truncation=True, max_length=5).input_ids
        return untruncated, first, second


def test_truncation_is_counted_from_the_calls_the_pipeline_makes_without_changing_them():
    pipeline = FakePipeline()
    prompts = ["a b", "a b c d", "a b c d e f"]
    with gen.truncation_counter([pipeline]) as counter:
        _, first, second = pipeline(prompts, ["x y"] * 3)
    assert first == [[1, 1], [1, 1, 1], [1, 1, 1]] and second == [[1, 1], [1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert counter.flags(3) == [False, True, True]
    assert isinstance(pipeline.tokenizer, FakeTokenizer)  # put back


def test_safety_flags_read_either_field_and_say_not_checked_when_absent():
    class Output:
        pass

    output = Output()
    assert gen.safety_flags(output, 2) == [None, None]  # SDXL, FLUX: no such field
    output.nsfw_content_detected = None  # SD with its checker off
    assert gen.safety_flags(output, 2) == [None, None]
    output.nsfw_detected = [True, False]  # DeepFloyd IF's name
    assert gen.safety_flags(output, 2) == [True, False]


def test_speed_settings_are_read_from_the_environment_and_checked():
    assert speed.Speed.from_env({}) == speed.Speed()
    knobs = speed.Speed.from_env({"PARENTAGE_GENERATE_COMPILE": "1", "PARENTAGE_GENERATE_CHANNELS_LAST": "0",
                                  "PARENTAGE_GENERATE_VAE_SLICING": "1", "PARENTAGE_GENERATE_ATTENTION": "native"})
    assert knobs == speed.Speed(attention="native", compile=True, channels_last="0", vae_slicing="1")
    with pytest.raises(InputError, match=r"PARENTAGE_GENERATE_ATTENTION: unknown attention backend 'fast'"):
        speed.Speed.from_env({"PARENTAGE_GENERATE_ATTENTION": "fast"})
    with pytest.raises(InputError, match=r"unknown attention backend 'flash_hub'"):  # would download kernels
        speed.Speed.from_env({"PARENTAGE_GENERATE_ATTENTION": "flash_hub"})
    with pytest.raises(InputError, match=r"PARENTAGE_GENERATE_VAE_SLICING: is 'yes'; expected 0, 1 or auto"):
        speed.Speed.from_env({"PARENTAGE_GENERATE_VAE_SLICING": "yes"})


def test_speed_settings_keep_the_pixels(tmp_path):
    """Attention backend, channels-last and VAE slicing change no child beyond float rounding."""
    from stages.generation.tiny import TinyConfig, save_pipeline

    save_pipeline(TinyConfig(resolution=32), tmp_path / "tiny_sd")
    spec = GeneratorSpec(alias="tiny_sd", model_id="", height=32, width=32, steps=2, guidance_scale=5.0,
                         safety_checker=False)
    children = [gen.Child(f"c{k}", k, 0, f"a photo {k}", gen.child_seed(k, 0, 0), "train") for k in range(2)]
    (plain,) = load_generator(spec, tmp_path)
    reference, *_ = gen.call_pipeline(plain, spec, children)
    (fast,) = load_generator(spec, tmp_path)
    applied = speed.apply([fast], speed.Speed(attention="native", channels_last="1", vae_slicing="1"),
                          batch_size=2, height=32, width=32)
    assert applied == ["VAE slicing", "attention native", "channels-last"]
    images, *_ = gen.call_pipeline(fast, spec, children)
    for a, b in zip(reference, images, strict=True):
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 2
