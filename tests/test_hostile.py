"""Hostile input, as a user who tries to break the commands would give it: every bad value and file ends in a
clear error (exit code 2, one message naming the option or the file) or a counted skip; never a hang, a crash
or a traceback."""

from __future__ import annotations

import io
import json
import re
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from stages.clusters import Source
from stages.contracts.errors import InputError, Skips
from stages.imaging.load import inspect_image, load_rgb
from tests.fixtures import BOOTSTRAP
from tests.images import photo, write_truncated
from tests.test_clusters import five, run, run_coco, write_coco
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
    return write_coco(tmp_path / "coco")


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
        "children_sets": BODY,
        "models_root": BODY, "code_train_generators": BODY, "code_eval_generators": BODY, "code_eval_fit": BODY,
        "code_eval_protocol": BODY, "code_eval_released_fit_images": BODY, "code_eval_threshold": BODY,
        "source": BODY, "input_path": BODY, "coco_captions": BODY, "karpathy_split": BODY, "backbone_registry": BODY,
        "generator_registry": BODY, "built": BODY, "metrics": BODY, "layout": BODY, "out": BODY},
    "generate": {"generator": BODY, "registry": BODY, "clusters": BODY, "models_root": BODY, "out": BODY,
        "metrics": BODY, "encoding": "nope", "jpeg_quality": "0", "shard_size": "0", "batch_size": BODY, "hub": "nope",
        "device": "tpu9"},
    "import_children": {"name": BODY, "layout": "nope", "root": BODY, "generator": BODY, "reencode": "nope",
        "on_bad": "nope", "shard_size": "0", "clusters": BODY, "out": BODY, "metrics": BODY},
    "embed": {"backbone": BODY, "registry": BODY, "clusters": BODY, "children": BODY, "out": BODY,
        "captions_out": BODY, "metrics": BODY, "batch_size": BODY, "chunk_size": BODY, "workers": "-1", "threads": "-1",
        "precision": "nope", "device": "nope", "on_bad": "nope", "jpeg_decode": "nope"},
    "distances": {"parents": BODY, "children": BODY, "metrics": BODY},
    "probe": {"embeddings": BODY, "generator": BODY, "generators": BODY, "c_min": "abc", "c_max": "abc",
        "c_steps": "0", "seed": "-1", "max_iter": "0", "metrics": BODY, "roc": BODY, "cross": BODY,
        "c_search": BODY, "protocol": "nope"},
    "retrieval": {"children": BODY, "captions": BODY, "chunk": "0", "metrics": BODY},
    # a typed option needs no row (derived_invalid reads its value off its type): only what a callback checks
    "disentangle_train": {"device": "nope"},
    "disentangle": {"protocol": "nope", "parents": BODY, "children": BODY, "projections": BODY, "seed": "-1",
        "c_min": "abc", "c_max": "abc", "c_steps": "0", "max_iter": "0", "metrics": BODY},
    "tsne": {"parents": BODY, "children": BODY, "projections": BODY, "max_clusters": "1", "perplexity": "abc",
        "seed": "-1", "out": BODY},
    "report": {"study_root": BODY, "cross": BODY, "layout": BODY, "paper": BODY, "code_setting": BODY,
        "code_train": BODY, "code_eval": BODY, "detector": BODY, "detector_metrics": BODY, "robustness": BODY,
        "out": BODY,
        "backbone_registry": BODY, "generator_registry": BODY, "clusters_metrics": BODY, "code_curve": BODY,
        "code_grid": BODY, "figures": BODY, "model_backbone": BODY, "params": BODY, "roc": BODY, "tsne": BODY,
        "templates": BODY,
        "source": BODY, "captions_per_parent": "abc", "benchmarks": BODY, "benchmark_grids": BODY, "headlines": BODY,
        "review": BODY},
    "code_train": {"clusters": BODY, "children_root": BODY, "generators": BODY, "out": BODY, "checkpoints": BODY,
        "metrics": BODY, "plot": BODY, "setting": BODY, "arch": BODY, "image_size": "15", "local_size": "15",
        "num_transform": "-1", "global_scale_min": "abc", "global_scale_max": "abc", "local_scale_min": "abc",
        "local_scale_max": "abc", "crop_pct": "abc", "epochs": "0", "batch_size": "0", "lr": "abc",
        "weight_decay": "abc", "warmup_epochs": "abc", "min_lr": "abc", "temperature": "abc", "loss_variant": "nope",
        "monitor": "nope", "patience": "-1", "probe_images": "-1", "seed": "-1", "workers": "-1",
        "keep_checkpoints": BODY, "threads": "-1"},
    "code_eval": {"model": BODY, "clusters": BODY, "children_root": BODY, "generators": BODY, "fit_generators": BODY,
        "transforms": "nope", "protocol": "nope", "released_fit_images": "0", "threshold": "nope",
        "metrics": BODY, "grid": BODY, "seed": "-1", "batch_size": "0",
        "workers": "-1", "threads": "-1", "device": "nope"},
    "detector": {"selection": BODY, "backbone": BODY, "generators": BODY, "head": "nope", "registry": BODY,
        "embeddings": BODY,
        "clusters": BODY, "children": BODY, "out": BODY, "metrics": BODY, "robustness": BODY, "transforms": "nope",
        "seed": "-1", "batch_size": "0", "workers": "-1", "device": "tpu9"},
    "detect": {"paths": BODY, "detector": BODY, "registry": BODY, "out": BODY, "format": "nope", "batch_size": "0",
        "workers": "-1", "device": "tpu9", "max_pixels": "0", "progress": FLAG, "jpeg_decode": "nope", "summary": BODY},
    "benchmark_demo": {"clusters": BODY, "children": BODY, "generators": BODY, "out": BODY},
    "benchmark": {"layout": "nope", "root": BODY, "manifest": BODY, "split": BODY, "transforms": "nope",
        "detector": BODY, "registry": BODY, "code_model": BODY, "code_setting": BODY, "clusters": BODY,
        "children_root": BODY, "code_threshold": "nope", "seed": "-1", "scores": BODY, "metrics": BODY, "grid": BODY,
        "roc": BODY, "detectors": BODY, "batch_size": "0", "workers": "-1", "device": "tpu9"},
}


