"""Hostile input, as a user who tries to break the commands would give it: every bad value and file ends in a
clear error (exit code 2, one message naming the option or the file) or a counted skip; never a hang, a crash
or a traceback."""

from __future__ import annotations

import io
import json
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from stages.clusters import Source
from stages.contracts.errors import InputError, Skips
from stages.imaging.load import inspect_image, load_rgb
from tests.images import photo
from tests.test_clusters import coco_json, five, run, run_coco
from tests.wild_files import write_png_bomb


# ------------------------------------------------------------------------------------------- images
def tiff(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF")
    return buffer.getvalue()


def test_float_tiff_is_read_with_its_range():
    ramp = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    pixels = np.asarray(load_rgb(tiff(ramp)))
    assert pixels.shape == (32, 32, 3) and pixels.min() == 0 and pixels.max() == 255, "not all black"
    assert abs(pixels.mean() - 127.5) < 1


@pytest.mark.parametrize(("array", "problem"), [
    (np.full((8, 8), 1000.0, np.float32), "float pixels range 1000..1000"),
    (np.full((8, 8), np.nan, np.float32), "float pixels range nan..nan"),
    (np.full((8, 8), 2**20, np.int32), "32-bit integer pixels range 1048576..1048576"),
])
def test_images_with_no_colour_meaning_are_refused_by_name(array, problem):
    for read in (load_rgb, inspect_image):
        with pytest.raises(InputError, match=problem) as caught:
            read(tiff(array), where="odd.tif")
        assert caught.value.where == "odd.tif"


def test_16_bit_data_in_32_bit_integers_is_scaled_not_saturated():
    pixels = np.asarray(load_rgb(tiff(np.full((8, 8), 40_000, np.int32))))
    assert pixels.max() == 40_000 // 257


@pytest.mark.parametrize(("orientation", "rotated", "size"), [
    (1, False, (30, 20)), (3, True, (30, 20)), (6, True, (20, 30)), (9, False, (30, 20)), (65535, False, (30, 20))])
def test_exif_rotated_only_when_a_rotation_happens(orientation, rotated, size):
    image = Image.new("RGB", (30, 20))
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    info = inspect_image(buffer.getvalue())
    assert (info.exif_rotated, (info.width, info.height)) == (rotated, size)
    assert load_rgb(buffer.getvalue()).size == size


def test_max_pixels_above_pillows_limit_is_honoured(tmp_path):
    """Pillow refuses over 2 x 89M pixels in open(); a user who raises --max-pixels past that gets the file
    read (here a header-only bomb: decoding then fails on its stub data, not on its size)."""
    header = write_png_bomb(tmp_path / "big.png", 14_000, 14_000, real_data=False)  # 196M pixels
    with pytest.raises(InputError, match="over the limit|decompression bomb"):
        load_rgb(header)
    with pytest.raises(InputError) as caught:
        load_rgb(header, max_pixels=200_000_000)
    assert "decompression bomb" not in str(caught.value) and "over the limit" not in str(caught.value)


@pytest.mark.slow
def test_a_real_15000_pixel_square_jpeg_is_read_when_allowed(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("L", (15_000, 15_000), 128).save(path, quality=50)
    with pytest.raises(InputError, match="over the limit|decompression bomb"):
        inspect_image(path)
    assert inspect_image(path, max_pixels=15_000 * 15_000).width == 15_000


def test_a_bomb_is_an_input_error_whatever_the_warning_filters(tmp_path):
    """Warning filters are process-wide: another thread (or the user's -W error) may have made Pillow's
    DecompressionBombWarning an error while this thread opens a file between Pillow's limit and twice it."""
    bomb = write_png_bomb(tmp_path / "bomb.png", 10_000, 10_000, real_data=False)  # 100M: Pillow only warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="bomb"):
            inspect_image(bomb)
    before = list(warnings.filters)
    with pytest.raises(InputError, match="over the limit"):
        inspect_image(bomb)
    assert warnings.filters == before, "reading an image leaves the process's warning filters alone"


def test_clusters_image_check_in_threads_skips_bombs(tmp_path):
    from stages.sources.readers import Record
    from stages.sources.table import check_images

    records = []
    for i in range(24):
        path = tmp_path / f"{i}.png"
        if i % 2:
            write_png_bomb(path, 10_000, 10_000, real_data=False)
        else:
            photo(i, (64, 64)).save(path)
        records.append(Record(str(i), path, ["c"], where=f"row {i}"))
    skips = Skips(skip=True)
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(errors, check_images, records, skips, workers=8,
                                                    progress=False))
    thread.start()
    thread.join(120)
    assert not errors, errors
    assert skips.counts == {"unreadable_image": 12}


def _catch(errors: list[BaseException], function, *args, **kwargs) -> None:
    try:
        function(*args, **kwargs)
    except BaseException as error:  # noqa: BLE001 - handed to the test thread
        errors.append(error)


# ------------------------------------------------------------------------------------ caption sources
@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """Ten photographs with five captions each, as tests.test_clusters builds them."""
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    for i in range(1, 11):
        photo(i).save(root / "val2017" / f"{i:012d}.jpg")
    coco_json(root / "annotations" / "captions_val2017.json",
              [(i, f"{i:012d}.jpg") for i in range(1, 11)], {i: five(str(i)) for i in range(1, 11)})
    return root


@pytest.mark.parametrize("caption", [None, float("nan"), True, 7, ["a"]])
def test_a_caption_that_is_not_a_string_is_a_bad_row(tmp_path, coco, caption):
    path = coco / "annotations" / "captions_val2017.json"
    data = json.loads(path.read_text())
    annotation = next(a for a in data["annotations"] if a["image_id"] == 4)
    annotation["caption"] = caption
    path.write_text(json.dumps(data))  # NaN is written as JSON's NaN, which Python reads back
    with pytest.raises(InputError, match="expected a string") as error:
        run_coco(coco, tmp_path)
    assert f"annotation {annotation['id']} (image 4)" in str(error.value)
    result = run_coco(coco, tmp_path, skip_bad=True)
    assert result["skipped"]["bad_caption"] == 1 and result["parents"]["total"] == 9
    table = pq.read_table(tmp_path / "clusters.parquet").to_pylist()
    assert not {"None", "nan", "True", "7"} & {c for row in table for c in row["captions"]}


@pytest.mark.parametrize(("value", "problem"), [
    (5, "must be a list of strings, got int"), ({"a": 1}, "must be a list of strings, got dict"),
    (None, "column 'captions' is null"), (["ok", None, "x", "y", "z"], "captions[1]"),
    (["ok", float("nan"), "x", "y", "z"], "captions[1]"), (["ok", True, "x", "y", "z"], "True"),
])
def test_a_captions_value_that_is_not_a_list_of_strings_is_a_bad_row(tmp_path, value, problem):
    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for i in range(6):
        photo(i).save(images / f"{i}.png")
        lines.append({"id": f"p{i}", "path": f"images/{i}.png", "captions": value if i == 2 else five(str(i))})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(InputError, match=re.escape(problem)) as error:
        run(Source.manifest, manifest, tmp_path / "c.parquet", tmp_path / "m.json")
    assert "row 3" in str(error.value)
    result = run(Source.manifest, manifest, tmp_path / "c.parquet", tmp_path / "m.json", skip_bad=True)
    assert result["skipped"]["bad_caption"] == 1 and result["parents"]["total"] == 5


def test_nan_in_caption_columns_is_an_absent_caption_and_a_number_a_bad_row(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(4):
        photo(i).save(images / f"{i}.png")
        rows.append({"id": f"p{i}", "path": f"images/{i}.png", **{f"caption_{k}": f"c{k}" for k in range(1, 4)}})
    del rows[1]["caption_3"]  # a parent with two captions: pandas reads the missing cell as NaN
    rows[2]["caption_2"] = 3.5
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run(Source.manifest, manifest, tmp_path / "c.parquet", tmp_path / "m.json", skip_bad=True,
                 captions_per_parent=3)
    assert result["skipped"]["bad_caption"] == 1 and result["skipped"]["too_few_captions"] == 1
    assert result["parents"]["total"] == 2


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d["annotations"][0].pop("id"), "annotations[0]: expected keys 'id', 'image_id'"),
    (lambda d: d["annotations"][0].pop("image_id"), "annotations[0]: expected keys 'id', 'image_id'"),
    (lambda d: d["annotations"][0].update(id="x1"), "annotations[0]: id 'x1' is not an integer"),
    (lambda d: d["annotations"][0].update(image_id=1.5), "annotations[0]: id 1.5 is not an integer"),
    (lambda d: d["images"][0].update(id=None), "images[0]: id None is not an integer"),
    (lambda d: d["images"][0].pop("id"), "images[0]: expected keys 'id' and 'file_name'"),
    (lambda d: d.update(images={"a": 1}), "'images' and 'annotations' must be lists"),
])
def test_coco_annotations_with_bad_ids_are_named(tmp_path, coco, change, problem):
    path = coco / "annotations" / "captions_val2017.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=re.escape(problem)):
        run_coco(coco, tmp_path, skip_bad=True)


