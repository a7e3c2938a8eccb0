"""code_train: the loss against a plain loop, the crops and views, training lowers the loss, resume
reproduces the uninterrupted curve and, after a kill mid-epoch, its bytes; what the checkpoint fingerprint
covers; the command and its errors; under DVC, checkpoints are resume state that no experiment reruns for."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from stages import code_train
from stages.code import augment as aug
from stages.code.data import PairViews, ViewConfig, make_pairs, make_views, read_images
from stages.code.loss import LossVariant, code_loss, derangement, info_nce
from stages.code.net import CodeNetConfig, load_model
from stages.code.setting import CodeSetting, read_setting
from stages.code.trainer import Monitor, TrainConfig, lr_factor, train
from stages.contracts.clusters import read_clusters
from tests.fixtures import write_children, write_clusters
from tests.images import photo

torch.set_num_threads(1)
NET = CodeNetConfig(arch="vit_tiny_patch16_224", image_size=32, local_size=16)
VIEWS = ViewConfig(image_size=32, local_size=16, num_transform=2, global_scale=(0.4, 1.0), local_scale=(0.05, 0.4),
                   crop_pct=0.9)
# every option of the command but the paths and --generators (repeated options add up, so callers give them):
# params.yaml's demo values at this file's 32 / 16 px and batch 4
OPTIONS = ["--arch", "vit_tiny_patch16_224", "--image-size", "32", "--local-size", "16", "--num-transform", "2",
           "--global-scale-min", "0.4", "--global-scale-max", "1.0", "--local-scale-min", "0.05",
           "--local-scale-max", "0.4", "--crop-pct", "0.9", "--epochs", "2", "--batch-size", "4", "--lr", "0.002",
           "--weight-decay", "0.00002", "--warmup-epochs", "1", "--min-lr", "0", "--temperature", "0.1",
           "--loss-variant", "symmetric", "--monitor", "val_accuracy", "--patience", "6", "--probe-images", "0",
           "--seed", "0", "--workers", "0", "--keep-checkpoints", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 parents (4 train / 4 val / 4 test), 5 children each from two generators."""
    root = tmp_path_factory.mktemp("code")
    clusters = write_clusters(root, n_parents=12, size=(80, 60))
    for gen, size in (("g1", (48, 48)), ("g2", (40, 56))):
        write_children(root / "children" / gen, read_clusters(clusters), generator=gen, size=size, fmt="PNG")
    return root


# -- the loss -------------------------------------------------------------------------------------------

def loop_info_nce(query, positive, negatives, t):
    total = 0.0
    for q, p in zip(query, positive, strict=True):
        cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))  # noqa: E731
        pos = math.exp(cos(q, p) / t)
        total += -math.log(pos / (pos + sum(math.exp(cos(q, n) / t) for n in negatives)))
    return total / len(query)


@pytest.mark.parametrize("variant", list(LossVariant))
def test_loss_matches_a_plain_loop(variant):
    rng = np.random.default_rng(0)
    z = {name: rng.normal(size=(5, 8)) for name in ("real", "fake", "aug_real", "aug_fake", "global_real",
                                                   "local_real", "global_fake", "local_fake")}
    perm_real, perm_fake = torch.tensor([1, 2, 3, 4, 0]), torch.tensor([3, 0, 4, 1, 2])
    got = code_loss({k: torch.tensor(v) for k, v in z.items()}, perm_real, perm_fake, temperature=0.1,
                    variant=variant)

    def term(a, same, other, local, glob, glob_other, perm):
        return (loop_info_nce(z[a], z[same][perm.numpy()], z[other], 0.1)
                + loop_info_nce(z[local], z[glob], z[glob_other], 0.1)) / 2

    real = term("real", "aug_real", "aug_fake", "local_real", "global_real", "global_fake", perm_real)
    fake = term("fake", "aug_fake", "aug_real", "local_fake", "global_fake", "global_real", perm_fake)
    expected = real + fake if variant is LossVariant.symmetric else 2 * real
    assert float(got["loss"]) == pytest.approx(expected, rel=1e-9)
    assert float(got["real"]) == pytest.approx(real, rel=1e-9)
    assert float(got["fake"]) == pytest.approx(fake, rel=1e-9)