def command_params(module: str):
    import importlib

    import typer.main

    return typer.main.get_command(importlib.import_module(module).app).params


def _plain(output: str) -> str:
    """The output without colour codes, Rich's box drawing and line wrapping, so a wrapped message reads as one
    line."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", re.sub(r"\x1b\[[0-9;]*m", "", output)).split())


def derived_invalid(module: str, option: str) -> str:
    """An invalid value read off an option's declared type (its annotation and typer.Option's min / max): what an
    option without a row in INVALID is given, so a new command's typed options are tested without an edit here (a
    row is needed only where the type says nothing: a value a callback checks, such as a device)."""
    import enum
    import importlib
    import inspect
    import typing

    main = importlib.import_module(module).main
    kind = typing.get_type_hints(main)[option]
    info = inspect.signature(main).parameters[option].default
    if typing.get_origin(kind) is list:
        kind = typing.get_args(kind)[0]
    if type(None) in typing.get_args(kind):  # an optional value: its type is the other one
        [kind] = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    if kind is bool:
        return FLAG
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "nope"
    if kind in (int, float):
        if getattr(info, "min", None) is not None:
            return str(info.min - 1)
        if getattr(info, "max", None) is not None:
            return str(info.max + 1)
        return "abc"
    return BODY


def _checked_by_callback(module: str, option: str) -> bool:
    import importlib
    import inspect

    return getattr(inspect.signature(importlib.import_module(module).main).parameters[option].default, "callback",
                   None) is not None


def every_option() -> list[tuple[str, str, str]]:
    """(command, option, invalid value) for every option of every command: INVALID's value, else the derived one."""
    from stages.cli import COMMANDS

    return [(name, param.name, INVALID.get(name, {}).get(param.name) or derived_invalid(module, param.name))
            for name, module in COMMANDS for param in command_params(module)]


def test_every_row_of_the_table_names_an_option_a_command_has():
    from stages.cli import COMMANDS

    assert set(INVALID) <= {name for name, _ in COMMANDS}
    for name, module in COMMANDS:
        options = {param.name for param in command_params(module)}
        assert set(INVALID.get(name, {})) <= options, f"{name}: INVALID has rows for options it lacks"


def test_a_new_commands_typed_options_need_no_row():
    """Reading the value off the type is as strong as the table: every option with a typed row in INVALID also
    gets a typed value from its type, except those a callback checks (a device), which keep their row."""
    from stages.cli import COMMANDS

    weaker = [(name, param.name) for name, module in COMMANDS for param in command_params(module)
              if INVALID.get(name, {}).get(param.name, BODY) not in (BODY, FLAG)
              and derived_invalid(module, param.name) in (BODY, FLAG) and not _checked_by_callback(module, param.name)]
    assert not weaker
    assert {o for c, o, v in every_option() if c == "disentangle_train" and v not in (BODY, FLAG)} >= {
        "epochs", "batch_size", "seed", "device"}


def _refused(command: str, option: str, value: str) -> None:
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


@pytest.mark.parametrize(("command", "option", "value"), [row for row in every_option() if row[2] not in (BODY, FLAG)])
def test_an_invalid_value_is_refused_naming_the_option(command, option, value):
    _refused(command, option, value)


def _derived_rows() -> list[tuple[str, str, str]]:
    from stages.cli import COMMANDS

    return [(name, param.name, value) for name, module in COMMANDS for param in command_params(module)
            if (value := derived_invalid(module, param.name)) not in (BODY, FLAG)]


@pytest.mark.parametrize(("command", "option", "value"), _derived_rows())
def test_the_value_derived_from_an_options_type_is_refused_too(command, option, value):
    _refused(command, option, value)


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


def test_under_accelerate_auto_is_the_process_device():
    from types import SimpleNamespace

    from stages.contracts.device import resolve_device

    state = SimpleNamespace(device="cuda:1")  # what accelerate's PartialState gives the second process
    assert resolve_device("auto", state=state) == "cuda:1" and resolve_device("cpu", state=state) == "cpu"


def test_every_device_option_is_the_one_option():
    """Every command with a device takes it from `stages.contracts.device.device_option`, as a string: one
    check, one message, one list of what is allowed."""
    import importlib
    import typing

    from stages.cli import COMMANDS

    with_device = set()
    for name, module in COMMANDS:
        for param in command_params(module):
            if param.name == "device" or "--device" in param.opts:
                check = getattr(param.callback, "__wrapped__", None)
                assert getattr(check, "__qualname__", "") == "device_option.<locals>.check", (
                    f"{name}'s --device is not stages.contracts.device.device_option")
                kind = typing.get_type_hints(importlib.import_module(module).main)[param.name]
                assert kind is str, f"{name}'s --device is a {kind}, not a string"
                with_device.add(name)
    assert with_device == {"generate", "embed", "disentangle_train", "code_eval", "detector", "detect", "benchmark"}