@pytest.mark.parametrize(("content", "problem"), [
    ("not json {", "not valid JSON"), ("[1, 2]", "holds a list"), ('{"images": 5}', "holds a dict"),
    ('{"images": [7]}', "images[0]"), (None, "is a folder"),
])
def test_a_bad_karpathy_file_is_named(tmp_path, coco, content, problem):
    split = tmp_path / "dataset_coco.json"
    if content is None:
        split.mkdir()
    else:
        split.write_text(content)
    with pytest.raises(InputError, match=re.escape(problem)) as error:
        run_coco(coco, tmp_path, karpathy_split=split)
    assert str(split) in str(error.value)


# ------------------------------------------------------------------------------- every option, refused
BODY = "body"  # any text parses: the stage checks it against its data (files, registries); see the tests below
FLAG = "flag"  # an on/off switch: there is no invalid value to give

# command -> option -> a value it must refuse at once (exit 2, a message naming the option, no traceback)
INVALID: dict[str, dict[str, str]] = {
    "clusters": {"source": "nope", "input_path": BODY, "images": BODY, "out": BODY, "metrics": BODY,
        "captions_per_parent": "0",
        "coco_captions": BODY, "karpathy_split": BODY, "val_fraction": "-0.5", "test_fraction": "-0.5", "seed": "-1",
        "on_bad": "nope", "workers": "0"},
    "tiny_generator": {"out": BODY, "seed": "-1", "registry": BODY},
    "demo_parents": {"captions": BODY, "out": BODY},
    "check": {"model_backbone": BODY, "model_generators": BODY, "embed_backbones": BODY, "generate_generators": BODY,
        "models_root": BODY, "code_train_generators": BODY, "code_eval_generators": BODY, "code_eval_fit": BODY,
        "source": BODY, "input_path": BODY, "coco_captions": BODY, "karpathy_split": BODY, "backbone_registry": BODY,
        "generator_registry": BODY, "built": BODY, "out": BODY},
    "generate": {"generator": BODY, "registry": BODY, "clusters": BODY, "models_root": BODY, "out": BODY,
        "metrics": BODY, "encoding": "nope", "jpeg_quality": "0", "shard_size": "0", "batch_size": BODY, "hub": "nope",
        "device": "tpu9"},
    "embed": {"backbone": BODY, "registry": BODY, "clusters": BODY, "children": BODY, "out": BODY,
        "captions_out": BODY, "metrics": BODY, "batch_size": BODY, "chunk_size": BODY, "workers": "-1", "threads": "-1",
        "precision": "nope", "device": "nope", "on_bad": "nope"},
    "distances": {"parents": BODY, "children": BODY, "metrics": BODY},
    "probe": {"embeddings": BODY, "generator": BODY, "generators": BODY, "c_min": "abc", "c_max": "abc",
        "c_steps": "0", "seed": "-1", "max_iter": "0", "metrics": BODY, "roc": BODY, "cross": BODY,
        "c_search": BODY, "protocol": "nope"},
    "retrieval": {"children": BODY, "captions": BODY, "chunk": "0", "metrics": BODY},
    "disentangle": {"protocol": "nope", "parents": BODY, "children": BODY, "epochs": "0", "batch_size": "1",
        "lr": "abc",
        "weight_decay": "abc", "temperature": "abc", "seed": "-1", "device": "nope", "c_min": "abc", "c_max": "abc",
        "c_steps": "0", "max_iter": "0", "out": BODY, "metrics": BODY, "history": BODY},
    "tsne": {"parents": BODY, "children": BODY, "projections": BODY, "max_clusters": "1", "perplexity": "abc",
        "seed": "-1", "out": BODY},
    "report": {"study": BODY, "cross": BODY, "layout": BODY, "paper": BODY, "code_setting": BODY, "code_train": BODY,
        "code_eval": BODY, "detector": BODY, "detector_metrics": BODY, "robustness": BODY, "out": BODY,
        "backbone_registry": BODY, "generator_registry": BODY, "clusters_metrics": BODY, "code_curve": BODY,
        "code_grid": BODY, "figures": BODY, "model_backbone": BODY, "params": BODY, "roc": BODY, "tsne": BODY,
        "source": BODY, "captions_per_parent": "abc"},
    "code_train": {"clusters": BODY, "children_root": BODY, "generators": BODY, "out": BODY, "checkpoints": BODY,
        "metrics": BODY, "plot": BODY, "setting": BODY, "arch": BODY, "image_size": "15", "local_size": "15",
        "num_transform": "-1", "global_scale_min": "abc", "global_scale_max": "abc", "local_scale_min": "abc",
        "local_scale_max": "abc", "crop_pct": "abc", "epochs": "0", "batch_size": "0", "lr": "abc",
        "weight_decay": "abc", "warmup_epochs": "abc", "min_lr": "abc", "temperature": "abc", "loss_variant": "nope",
        "monitor": "nope", "patience": "-1", "probe_images": "-1", "seed": "-1", "workers": "-1",
        "keep_checkpoints": BODY, "threads": "-1"},
    "code_eval": {"model": BODY, "clusters": BODY, "children_root": BODY, "generators": BODY, "fit_generators": BODY,
        "transforms": "nope", "threshold": "nope", "metrics": BODY, "grid": BODY, "seed": "-1", "batch_size": "0",
        "workers": "-1", "threads": "-1", "device": "nope"},
    "detector": {"generator_registry": BODY, "backbone": BODY, "generators": BODY, "head": "nope", "registry": BODY,
        "embeddings": BODY,
        "clusters": BODY, "children": BODY, "out": BODY, "metrics": BODY, "robustness": BODY, "transforms": "nope",
        "seed": "-1", "batch_size": "0", "workers": "-1", "device": "tpu9"},
    "detect": {"paths": BODY, "detector": BODY, "registry": BODY, "out": BODY, "format": "nope", "batch_size": "0",
        "workers": "-1", "device": "tpu9", "max_pixels": "0", "progress": FLAG},
}