def test_info_nce_prefers_aligned_positives():
    q = torch.eye(4)
    assert float(info_nce(q, q, -q, 0.1)) < 1e-3 < float(info_nce(q, -q, q, 0.1))


def test_derangement_has_no_fixed_point_and_is_seeded():
    for n in (2, 3, 7, 64):
        for seed in range(20):
            order = derangement(n, torch.Generator().manual_seed(seed))
            assert sorted(order.tolist()) == list(range(n)) and not (order == torch.arange(n)).any()
    a, b = (derangement(9, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="batches of 2"):
        derangement(1, torch.Generator())


# -- crops and views ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("scale", "size"), [((0.4, 1.0), (640, 480)), ((0.05, 0.4), (300, 500))])
def test_crop_boxes_cover_the_scale_range(scale, size):
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(300):
        left, top, w, h = aug.crop_box(*size, scale, rng)
        assert left >= 0 and left + w <= size[0] and top >= 0 and top + h <= size[1]
        assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02
        fractions.append(w * h / (size[0] * size[1]))
    # rounding to whole pixels moves the area by well under 1 %
    assert scale[0] * 0.99 <= min(fractions) and max(fractions) <= scale[1] * 1.01
    assert min(fractions) < scale[0] + 0.1 * (scale[1] - scale[0]) and max(fractions) > scale[1] - 0.1 * (
        scale[1] - scale[0])


def test_views_have_the_configured_shapes():
    config = dataclasses.replace(VIEWS, image_size=48, local_size=32)
    for size in ((200, 120), (20, 30)):
        out = make_views(photo(1, size), np.random.default_rng(1), config)
        assert {k: tuple(v.shape) for k, v in out.items()} == {"plain": (3, 48, 48), "aug": (3, 48, 48),
                                                              "global": (3, 48, 48), "local": (3, 32, 32)}


def test_center_crop_pads_small_images_with_black_and_never_resizes():
    img = photo(2, (40, 30))
    out = aug.center_crop(img, 64)
    array, original = np.asarray(out), np.asarray(img)
    assert out.size == (64, 64)
    assert np.array_equal(array[17:47, 12:52], original)
    assert array[:17].max() == 0 and array[:, :12].max() == 0
    big = photo(3, (100, 80))
    assert np.array_equal(np.asarray(aug.center_crop(big, 64)), np.asarray(big)[8:72, 18:82])


@pytest.mark.parametrize("name", [name for name, _ in aug.AUGMENTATIONS])
def test_each_augmentation_returns_a_deterministic_rgb_image(name):
    function = dict(aug.AUGMENTATIONS)[name]
    img = photo(4, (70, 50))
    a, b = (function(img, np.random.default_rng(5)) for _ in range(2))
    assert a.mode == "RGB" and min(a.size) >= 1
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_augment_applies_at_most_num_transform():
    img = photo(5, (64, 64))
    changed = [not np.array_equal(np.asarray(aug.augment(img, np.random.default_rng(s), 2)), np.asarray(img))
               for s in range(60)]
    assert 0 < sum(changed) < 60  # k is drawn from 0..2, so some views are left as they are
    assert np.array_equal(np.asarray(aug.augment(img, np.random.default_rng(0), 0)), np.asarray(img))


def test_pair_views_are_reproducible_and_change_with_the_epoch(data):
    refs = read_images(data / "clusters.parquet", data / "children", ["g1"], ("train",))
    pairs = make_pairs(refs, "train")
    assert len(pairs) == 4 and all(len(children) == 5 for _, children in pairs)
    a, b = PairViews(pairs, VIEWS, seed=1), PairViews(pairs, VIEWS, seed=1)
    assert all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    b.use_epoch(1)
    assert not torch.equal(a[0]["aug_real"], b[0]["aug_real"])


def test_probe_subsample_keeps_both_classes_in_their_share(data):
    from stages.code.trainer import stratified_subsample

    refs = [r for r in read_images(data / "clusters.parquet", data / "children", ["g1"], ("train",))]
    for limit in (3, 12):
        chosen = stratified_subsample(refs, limit, np.random.default_rng(0))
        real = sum(r.label == 0 for r in chosen)
        assert real >= 1 and len(chosen) - real >= 1 and abs(len(chosen) - limit) <= 1
        assert real == max(1, round(limit * 4 / 24))
        assert chosen == sorted(chosen, key=refs.index)


def test_schedule_warms_up_then_decays_to_min_lr():
    config = small_config(epochs=10, lr=1.0, warmup_epochs=2, min_lr=0.1)
    factors = [lr_factor(step, steps_per_epoch=5, config=config) for step in range(50)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(factors[10:], factors[11:], strict=False))
    assert factors[-1] == pytest.approx(0.1, abs=0.01)


# -- training -------------------------------------------------------------------------------------------

def small_config(**overrides):
    base = {"epochs": 4, "batch_size": 4, "lr": 5e-4, "weight_decay": 2e-5, "warmup_epochs": 0, "min_lr": 0.0,
            "temperature": 0.1, "loss_variant": LossVariant.symmetric, "monitor": Monitor.val_loss, "patience": 6,
            "probe_images": 0, "seed": 0}
    return TrainConfig(**{**base, **overrides})


def textured(seed: int, size: tuple[int, int]) -> Image.Image:
    """A photo with a 2-px checkerboard added: a learnable stand-in for a generator's upsampling traces."""
    array = np.asarray(photo(seed, size)).astype(int)
    rows, cols = np.mgrid[: size[1], : size[0]]
    array = array + np.where((rows // 2 + cols // 2) % 2 == 0, 50, -50)[..., None]
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


@pytest.mark.slow
def test_training_lowers_the_loss(tmp_path, monkeypatch):
    import tests.fixtures as fixtures

    clusters = write_clusters(tmp_path, n_parents=36, size=(80, 60))
    monkeypatch.setattr(fixtures, "photo", textured)  # children only: the parents are already written
    write_children(tmp_path / "children" / "g1", read_clusters(clusters), generator="g1", size=(48, 48), fmt="PNG")
    refs = read_images(clusters, tmp_path / "children", ["g1"], ("train", "val"))
    views = dataclasses.replace(VIEWS, num_transform=0)
    state = train(refs, NET, views, small_config(epochs=14, lr=2e-4, warmup_epochs=1, patience=0),
                  checkpoints=tmp_path / "ck", progress=False, log=lambda *_: None)
    losses = [record["train_loss"] for record in state.history]
    assert len(losses) == 14
    # collapsed embeddings (all alike) score 2 log(1 + B) = 3.22 at B = 4; learning must go well below
    assert np.mean(losses[-2:]) < min(0.8 * losses[0], 2.9), losses


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_curve(data, tmp_path):
    refs = read_images(data / "clusters.parquet", data / "children", ["g1", "g2"], ("train", "val"))
    config = small_config(epochs=3)
    whole = train(refs, NET, VIEWS, config, checkpoints=tmp_path / "a", progress=False, log=lambda *_: None)
    logs = []
    first = train(refs, NET, VIEWS, config, checkpoints=tmp_path / "b", stop_after=1, progress=False,
                  log=logs.append)
    assert first.epoch == 1 and len(list((tmp_path / "b").glob("epoch-*.pt"))) == 1
    resumed = train(refs, NET, VIEWS, config, checkpoints=tmp_path / "b", progress=False, log=logs.append)
    assert any("resuming" in line for line in logs)
    keys = ("train_loss", "train_loss_real", "train_loss_fake", "val_loss", "lr")
    for a, b in zip(whole.history, resumed.history, strict=True):
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert whole.history[0]["train_loss"] != whole.history[1]["train_loss"]

    # another configuration does not resume from these checkpoints
    logs.clear()
    other = train(refs, NET, VIEWS, small_config(epochs=3, lr=1e-4), checkpoints=tmp_path / "b", stop_after=1,
                  progress=False, log=logs.append)
    assert other.epoch == 1 and any("starting afresh" in line for line in logs)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_and_resumed_ends_with_the_same_bytes(data, tmp_path, monkeypatch):
    """Killed in the middle of epoch 2 and started again, the command ends with the bytes of an uninterrupted
    run: its outputs (what DVC hashes) and its checkpoints (a resumed run writes them again)."""
    from stages.code import trainer

    def command(folder):
        return ["--clusters", str(data / "clusters.parquet"), "--children-root", str(data / "children"),
                "--generators", "g1", *OPTIONS, "--batch-size", "2",  # 4 train pairs: 2 steps an epoch
                "--out", str(folder / "model.pt"), "--checkpoints", str(folder / "ck"),
                "--metrics", str(folder / "m.json"), "--plot", str(folder / "curve.csv"),
                "--setting", str(folder / "setting.json")]

    runner, whole, resumed = CliRunner(), tmp_path / "whole", tmp_path / "resumed"
    assert runner.invoke(code_train.app, command(whole)).exit_code == 0
    batch_loss = trainer.batch_loss

    def killed_at_epoch_2_step_2(*args, epoch, step, **kwargs):
        if (epoch, step) == (1, 1):
            raise KeyboardInterrupt  # as Ctrl-C would, after epoch 1's checkpoint and one step of epoch 2
        return batch_loss(*args, epoch=epoch, step=step, **kwargs)

    monkeypatch.setattr(trainer, "batch_loss", killed_at_epoch_2_step_2)
    assert runner.invoke(code_train.app, command(resumed)).exit_code != 0
    assert [p.name for p in (resumed / "ck").glob("epoch-*.pt")] == ["epoch-0001.pt"]
    assert not (resumed / "model.pt").exists()
    monkeypatch.setattr(trainer, "batch_loss", batch_loss)
    again = runner.invoke(code_train.app, command(resumed))
    assert again.exit_code == 0 and "resuming from" in again.output, again.output

    for name in ("model.pt", "setting.json", "m.json", "curve.csv"):
        assert (whole / name).read_bytes() == (resumed / name).read_bytes(), name
    kept = sorted(p.name for p in (whole / "ck").iterdir())
    assert kept == sorted(p.name for p in (resumed / "ck").iterdir()) == ["best.pt", "epoch-0001.pt", "epoch-0002.pt"]
    for name in kept:
        assert (whole / "ck" / name).read_bytes() == (resumed / "ck" / name).read_bytes(), name


def test_the_fingerprint_covers_the_configuration_the_data_and_the_code(data, monkeypatch):
    """A checkpoint is resumed only by a run of the same configuration on the same parents and children with the
    same training code: a change to any of them changes the fingerprint."""
    from stages.code import trainer
    from tests.imports import closure

    refs = read_images(data / "clusters.parquet", data / "children", ["g1"], ("train", "val"))
    config = small_config()
    base = trainer.fingerprint(NET, VIEWS, config, refs)
    assert trainer.fingerprint(NET, VIEWS, config, list(refs)) == base
    parent = next(i for i, r in enumerate(refs) if not r.generator)
    child = next(i for i, r in enumerate(refs) if r.generator)
    other_split = "train" if refs[child].split == "val" else "val"
    changed = {
        "config": (small_config(seed=1), refs),
        # a parent replaced by another photo of the same path and size: its sha256 in the clusters table differs
        "parent": (config, [*refs[:parent], dataclasses.replace(refs[parent], sha256="0" * 64), *refs[parent + 1:]]),
        "child": (config, [*refs[:child], dataclasses.replace(refs[child], source=refs[child].source + b"\0"),
                           *refs[child + 1:]]),
        "split": (config, [*refs[:child], dataclasses.replace(refs[child], split=other_split), *refs[child + 1:]]),
        "a child less": (config, [r for i, r in enumerate(refs) if i != child]),
    }
    for what, (other_config, other_refs) in changed.items():
        assert trainer.fingerprint(NET, VIEWS, other_config, other_refs) != base, what
    # the code: every module a training run executes, and each one's bytes count
    assert {f"{name.replace('.', '/')}.py" for name in trainer.TRAINING_CODE} == closure("stages.code.trainer")
    monkeypatch.setattr(trainer, "TRAINING_CODE", tuple(m for m in trainer.TRAINING_CODE if m != "stages.imaging.load"))
    assert trainer.fingerprint(NET, VIEWS, config, refs) != base

@pytest.mark.slow
def test_command_writes_model_metrics_and_curve(data, tmp_path):
    args = ["--clusters", str(data / "clusters.parquet"), "--children-root", str(data / "children"),
            "--generators", "g1", "--generators", "g2", *OPTIONS, "--loss-variant", "released",
            "--out", str(tmp_path / "model.pt"), "--checkpoints", str(tmp_path / "ck"),
            "--metrics", str(tmp_path / "m.json"), "--plot", str(tmp_path / "curve.csv"),
            "--setting", str(tmp_path / "setting.json")]
    result = CliRunner().invoke(code_train.app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["epochs_run"] == 2 and 1 <= metrics["best_epoch"] <= 2
    assert metrics["images"] == {"train_real": 4, "train_fake": 40, "val_real": 4, "val_fake": 40}
    lines = (tmp_path / "curve.csv").read_text().splitlines()
    assert lines[0] == "epoch,lr,train_loss,train_loss_real,train_loss_fake,val_accuracy" and len(lines) == 3
    model, config, meta = load_model(tmp_path / "model.pt")
    assert config == NET and meta["epoch"] == metrics["best_epoch"]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 192)
    # the setting the report compares with the paper's, as trained
    assert read_setting(tmp_path / "setting.json") == CodeSetting(
        arch="vit_tiny_patch16_224", image_size=32, local_size=16, epochs=2, generators=("g1", "g2"))


def test_bad_input_is_named(data, tmp_path):
    base = ["--clusters", str(data / "clusters.parquet"), "--children-root", str(data / "children"), *OPTIONS,
            "--checkpoints", str(tmp_path / "ck"), "--out", str(tmp_path / "m.pt"),
            "--setting", str(tmp_path / "s.json"), "--metrics", str(tmp_path / "m.json"),
            "--plot", str(tmp_path / "curve.csv")]
    runner = CliRunner()
    twice = runner.invoke(code_train.app, [*base, "--generators", "g1", "--generators", "g1"])
    assert twice.exit_code == 2 and "names a generator twice" in twice.output
    missing = runner.invoke(code_train.app, [*base, "--generators", "nope"])
    assert missing.exit_code == 2 and "nope" in missing.output and "generate stage" in missing.output
    batch = runner.invoke(code_train.app, [*base, "--generators", "g1", "--batch-size", "1"])
    assert batch.exit_code == 2 and "batch_size" in batch.output
    size = runner.invoke(code_train.app, [*base, "--generators", "g1", "--image-size", "40"])
    assert size.exit_code == 2 and "image_size" in size.output
    assert not (tmp_path / "m.pt").exists()


def test_image_refs_hold_children_bytes_and_parent_paths(data):
    refs = read_images(data / "clusters.parquet", data / "children", ["g1", "g2"], ("test",))
    parents = [r for r in refs if not r.generator]
    assert len(parents) == 4 and len(refs) == 4 + 2 * 20
    assert isinstance(Image.open(parents[0].source), Image.Image)
    child = next(r for r in refs if r.generator == "g2")
    assert child.key.startswith("g2/c") and child.load().size == (40, 56)


# -- checkpoints run no code, keep no time -------------------------------------------------------------------

class _Hostile:
    """Unpickling this runs code: it touches `marker` and poses as a checkpoint of another configuration."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({self.marker!r}).touch() or {{'fingerprint': 'other'}}",)


def test_a_hostile_checkpoint_or_model_is_refused_without_running(data, tmp_path):
    from stages.contracts.errors import InputError

    refs = read_images(data / "clusters.parquet", data / "children", ["g1"], ("train", "val"))
    checkpoints, marker = tmp_path / "ck", tmp_path / "ran"
    checkpoints.mkdir()
    torch.save(_Hostile(marker), checkpoints / "epoch-0009.pt")
    with pytest.raises(InputError, match="epoch-0009.pt: is not a checkpoint this stage wrote"):
        train(refs, NET, VIEWS, small_config(epochs=1), checkpoints=checkpoints, progress=False, log=lambda *_: None)
    assert not marker.exists() and (checkpoints / "epoch-0009.pt").exists(), "it ran, or was deleted"

    torch.save(_Hostile(marker), tmp_path / "model.pt")
    with pytest.raises(InputError, match="model.pt: is not a safe checkpoint: it holds Python objects"):
        load_model(tmp_path / "model.pt")
    assert not marker.exists()


@pytest.mark.parametrize("keep", ["0", "-1"])
def test_keep_checkpoints_below_one_is_refused(data, tmp_path, keep):
    args = ["--clusters", str(data / "clusters.parquet"), "--children-root", str(data / "children"),
            "--generators", "g1", *OPTIONS, "--keep-checkpoints", keep, "--epochs", "1",
            "--out", str(tmp_path / "model.pt"), "--checkpoints", str(tmp_path / "ck"),
            "--metrics", str(tmp_path / "m.json"), "--plot", str(tmp_path / "curve.csv"),
            "--setting", str(tmp_path / "setting.json")]
    result = CliRunner().invoke(code_train.app, args)
    assert result.exit_code == 2 and "--keep-checkpoints" in result.output and "at least 1" in result.output
    assert not (tmp_path / "model.pt").exists()


def test_same_params_give_the_same_checkpoint_bytes(data, tmp_path):
    refs = read_images(data / "clusters.parquet", data / "children", ["g1"], ("train", "val"))
    written = []
    for run in ("a", "b"):
        train(refs, NET, VIEWS, small_config(epochs=1), checkpoints=tmp_path / run, progress=False,
              log=lambda *_: None)
        written.append((tmp_path / run / "epoch-0001.pt").read_bytes())
    saved = torch.load(tmp_path / "a" / "epoch-0001.pt", weights_only=True)
    assert all("images_per_s" not in record for record in saved["state"]["history"])
    assert written[0] == written[1], "a checkpoint's bytes depend on more than the params (time? speed?)"


# -- under DVC: the checkpoints are resume state, not an output ---------------------------------------------------

@pytest.mark.slow
def test_temp_and_queued_experiments_do_not_rerun_code_train_for_its_absent_checkpoints(dvc_repo, repo_root):
    """dvc.yaml's code_train stage alone, as the repository has it, on small inputs: `dvc repro` leaves its
    checkpoints in the workspace (git-ignored), and a `dvc exp run --temp` or queued experiment of a change
    code_train does not read skips it in a copy that lacks them. (The whole demo's rerun matrix is another test.)"""
    import shutil

    import yaml

    root = dvc_repo.path
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    select = stages["select"]  # its gate: the children sets it reads, fingerprinted
    select["foreach"] = {"code_train": select["foreach"]["code_train"]}
    select["do"]["deps"] = [d for d in select["do"]["deps"] if d != "data/embeddings/model"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"select": select, "code_train": stages["code_train"]}},
                                                  sort_keys=False))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["code_train"].update(image_size=32, local_size=16, batch_size=4)  # seconds on a CPU
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for ignore in (".gitignore", "data/code/.gitignore"):  # what the repository keeps out of git
        (root / ignore).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo_root / ignore, root / ignore)
    clusters = write_clusters(root / "data", n_parents=12, size=(80, 60))
    write_children(root / "data" / "children" / "tiny_random", read_clusters(clusters), generator="tiny_random",
                   size=(48, 48), fmt="PNG")
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "code_train on small inputs")

    done = dvc_repo("dvc", "repro")
    assert "Running stage 'select@code_train'" in done and "Running stage 'code_train'" in done
    checkpoints = root / "data" / "code" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "epoch-0001.pt", "epoch-0002.pt"]
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "repro")
    assert "checkpoints" not in dvc_repo("git", "ls-files")  # ignored: a git copy of the workspace lacks them
    assert "up to date" in dvc_repo("dvc", "status")

    done = dvc_repo("dvc", "exp", "run", "--temp", "-S", "probe.c_steps=5")
    assert "Running stage 'code_train'" not in done and "'code_train' didn't change" in done, done
    dvc_repo("dvc", "exp", "run", "--queue", "-S", "probe.c_steps=4")  # a queued run works in such a copy too
    queued = dvc_repo("dvc", "exp", "run", "--run-all")  # runs the queue and follows its logs to the end
    assert "Running stage 'code_train'" not in queued and "'code_train' didn't change" in queued, queued
    assert "Success" in dvc_repo("dvc", "queue", "status")