def test_a_folder_where_a_file_is_expected_says_so(tmp_path):
    from typer.testing import CliRunner

    from stages import distances

    (tmp_path / "parents.h5").mkdir()
    result = CliRunner().invoke(distances.app, [*BOOTSTRAP, "--parents", str(tmp_path / "parents.h5"), "--children",
                                                str(tmp_path / "c.h5"), "--metrics", str(tmp_path / "m.json")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is a folder" in _plain(result.output) or "does not exist" not in _plain(result.output), result.output


# ----------------------------------------------------- no traceback: options, paths, a full disk, edited artifacts
def _not_parquet(folder: Path) -> Path:
    path = folder / "clusters.parquet"
    path.write_text("cluster_id,split\n0,train\n")  # a CSV under a Parquet name
    return path


def test_generate_names_a_clusters_table_that_is_not_parquet(tmp_path):
    from typer.testing import CliRunner

    from stages import generate
    from stages.generation.registry import REGISTRY
    from tests.test_generate import OPTIONS

    bad = _not_parquet(tmp_path)
    result = CliRunner().invoke(generate.app, ["--generator", "tiny_random", "--registry", str(REGISTRY),
                                               "--clusters", str(bad), "--models-root", str(tmp_path), "--out",
                                               str(tmp_path / "children"), "--metrics", str(tmp_path / "m.json"),
                                               *OPTIONS])
    assert_refused(result, str(bad), "not a readable Parquet file")


def test_embed_names_a_clusters_table_that_is_not_parquet(image_data, tmp_path):
    from typer.testing import CliRunner

    from stages import embed

    bad = _not_parquet(tmp_path)
    result = CliRunner().invoke(embed.app, _embed_args(image_data, bad, tmp_path / "out"))
    assert_refused(result, str(bad), "not a readable Parquet file")


def test_a_seed_past_torchs_range_is_refused_naming_the_option(tmp_path):
    from typer.testing import CliRunner

    from stages import tiny_generator
    from stages.generation.registry import REGISTRY

    result = CliRunner().invoke(tiny_generator.app, ["--out", str(tmp_path / "tiny"), "--seed", str(2**64),
                                                     "--registry", str(REGISTRY)])
    assert_refused(result, "--seed", "less than or equal to")  # Typer's range message names the bound
    assert not (tmp_path / "tiny").exists()


SEED_MAX = 2**32 - 1  # what every library a seed reaches takes: numpy's RandomState, scikit-learn (torch: 2**64 - 1)


def test_every_seed_is_bounded_by_what_every_library_takes():
    """tiny_generator's 2**64 overflowed torch; scikit-learn's random_state (tsne, probe, the heads) stops at
    2**32 - 1: every --seed stops there, so a larger one is refused at once by name, never deep in a library."""
    import inspect

    from stages.cli import COMMANDS

    bounds = {name: inspect.signature(__import__(module, fromlist=["main"]).main).parameters["seed"].default.max
              for name, module in COMMANDS if "seed" in {param.name for param in command_params(module)}}
    assert len(bounds) >= 10 and set(bounds.values()) == {SEED_MAX}, bounds


@pytest.mark.parametrize("value", ["nan", "-5", "0"])
def test_a_perplexity_that_is_no_positive_number_is_named(tmp_path, value):
    from typer.testing import CliRunner

    from stages import tsne

    result = CliRunner().invoke(tsne.app, ["--parents", str(tmp_path / "p.h5"), "--children", str(tmp_path / "c.h5"),
                                           "--projections", str(tmp_path / "s.safetensors"), "--max-clusters", "5",
                                           "--perplexity", value, "--seed", "0", "--out", str(tmp_path / "tsne")])
    assert_refused(result, "--perplexity", value)


@pytest.mark.parametrize(("option", "value"), [("--weight-decay", "nan"), ("--warmup-epochs", "nan"),
                                               ("--lr", "inf"), ("--temperature", "inf")])
def test_code_train_refuses_a_training_float_that_is_no_finite_number(image_data, tmp_path, option, value):
    """Typer's float options take nan and inf: AdamW raised on a NaN weight decay, a NaN warm-up made every
    learning rate NaN."""
    from typer.testing import CliRunner

    from stages import code_train

    args = _code_args(image_data, image_data / "clusters.parquet", tmp_path / "out")
    args[args.index(option) + 1] = value
    result = CliRunner().invoke(code_train.app, args)
    assert_refused(result, option.removeprefix("--").replace("-", "_"), value)


@pytest.mark.parametrize(("option", "value"), [("--lr", "nan"), ("--weight-decay", "nan"), ("--temperature", "inf")])
def test_disentangle_train_refuses_a_float_that_is_no_finite_number(tmp_path, option, value):
    from typer.testing import CliRunner

    from stages import disentangle_train
    from tests.study_caches import write_study_caches
    from tests.test_disentangle import train_args

    folder = write_study_caches(tmp_path / "caches", generators=("g1",), n_clusters=30)
    args = train_args(folder, tmp_path)
    args[args.index(option) + 1] = value
    result = CliRunner().invoke(disentangle_train.app, args)
    assert_refused(result, f"{option.removeprefix('--').replace('-', ' ')} {value}")


def test_an_output_path_under_a_file_is_named(tmp_path):
    from typer.testing import CliRunner

    from stages import clusters

    images = tmp_path / "images"
    images.mkdir()
    for k in range(3):
        photo(k).save(images / f"{k}.jpg")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": str(k), "path": f"images/{k}.jpg", "captions": five(str(k))}) + "\n"
                                for k in range(3)))
    args = ["--source", "manifest", "--input", str(manifest), "--images", str(images), "--captions-per-parent", "5",
            "--coco-captions", "x", "--karpathy-split", "", "--val-fraction", "0.2", "--test-fraction", "0.2",
            "--seed", "0", "--workers", "1", "--on-bad", "error"]
    for out in (manifest / "c.parquet", manifest / "deeper" / "c.parquet"):  # its folder a file, or a folder above
        result = CliRunner().invoke(clusters.app, [*args, "--out", str(out), "--metrics", str(tmp_path / "m.json")])
        assert_refused(result, str(manifest), "is a file", "a folder is expected")