def command_params(module: str):
    import importlib

    import typer.main

    return typer.main.get_command(importlib.import_module(module).app).params


def _plain(output: str) -> str:
    """The output without Rich's box drawing and line wrapping, so a wrapped message reads as one line."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def test_the_table_has_a_row_for_every_option_of_every_command():
    from stages.cli import COMMANDS

    assert set(INVALID) == {name for name, _ in COMMANDS}
    for name, module in COMMANDS:
        options = {param.name for param in command_params(module)}
        assert set(INVALID[name]) == options, f"{name}: give each new option an invalid value in INVALID"


@pytest.mark.parametrize(("command", "option", "value"), [
    (command, option, value) for command, rows in INVALID.items() for option, value in rows.items()
    if value not in (BODY, FLAG)])
def test_an_invalid_value_is_refused_naming_the_option(command, option, value):
    from typer.testing import CliRunner

    from stages.cli import COMMANDS

    module = dict(COMMANDS)[command]
    param = next(p for p in command_params(module) if p.name == option)
    flag = max(param.opts, key=len)
    result = CliRunner().invoke(__import__(module, fromlist=["app"]).app, [flag, value])
    text = _plain(result.output)
    assert result.exit_code == 2, text
    assert f"'{flag}'" in text, text
    # Typer's range messages say what is allowed ("greater than or equal to 0") but not the value given
    assert value in text or "Input should be" in text, text
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


# --------------------------------------------------------------------- values the stages check themselves
def test_fractions_that_leave_no_train_are_named(tmp_path, coco):
    with pytest.raises(InputError, match="--val-fraction and --test-fraction"):
        run_coco(coco, tmp_path, val_fraction=0.6, test_fraction=0.4)


def test_a_demo_file_name_without_a_package_is_named(tmp_path):
    from stages.sources.readers import package_image

    with pytest.raises(InputError, match="must be '<package>:<file>'"):
        package_image("astronaut.png")


def test_a_manifest_that_is_a_folder_says_so(tmp_path):
    folder = tmp_path / "manifest.csv"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder"):
        run(Source.manifest, folder, tmp_path / "c.parquet", tmp_path / "m.json")


@pytest.mark.parametrize(("text", "problem"), [
    ("a: [b\n", "is not valid YAML"), ("- a\n- b\n", "holds a list"),
    ("5: {library: timm, architecture: x, weights: random}\n", "must be letters"),
    ("a: {library: timm, architecture: x, weights: random, seed: one}\n", "seed 'one' is a str; expected int"),
])
def test_a_bad_backbone_registry_is_named(tmp_path, text, problem):
    from stages.embedding.backbones import read_registry

    registry = tmp_path / "backbones.yaml"
    registry.write_text(text)
    with pytest.raises(InputError, match=re.escape(problem)) as error:
        read_registry(registry)
    assert str(registry) in str(error.value)


def test_an_unknown_arch_is_named_with_the_nearest():
    from stages.code.net import check_arch

    with pytest.raises(InputError, match=r"--arch: 'vit_tiny_patch16_22' is not a timm architecture.*vit_tiny"):
        check_arch("vit_tiny_patch16_22")


class Hostile:
    def __reduce__(self):
        return (print, ("this ran at load time",))


@pytest.mark.parametrize("kind", ["corrupt", "hostile", "foreign"])
def test_a_bad_model_file_is_named_and_never_run(tmp_path, kind, capsys):
    import pickle

    import torch

    from stages.code.net import load_model

    path = tmp_path / "model.pt"
    if kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    elif kind == "hostile":
        path.write_bytes(pickle.dumps({"config": Hostile()}))
    else:
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(InputError) as error:
        load_model(path)
    assert str(path) in str(error.value) and "weights_only=False" not in str(error.value)
    assert "this ran at load time" not in capsys.readouterr().out


@pytest.mark.parametrize("value", ["tpu9", "cuda:x", "", "gpu"])
def test_a_device_that_is_not_one_is_named(value):
    from stages.contracts.device import check_device

    with pytest.raises(InputError, match=r"--device: .* is not a device; allowed: auto, cpu"):
        check_device(value)


def test_auto_resolves_to_a_device_this_machine_has():
    import torch

    from stages.contracts.device import check_device, resolve_device

    device = resolve_device("auto")
    assert device == ("cuda" if torch.cuda.is_available() else device)
    torch.zeros(1, device=device)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="torch sees none"):
            check_device("cuda")


def test_a_folder_where_a_file_is_expected_says_so(tmp_path):
    from typer.testing import CliRunner

    from stages import distances

    (tmp_path / "parents.h5").mkdir()
    result = CliRunner().invoke(distances.app, ["--parents", str(tmp_path / "parents.h5"), "--children",
                                                str(tmp_path / "c.h5"), "--metrics", str(tmp_path / "m.json")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is a folder" in _plain(result.output) or "does not exist" not in _plain(result.output), result.output