def test_code_train_names_a_shard_that_is_not_parquet(image_data, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from stages import code_train

    children = shutil.copytree(image_data / "children", tmp_path / "children")
    shard = children / "g1" / "shards" / "shard-00000.parquet"
    shard.write_text("not a shard\n")
    args = _code_args(image_data, image_data / "clusters.parquet", tmp_path / "out")
    args[args.index("--children-root") + 1] = str(children)
    result = CliRunner().invoke(code_train.app, args)
    assert_refused(result, str(shard), "the shard cannot be read")


# A full disk, simulated where each library writes: the error each one raises on a real full disk (a 64 KiB
# tmpfs): Arrow and h5py an OSError of errno 28 without a file name, Python's files the same from write(),
# torch.save a RuntimeError that hides its cause ("unexpected pos"). Each write leaves a few bytes, as a real one
# does, so a test sees that nothing half-written stays.
def _no_space() -> OSError:
    import errno
    import os

    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullFile:
    """A file object whose first write stores one character and raises ENOSPC."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, data):
        self._handle.write(data[:1])
        self._handle.flush()
        raise _no_space()

    def __getattr__(self, name: str):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


def _full_python_files(monkeypatch, folder: Path) -> None:
    """Every file under `folder` opened to write with Path.open (write_text too) or open() finds the disk full."""
    import builtins

    real_path_open, real_open = Path.open, builtins.open

    def full(file, mode: str) -> bool:
        return bool(set(mode) & set("wax")) and Path(file).resolve().is_relative_to(folder.resolve())

    def path_open(self, mode="r", *args, **kwargs):
        handle = real_path_open(self, mode, *args, **kwargs)
        return _FullFile(handle) if full(self, mode) else handle

    def open_(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return _FullFile(handle) if isinstance(file, str | Path) and full(file, mode) else handle

    monkeypatch.setattr(Path, "open", path_open)
    monkeypatch.setattr(builtins, "open", open_)


def _full_arrow(monkeypatch) -> None:
    import pyarrow.parquet as pq

    def write_table(table, where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1")
        raise OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq, "write_table", write_table)


def _full_hdf5(monkeypatch) -> None:
    import h5py

    real = h5py.File

    def file(name, mode="r", *args, **kwargs):
        if mode == "r":
            return real(name, mode, *args, **kwargs)
        Path(name).write_bytes(b"\x89HDF")
        raise OSError(28, "Unable to synchronously create file (file write failed: errno = 28, error message = "
                          "'No space left on device')")

    monkeypatch.setattr(h5py, "File", file)


def _full_torch(monkeypatch) -> None:
    import os

    import torch

    def save(obj, where, *args, **kwargs):
        Path(where).write_bytes(b"PK\x03\x04")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    real_statvfs = os.statvfs

    def statvfs(path):  # the disk the write filled: no block left
        usage = real_statvfs(path)
        return os.statvfs_result((usage.f_bsize, usage.f_frsize, usage.f_blocks, 0, 0, *tuple(usage)[5:]))

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(os, "statvfs", statvfs)


def _debris(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if ".tmp-" in path.name] if folder.exists() else []


def test_generate_on_a_full_disk_names_the_output(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stages import generate
    from stages.generation.tiny import TinyConfig, save_pipeline
    from tests.fixtures import write_clusters
    from tests.test_generate import OPTIONS

    clusters = write_clusters(tmp_path, n_parents=2, n_captions=2)
    save_pipeline(TinyConfig(resolution=64), tmp_path / "models" / "tiny_random")
    registry = tmp_path / "generators.yaml"
    registry.write_text("tiny_random: {model_id: '', height: 32, width: 32, steps: 2, guidance_scale: 7.5, "
                        "scheduler: DDIMScheduler, dtype: float32, batch_size: 4, safety_checker: false, "
                        "base_seed: 0, random_weights: true, obtain: the test builds it}\n")
    _full_arrow(monkeypatch)
    out = tmp_path / "children"
    result = CliRunner().invoke(generate.app, ["--generator", "tiny_random", "--registry", str(registry),
                                               "--clusters", str(clusters), "--models-root", str(tmp_path / "models"),
                                               "--out", str(out), "--metrics", str(tmp_path / "m.json"), *OPTIONS])
    assert_refused(result, str(out / "shards" / "shard-00000.parquet"), "the disk is full")
    assert not _debris(out) and not (out / "shards" / "shard-00000.parquet").exists()


@pytest.mark.parametrize("full", ["hdf5", "python_files"])
def test_embed_on_a_full_disk_names_the_output(image_data, tmp_path, monkeypatch, full):
    """Full when the cache is written (h5py), or from the first file (the fingerprint of its resumable parts)."""
    from typer.testing import CliRunner

    from stages import embed

    out = tmp_path / "out"
    _full_hdf5(monkeypatch) if full == "hdf5" else _full_python_files(monkeypatch, out)
    result = CliRunner().invoke(embed.app, _embed_args(image_data, image_data / "clusters.parquet", out))
    assert_refused(result, str(out / "e.h5" if full == "hdf5" else out / ".e.h5.parts" / "fingerprint"),
                   "the disk is full")
    assert not _debris(out) and not (out / "e.h5").exists()


def test_code_train_on_a_full_disk_names_the_output(image_data, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stages import code_train

    _full_torch(monkeypatch)
    out = tmp_path / "out"
    result = CliRunner().invoke(code_train.app, _code_args(image_data, image_data / "clusters.parquet", out))
    assert_refused(result, str(out / "ckpt"), "the disk is full")
    assert not _debris(out)


def test_detect_on_a_full_disk_names_the_output(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stages import detect
    from tests.test_detector_artifact import random_detector
    from tests.tiny_backbone import TinyBackbone

    monkeypatch.setattr("stages.shipped.wild.load_checked", lambda *args: (random_detector(), TinyBackbone()))
    photo(0).save(tmp_path / "a.jpg")
    out = tmp_path / "out" / "scores.csv"
    _full_python_files(monkeypatch, out.parent)
    result = CliRunner().invoke(detect.app, [str(tmp_path / "a.jpg"), "--out", str(out), "--workers", "0",
                                             "--no-progress"])
    assert_refused(result, str(out), "the disk is full")
    assert not _debris(tmp_path) and not out.exists()


def test_a_deeply_nested_detector_json_is_named(tmp_path):
    from typer.testing import CliRunner

    from stages import detect
    from stages.shipped.artifact import SPEC_FILE, save_detector
    from tests.test_detector_artifact import random_detector

    folder = save_detector(random_detector(), tmp_path / "detector")
    (folder / SPEC_FILE).write_text("[" * 100_000 + "]" * 100_000)
    photo(0).save(tmp_path / "a.jpg")
    result = CliRunner().invoke(detect.app, [str(tmp_path / "a.jpg"), "--detector", str(folder), "--out",
                                             str(tmp_path / "s.csv"), "--workers", "0", "--no-progress"])
    assert_refused(result, str(folder / SPEC_FILE), "nested too deeply")


DEEP = "[" * 100_000 + "]" * 100_000  # JSON, and a YAML flow sequence: each parser recurses once per level


def _deep_file(folder: Path, name: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEEP + "\n")
    return path


# reader -> (the file it is given, how it is called); each names the file, none raises RecursionError
DEEP_READERS = {
    "demo captions": ("captions.json", lambda p: _call("stages.sources.readers", "demo_image_names", p)),
    "coco captions": ("captions.json", lambda p: _call("stages.sources.readers", "read_coco_file", p,
                                                       image_path=Path, skips=Skips())),
    "karpathy split": ("dataset_coco.json", lambda p: _call("stages.sources.readers", "read_karpathy", p)),
    "code setting": ("setting.json", lambda p: _call("stages.code.setting", "read_setting", p)),
    "selection": ("selection.json", lambda p: _call("stages.contracts.selection", "read_selection", p)),
    "model_index.json": ("model/model_index.json",
                         lambda p: _call("stages.generation.registry", "check_model_dir", p.parent)),
    "generator registry": ("generators.yaml", lambda p: _call("stages.generation.registry", "read_registry", p)),
    "backbone registry": ("backbones.yaml", lambda p: _call("stages.embedding.backbones", "read_registry", p)),
    "benchmark manifest": ("set/manifest.jsonl", lambda p: _call("stages.external.sets", "_manifest_rows", p)),
    "report's detector metrics": ("detector.json", lambda p: _call("stages.reporting.detectors", "read_json", p)),
    "report layout": ("layout.yaml", lambda p: _call("stages.reporting.layout", "read_layout", p, paper_tables=(),
                                                     footnotes=())),
    "report's registry": ("registry.yaml", lambda p: _call("stages.reporting.setting", "_registry", p)),
    "params": ("params.yaml", lambda p: _call("stages.contracts.instances", "read_instances", p)),
    "paper's numbers": ("paper.json", lambda p: _call("stages.reporting.study", "read_paper", p)),
    "plot data": ("curve.json", lambda p: _call("stages.reporting.key_figures", "_rows", p)),
}


def _call(module: str, function: str, *args, **kwargs):
    import importlib

    return getattr(importlib.import_module(module), function)(*args, **kwargs)


@pytest.mark.parametrize("reader", DEEP_READERS)
def test_a_file_nested_too_deeply_is_named_by_every_reader(tmp_path, reader):
    name, read = DEEP_READERS[reader]
    path = _deep_file(tmp_path, name)
    with pytest.raises(InputError) as error:
        read(path)
    assert str(path) in str(error.value)


@pytest.fixture(scope="module")
def trained(image_data, tmp_path_factory):
    """code_train's outputs after one epoch: its checkpoints folder holds epoch-0001.pt."""
    from typer.testing import CliRunner

    from stages import code_train

    out = tmp_path_factory.mktemp("trained")
    result = CliRunner().invoke(code_train.app, _code_args(image_data, image_data / "clusters.parquet", out))
    assert result.exit_code == 0, result.output
    return out


def _edit_checkpoint(path: Path, edit) -> None:
    import torch

    saved = torch.load(path, weights_only=True)
    edit(saved)
    torch.save(saved, path)


@pytest.mark.parametrize("edit", ["reshaped", "unknown_key", "unknown_state"])
def test_an_edited_checkpoint_is_named_when_resuming(image_data, trained, tmp_path, edit):
    import shutil

    from typer.testing import CliRunner

    from stages import code_train

    out = shutil.copytree(trained, tmp_path / "out")
    checkpoint = out / "ckpt" / "epoch-0001.pt"
    _edit_checkpoint(checkpoint, {
        "reshaped": lambda saved: saved["model"].update(pos_embed=saved["model"]["pos_embed"].reshape(-1)),
        "unknown_key": lambda saved: saved["model"].update(extra=saved["model"]["pos_embed"]),
        "unknown_state": lambda saved: saved["state"].update(extra=1),
    }[edit])
    result = CliRunner().invoke(code_train.app, _code_args(image_data, image_data / "clusters.parquet", out))
    assert_refused(result, str(checkpoint), "not a checkpoint this stage wrote")


@pytest.mark.parametrize("kind", ["pickled", "empty"])
def test_a_checkpoint_that_is_no_safe_one_is_named_without_torchs_advice(image_data, tmp_path, kind):
    import collections
    import pickle

    from typer.testing import CliRunner

    from stages import code_train

    out = tmp_path / "out"
    (out / "ckpt").mkdir(parents=True)
    checkpoint = out / "ckpt" / "epoch-0001.pt"
    checkpoint.write_bytes(pickle.dumps(collections.Counter(a=1)) if kind == "pickled" else b"")
    result = CliRunner().invoke(code_train.app, _code_args(image_data, image_data / "clusters.parquet", out))
    assert_refused(result, str(checkpoint), "not a safe checkpoint" if kind == "pickled" else "an empty file")
    assert "weights_only" not in result.output


def test_a_model_file_holding_a_bare_tensor_is_named(image_data, tmp_path):
    import torch
    from typer.testing import CliRunner

    from stages import code_eval
    from tests.test_code_eval import OPTIONS

    model = tmp_path / "model.pt"
    torch.save(torch.zeros(3), model)
    args = ["--model", str(model), "--clusters", str(image_data / "clusters.parquet"), "--children-root",
            str(image_data / "children"), "--generators", "g1", "--fit", "g1", *OPTIONS, "--metrics",
            str(tmp_path / "m.json"), "--grid", str(tmp_path / "grid.csv")]
    result = CliRunner().invoke(code_eval.app, args)
    assert_refused(result, str(model), "not a CoDE model")


@pytest.mark.parametrize("kind", ["empty", "text"])
def test_an_unreadable_image_read_as_bytes_is_named_by_its_path_not_a_buffer(tmp_path, kind):
    """clusters reads each parent's bytes (to hash them) before it looks at them: Pillow then names a BytesIO."""
    from typer.testing import CliRunner

    from stages import clusters

    images = tmp_path / "images"
    images.mkdir()
    for k in range(3):
        photo(k).save(images / f"{k}.jpg")
    (images / "2.jpg").write_bytes(b"" if kind == "empty" else b"not an image\n")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": str(k), "path": f"images/{k}.jpg", "captions": five(str(k))}) + "\n"
                                for k in range(3)))
    result = CliRunner().invoke(clusters.app, [
        "--source", "manifest", "--input", str(manifest), "--images", str(images), "--out", str(tmp_path / "c.parquet"),
        "--metrics", str(tmp_path / "m.json"), "--captions-per-parent", "5", "--coco-captions", "x",
        "--karpathy-split", "", "--val-fraction", "0.2", "--test-fraction", "0.2", "--seed", "0", "--workers", "1",
        "--on-bad", "error"])
    assert_refused(result, "images/2.jpg", "an empty file" if kind == "empty" else "no image format")
    assert "BytesIO" not in result.output


# --------------------------------------------------------------- every command that reads images, hostile files
def _fifo(path: Path) -> None:
    import os

    os.mkfifo(path)


# name -> how to make it; each is written where a parent image (or, for the BYTES ones, a child's shard bytes) is read
HOSTILE_FILES = {
    "truncated.jpg": write_truncated,
    "empty.jpg": lambda path: path.write_bytes(b""),
    "text.jpg": lambda path: path.write_text("this is not an image\n"),
    "bomb.png": lambda path: write_png_bomb(path, 10_000, 10_000, real_data=False),  # over our limit and Pillow's
    "folder.jpg": lambda path: path.mkdir(),
    "fifo.jpg": _fifo,
}
BYTES = ("truncated.jpg", "empty.jpg", "text.jpg", "bomb.png")  # the ones a shard can hold


def hostile_file(folder: Path, name: str) -> Path:
    path = folder / f"hostile-{name}"
    HOSTILE_FILES[name](path)
    return path


@contextmanager
def no_hang(path: Path, seconds: float = 5):
    """Fails the test, instead of hanging it, where a command opens the FIFO `path` to read: after `seconds`
    a writer opens it and closes it at once, so the blocked reader sees an empty file and the run goes on."""
    import os

    done, unblocked = threading.Event(), threading.Event()

    def unblock() -> None:
        if not done.wait(seconds) and path.exists() and path.is_fifo():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                unblocked.set()
            except OSError:  # no reader waits on it
                pass

    guard = threading.Thread(target=unblock, daemon=True)
    guard.start()
    try:
        yield
    finally:
        done.set()
        guard.join()
    assert not unblocked.is_set(), f"the command opened the FIFO {path} and waited on it"


def assert_refused(result, *names: str) -> None:
    """Exit 2, one message that names each of `names`, no traceback."""
    text = _plain(result.output)
    assert result.exit_code == 2, f"exit {result.exit_code}: {text} {result.exception!r}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    for name in names:
        assert name in text, f"{name!r} not in {text}"


def with_parent(clusters: Path, cluster_id: int, image: Path, out: Path) -> Path:
    """A copy of the clusters table whose parent `cluster_id` is the file `image`."""
    table = pq.read_table(clusters)
    paths = [str(image) if c == cluster_id else p
             for c, p in zip(table["cluster_id"].to_pylist(), table["image_path"].to_pylist(), strict=True)]
    import pyarrow as pa

    table = table.set_column(table.schema.get_field_index("image_path"), "image_path", pa.array(paths, pa.string()))
    pq.write_table(table, out)
    return out


def with_child_bytes(children: Path, data: bytes) -> str:
    """Puts `data` in place of the first child's image in its shard; returns that child's id."""
    import pyarrow as pa

    shard = sorted((children / "shards").iterdir())[0]
    table = pq.read_table(shard)
    images = table.column("image").to_pylist()
    images[0] = {"bytes": data, "path": images[0]["path"]}
    pq.write_table(table.set_column(1, "image", pa.array(images, table.schema.field("image").type)), shard)
    return table.column("child_id")[0].as_py()


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_clusters_refuses_a_hostile_parent_by_name(tmp_path, name):
    from typer.testing import CliRunner

    from stages import clusters

    images = tmp_path / "images"
    images.mkdir()
    for k in range(3):
        photo(k).save(images / f"{k}.jpg")
    bad = hostile_file(images, name)
    manifest = tmp_path / "manifest.jsonl"
    rows = [{"id": str(k), "path": f"images/{k}.jpg", "captions": five(str(k))} for k in range(3)]
    rows.append({"id": "bad", "path": f"images/{bad.name}", "captions": five("bad")})
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["--source", "manifest", "--input", str(manifest), "--images", str(images), "--out",
            str(tmp_path / "c.parquet"), "--metrics", str(tmp_path / "m.json"), "--captions-per-parent", "5",
            "--coco-captions", "x", "--karpathy-split", "", "--val-fraction", "0.2", "--test-fraction", "0.2",
            "--seed", "0", "--workers", "2"]
    with no_hang(bad):
        refused = CliRunner().invoke(clusters.app, [*args, "--on-bad", "error"])
        skipped = CliRunner().invoke(clusters.app, [*args, "--on-bad", "skip"])
    assert_refused(refused, bad.name)
    assert "does not exist" not in refused.output  # a folder or a FIFO says what it is
    assert skipped.exit_code == 0, skipped.output
    assert len(pq.read_table(tmp_path / "c.parquet")) == 3
    assert json.loads((tmp_path / "m.json").read_text())["skipped"]["total"] == 1


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    """A clusters table of 9 parents (3 per split), one generator's children, a tiny backbone registry and an
    untrained 32 px CoDE model."""
    from stages.code.net import CodeNetConfig, build_model, save_model
    from stages.contracts.clusters import read_clusters
    from tests.fixtures import write_children, write_clusters
    from tests.test_embed import tiny_registry

    root = tmp_path_factory.mktemp("hostile_images")
    clusters = write_clusters(root, n_parents=9, n_captions=2, size=(48, 40))
    write_children(root / "children" / "g1", read_clusters(clusters), generator="g1", size=(40, 40), fmt="PNG")
    tiny_registry(root, "tiny_a")
    config = CodeNetConfig(arch="vit_tiny_patch16_224", image_size=32, local_size=16)
    save_model(root / "model.pt", build_model(config, seed=0), config, {"epoch": 0})
    return root


def _embed_args(root: Path, clusters: Path, out: Path, children: str = "") -> list[str]:
    return ["--backbone", "tiny_a", "--registry", str(root / "backbones.yaml"), "--clusters", str(clusters),
            "--children", children, "--out", str(out / "e.h5"), "--captions-out", "" if children else str(out / "c.h5"),
            "--metrics", str(out / "m.json"), "--batch-size", "4", "--chunk-size", "5", "--workers", "0",
            "--threads", "1", "--precision", "auto", "--device", "cpu", "--on-bad", "error", "--jpeg-decode", "full"]


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_embed_refuses_a_hostile_parent_by_name(image_data, tmp_path, name):
    from typer.testing import CliRunner

    from stages import embed
    from stages.contracts.ids import parent_id

    bad = hostile_file(tmp_path, name)
    clusters = with_parent(image_data / "clusters.parquet", 4, bad, tmp_path / "clusters.parquet")
    with no_hang(bad):
        result = CliRunner().invoke(embed.app, _embed_args(image_data, clusters, tmp_path / "out"))
    assert_refused(result, parent_id(4), str(bad))


@pytest.mark.parametrize("name", BYTES)
def test_embed_refuses_a_hostile_child_by_name(image_data, tmp_path, name):
    import shutil

    from typer.testing import CliRunner

    from stages import embed

    children = shutil.copytree(image_data / "children" / "g1", tmp_path / "g1")
    source = hostile_file(tmp_path, name)
    child = with_child_bytes(children, source.read_bytes())
    result = CliRunner().invoke(embed.app, _embed_args(image_data, image_data / "clusters.parquet", tmp_path / "out",
                                                       children=str(children)))
    assert_refused(result, child, "shard-00000.parquet")


def _code_args(root: Path, clusters: Path, out: Path) -> list[str]:
    from tests.test_code_train import OPTIONS

    return ["--clusters", str(clusters), "--children-root", str(root / "children"), "--generators", "g1",
            "--out", str(out / "model.pt"), "--checkpoints", str(out / "ckpt"), "--metrics", str(out / "m.json"),
            "--plot", str(out / "curve.csv"), "--setting", str(out / "setting.json"),
            *OPTIONS, "--epochs", "1"]


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_code_train_refuses_a_hostile_parent_by_name(image_data, tmp_path, name):
    from typer.testing import CliRunner

    from stages import code_train
    from stages.contracts.ids import parent_id

    bad = hostile_file(tmp_path, name)
    clusters = with_parent(image_data / "clusters.parquet", 0, bad, tmp_path / "clusters.parquet")  # a train parent
    with no_hang(bad):
        result = CliRunner().invoke(code_train.app, _code_args(image_data, clusters, tmp_path / "out"))
    assert_refused(result, parent_id(0), str(bad))


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_code_eval_refuses_a_hostile_parent_by_name(image_data, tmp_path, name):
    from typer.testing import CliRunner

    from stages import code_eval
    from stages.contracts.ids import parent_id
    from tests.test_code_eval import OPTIONS

    bad = hostile_file(tmp_path, name)
    clusters = with_parent(image_data / "clusters.parquet", 2, bad, tmp_path / "clusters.parquet")  # a test parent
    args = ["--model", str(image_data / "model.pt"), "--clusters", str(clusters), "--children-root",
            str(image_data / "children"), "--generators", "g1", "--fit", "g1", *OPTIONS, "--metrics",
            str(tmp_path / "m.json"), "--grid", str(tmp_path / "grid.csv")]
    with no_hang(bad):
        result = CliRunner().invoke(code_eval.app, args)
    assert_refused(result, parent_id(2), str(bad))


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_detect_gives_a_hostile_file_its_error_row(tmp_path, monkeypatch, name):
    import csv

    from typer.testing import CliRunner

    from stages import detect
    from tests.test_detector_artifact import random_detector
    from tests.tiny_backbone import TinyBackbone

    monkeypatch.setattr("stages.shipped.wild.load_checked", lambda *args: (random_detector(), TinyBackbone()))
    bad = hostile_file(tmp_path, name)
    good = tmp_path / "good.jpg"
    photo(0).save(good)
    runner = CliRunner()
    for paths, code in (([bad, good], 0), ([bad], 1)):
        out = tmp_path / "scores.csv"
        with no_hang(bad):
            result = runner.invoke(detect.app, [*map(str, paths), "--out", str(out), "--workers", "0",
                                                "--no-progress"])
        assert result.exit_code == code and "Traceback" not in result.output, result.output
        rows = {row["path"]: row for row in csv.DictReader(out.open())}
        assert rows[str(bad)]["error"] and not rows[str(bad)]["score"], rows


@pytest.fixture(scope="module")
def detector_pipeline(tmp_path_factory, repo_root):
    """test_detector's pipeline: clusters, two generators' children and their tiny CLIP embedding caches."""
    from stages.embedding.backbones import BackboneSpec, _registered, register
    from tests.test_detector import BACKBONE, TINY_CLIP, make_pipeline

    register(BackboneSpec(alias=BACKBONE, library="open_clip", architecture="tiny", weights="random",
                          model_cfg=TINY_CLIP))
    yield make_pipeline(tmp_path_factory.mktemp("hostile_detector"), repo_root / "stages" / "embedding" /
                        "backbones.yaml")
    _registered.pop(BACKBONE)


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_detector_refuses_a_hostile_test_parent_by_name(detector_pipeline, repo_root, tmp_path, name):
    from stages.contracts.ids import parent_id
    from tests.test_detector import run_stage

    root, clusters = detector_pipeline
    bad = hostile_file(tmp_path, name)
    hostile = with_parent(clusters, 2, bad, tmp_path / "clusters.parquet")  # a test parent: robustness reads it
    with no_hang(bad):
        result = run_stage(root, hostile, repo_root, "--out", str(tmp_path / "detector"), "--metrics",
                           str(tmp_path / "m.json"), "--robustness", str(tmp_path / "r.csv"),
                           transforms=("jpeg75",))
    assert_refused(result, parent_id(2), str(bad))
