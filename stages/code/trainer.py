"""The CoDE training loop: AdamW, linear warm-up then cosine decay (per step), early stopping on a val
metric, a checkpoint every epoch, resume after a kill, and `accelerate` for one or several devices.

    accelerate launch --num_processes 4 -m stages.code_train ...   # several GPUs; batch_size is per device
    python -m stages.code_train ...                                 # one device (GPU if present, else CPU)

Protocol, per epoch e:
  1. every train parent once, in an order seeded by (seed, e), each with one of its children at random;
     views and augmentations drawn from rng(seed, 0, e, i) for item i (stages.code.data.PairViews);
  2. per batch: embed the eight views, CoDE loss (stages.code.loss) with derangements seeded by
     (seed, e, step, process), backward, AdamW step, schedule step;
  3. the monitored val metric (main process): `val_loss` (the same loss on val pairs with fixed views) or
     `val_accuracy` (balanced accuracy on val of the logistic-regression head fitted on train features);
  4. checkpoint (model, optimizer, schedule, history, early-stopping state); the best epoch's weights kept.

Everything random comes from the seed, so a run resumed from the checkpoint of epoch e reproduces the
loss curve of an uninterrupted run, and its checkpoints and outputs have the same bytes. Checkpoints carry a
fingerprint of the configuration, the data and the code that trains (TRAINING_CODE); a directory holding
another run's checkpoints is cleared rather than resumed."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from stages.code.augment import normalize
from stages.code.data import EpochIndices, EvalImages, ImageRef, PairViews, ViewConfig, extract_features, make_pairs
from stages.code.loss import VIEWS, LossVariant, code_loss, derangement
from stages.code.net import CodeNetConfig, build_model, save_model
from stages.contracts.errors import InputError
from stages.contracts.io import atomic_path
from stages.contracts.labels import FAKE, REAL
from stages.contracts.runtime import checked_batches, data_loader

BEST = "best.pt"
# Every module a training run executes: this module's import closure, which tests/test_code_train.py checks
# against the import graph (tests/imports.py). DVC reruns code_train when one of them is edited; their bytes in
# the fingerprint make that rerun train afresh instead of resuming checkpoints the old code wrote.
TRAINING_CODE = ("stages.code.augment", "stages.code.data", "stages.code.heads", "stages.code.loss", "stages.code.net",
                 "stages.code.trainer", "stages.compute.processes", "stages.contracts.children",
                 "stages.contracts.clusters",
                 "stages.contracts.errors", "stages.contracts.files", "stages.contracts.ids", "stages.contracts.io",
                 "stages.contracts.labels", "stages.contracts.runtime",
                 "stages.heads.classes", "stages.heads.linear", "stages.heads.metrics", "stages.heads.threshold",
                 "stages.imaging.load",
                 "stages.imaging.transforms", "stages.uncertainty.bootstrap")


class Monitor(StrEnum):
    val_loss = "val_loss"  # lower is better
    val_accuracy = "val_accuracy"  # balanced accuracy of the logistic head on val; higher is better


@dataclass(frozen=True)
class TrainConfig:
    # code_train.* fills every field; the paper's values are in the comments
    epochs: int  # 150
    batch_size: int  # per device; 256
    lr: float  # 2e-3
    weight_decay: float  # 2e-5
    warmup_epochs: float  # 5
    min_lr: float  # 0
    temperature: float  # 0.1
    loss_variant: LossVariant  # symmetric
    monitor: Monitor  # val_accuracy
    patience: int  # epochs without improvement before stopping; 0: never stop early; 6
    probe_images: int  # val_accuracy: at most this many train and val images each (seeded); 0: all
    seed: int

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 2), ("patience", 0), ("probe_images", 0)):
            if getattr(self, name) < low:
                raise InputError(name, f"is {getattr(self, name)}; expected at least {low}")
        # written so that NaN fails each comparison: a float option accepts nan and inf
        for name in ("lr", "temperature"):
            if not 0 < getattr(self, name) < math.inf:
                raise InputError(name, f"is {getattr(self, name)}; expected a positive finite number")
        if not (0 <= self.warmup_epochs < math.inf and 0 <= self.weight_decay < math.inf
                and 0 <= self.min_lr <= self.lr):
            raise InputError("warmup_epochs / weight_decay / min_lr", f"are {self.warmup_epochs}, "
                             f"{self.weight_decay} and {self.min_lr}; expected finite warmup_epochs >= 0, "
                             "weight_decay >= 0 and 0 <= min_lr <= lr")


@dataclass
class TrainState:
    """What a checkpoint restores besides the weights and the optimizer."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False


def fingerprint(net: CodeNetConfig, views: ViewConfig, config: TrainConfig, refs: Sequence[ImageRef]) -> str:
    """A hash of everything that changes the training curve: configs, the training data (each image's id, split
    and content) and the code that trains (TRAINING_CODE), so whatever makes DVC rerun the stage also restarts
    training."""
    from importlib.util import find_spec

    digest = hashlib.sha256(json.dumps([asdict(net), asdict(views), asdict(config)], sort_keys=True).encode())
    for name in TRAINING_CODE:
        digest.update(Path(find_spec(name).origin).read_bytes())
    for ref in refs:
        # parents by the sha256 of their file that the clusters table records (the clusters stage read it), or
        # by the file itself; children by their bytes
        if isinstance(ref.source, bytes):
            content = hashlib.sha256(ref.source).hexdigest()
        else:
            content = ref.sha256 or hashlib.sha256(Path(ref.source).read_bytes()).hexdigest()
        digest.update(f"{ref.key}|{ref.split}|{content}\n".encode())
    return digest.hexdigest()


def lr_factor(step: int, *, steps_per_epoch: int, config: TrainConfig) -> float:
    """Multiplier of the base lr at optimizer step `step`: linear warm-up, then cosine to min_lr."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    total = config.epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = config.min_lr / config.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as timm's recipe: no decay on biases, norms, position embeddings and the class token."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def embed_views(model, batch: dict[str, Any]) -> dict[str, Any]:
    """Embed the eight views of a batch: one forward for the views of size S, one for the local crops
    (one forward for all when both sizes match). Returns name -> (B, D)."""
    import torch

    size_views = [name for name in VIEWS if batch[name].shape[-1] == batch["real"].shape[-1]]
    other = [name for name in VIEWS if name not in size_views]
    out: dict[str, Any] = {}
    for names in (size_views, other):
        if names:
            pixels = torch.cat([batch[name] for name in names])  # (len(names) * B, 3, s, s)
            if pixels.dtype == torch.uint8:  # the loader's views (stages.code.data.make_views)
                pixels = normalize(pixels)
            z = model(pixels)  # (len * B, D)
            out.update(zip(names, z.chunk(len(names)), strict=True))
    return out


def batch_loss(model, batch: dict[str, Any], *, seed: int, epoch: int, step: int, process: int,
               config: TrainConfig) -> dict[str, Any]:
    import torch

    z = embed_views(model, batch)
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{epoch}/{step}/{process}".encode()))
    n = len(batch["real"])
    perm_real, perm_fake = derangement(n, generator), derangement(n, generator)
    device = z["real"].device
    return code_loss(z, perm_real.to(device), perm_fake.to(device), temperature=config.temperature,
                     variant=config.loss_variant)


def val_loss(model, pairs, views: ViewConfig, config: TrainConfig, *, num_workers: int) -> float:
    """The mean CoDE loss on val pairs with views fixed across epochs (stream 1, epoch 0)."""
    import torch

    dataset = PairViews(pairs, views, seed=config.seed, stream=1, shuffle=False)
    loader = data_loader(dataset, batch_size=config.batch_size, num_workers=num_workers)
    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for step, batch in enumerate(checked_batches(loader)):
            if len(batch["real"]) < 2:
                continue
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = batch_loss(model, batch, seed=config.seed, epoch=-1, step=step, process=0, config=config)["loss"]
            total, count = total + float(loss) * len(batch["real"]), count + len(batch["real"])
    model.train()
    return total / count


def val_accuracy(model, refs: Sequence[ImageRef], image_size: int, *, num_workers: int, batch_size: int,
                 limit: int = 0, seed: int = 0) -> float:
    """Balanced val accuracy of the logistic-regression head fitted on train features (natural threshold).

    With `limit`, each split contributes a seeded subsample of at most that many images (the released
    code probes with 9600 train and 4800 val images), the same one every epoch."""
    from stages.code.heads import fit_head
    from stages.heads.metrics import classification_metrics

    features = {}
    for split in ("train", "val"):
        chosen = [ref for ref in refs if ref.split == split]
        if 0 < limit < len(chosen):
            chosen = stratified_subsample(chosen, limit, np.random.default_rng([seed, 2]))
        features[split] = (extract_features(model, EvalImages(chosen, image_size), batch_size=batch_size,
                                            num_workers=num_workers, progress=False),
                           np.array([ref.label for ref in chosen]))
    score = fit_head("logreg", *features["train"])
    metrics = classification_metrics(score(features["val"][0]), features["val"][1], threshold=0.0)
    return (metrics["real_accuracy"] + metrics["fake_accuracy"]) / 2


def stratified_subsample(refs: Sequence[ImageRef], limit: int, rng: np.random.Generator) -> list[ImageRef]:
    """About `limit` of `refs`, each class in its share and at least one of each, in their original order."""
    keep: list[int] = []
    for label in (REAL, FAKE):
        members = [i for i, ref in enumerate(refs) if ref.label == label]
        if members:
            size = min(len(members), max(1, round(limit * len(members) / len(refs))))
            keep.extend(rng.choice(members, size=size, replace=False).tolist())
    return [refs[i] for i in sorted(keep)]


def canonical(value: Any) -> Any:
    """`value` rebuilt with every string interned, so equal contents pickle to equal bytes.

    pickle writes an object it has already written as a back-reference to the first copy, and tells objects
    apart by identity: the history keys a resumed run loaded from its checkpoint are other string objects than
    the same keys written by this module, so without this a resumed run's checkpoint held equal contents in
    other bytes. Tensors are left as they are (torch writes each storage once, by its own identity)."""
    if type(value) is str:
        return sys.intern(value)
    if isinstance(value, dict):
        rebuilt = type(value)((canonical(key), canonical(item)) for key, item in value.items())
        if hasattr(value, "_metadata"):  # a module's state_dict (an OrderedDict): its submodules' format versions
            rebuilt._metadata = canonical(value._metadata)
        return rebuilt
    if isinstance(value, list | tuple):
        return type(value)(canonical(item) for item in value)
    return value


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("epoch-*.pt"))
    return found[-1] if found else None


def load_checkpoint(path: Path, *, map_location: str = "cpu") -> dict[str, Any]:
    """A checkpoint written by `train` (tensors, numbers, strings, lists and dicts only).

    Loaded with weights_only=True: torch's restricted unpickler never runs code, and a file holding anything
    else (a pickle of an object, a function call) is refused with an InputError naming it, and left in place
    for the user to look at: it was not written by this stage."""
    import pickle

    import torch

    from stages.contracts.files import regular_or_absent

    regular_or_absent(path, what="a checkpoint")
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises reloading with weights_only=False, which runs whatever the file holds: not quoted
        raise InputError(str(path), "is not a checkpoint this stage wrote: not a safe checkpoint, it holds Python "
                         "objects besides tensors and plain data; refused without running it",
                         "move it out of the checkpoints folder") from error
    except (RuntimeError, EOFError, ValueError, AttributeError, OSError) as error:
        reason = "an empty file" if isinstance(error, EOFError) else type(error).__name__
        raise InputError(str(path), f"is not a checkpoint this stage wrote: unreadable ({reason})",
                         "move it out of the checkpoints folder") from error
    if not isinstance(saved, dict) or "fingerprint" not in saved:
        raise InputError(str(path), "is not a checkpoint this stage wrote (no fingerprint)",
                         "move it out of the checkpoints folder")
    return saved


def train(refs: Sequence[ImageRef], net: CodeNetConfig, views: ViewConfig, config: TrainConfig, *,
          checkpoints: Path, num_workers: int = 0, keep_checkpoints: int = 2, stop_after: int | None = None,
          progress: bool = True, log=print) -> TrainState:
    """Train (or resume) CoDE on the train split of `refs`; checkpoints and best.pt go to `checkpoints`.

    `stop_after` ends the run after that many epochs of this call (as a kill would; tests use it). The newest
    `keep_checkpoints` (at least 1) per-epoch checkpoints are kept; they hold no time or speed, so the same
    params give the same bytes."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list
    from tqdm.auto import tqdm

    from stages.compute.processes import group_timeout, processes

    if keep_checkpoints < 1:
        raise InputError("--keep-checkpoints (PARENTAGE_CODE_TRAIN_KEEP_CHECKPOINTS)", f"is {keep_checkpoints}; "
                         "expected at least 1 (the newest checkpoint is what a killed run resumes from)")
    pairs, val_pairs = make_pairs(refs, "train"), make_pairs(refs, "val")
    if len(pairs) < 2:
        raise InputError("train split", f"has {len(pairs)} parents with children; CoDE needs at least 2 pairs")
    if config.monitor is Monitor.val_loss and len(val_pairs) < 2:
        raise InputError("val split", f"has {len(val_pairs)} parents with children; val_loss needs at least 2")
    if config.monitor is Monitor.val_accuracy and not {REAL, FAKE} <= {r.label for r in refs if r.split == "val"}:
        raise InputError("val split", "needs real and generated images for val_accuracy")

    # waits of unknown length (the main process validating, saving) go through group.barrier, which names a
    # lost process; the gradient all-reduce runs in lockstep within the group's timeout, the same one
    accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=group_timeout())])
    group = processes(accelerator)
    main = accelerator.is_main_process
    model = build_model(net, seed=config.seed)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    dataset = PairViews(pairs, views, seed=config.seed)
    # persistent workers: started once, not at every epoch (EpochIndices hands them the epoch); pinned
    # batches on CUDA so the host-to-device copy runs beside the step
    loader = data_loader(dataset, batch_size=config.batch_size, sampler=EpochIndices(dataset),
                         num_workers=num_workers, persistent_workers=num_workers > 0,
                         pin_memory=torch.cuda.is_available() and accelerator.device.type == "cuda")
    steps_per_epoch = math.ceil(len(dataset) / (config.batch_size * accelerator.num_processes))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch=steps_per_epoch, config=config))

    state, print_ = TrainState(), (log if main else (lambda *_: None))
    stamp = fingerprint(net, views, config, [r for r in refs if r.split in ("train", "val")])
    checkpoints.mkdir(parents=True, exist_ok=True)
    last = latest_checkpoint(checkpoints)
    if last is not None:
        saved = load_checkpoint(last)
        if saved["fingerprint"] == stamp:
            try:
                model.load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                schedule.load_state_dict(saved["schedule"])
                state = TrainState(**saved["state"])
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
                # its fingerprint matches, its content does not: a file edited (or mixed up) after it was written
                raise InputError(str(last), f"is not a checkpoint this stage wrote ({type(error).__name__}: "
                                 f"{' '.join(str(error).split())[:200]})",
                                 "move it out of the checkpoints folder") from error
            print_(f"resuming from {last} (epoch {state.epoch} of {config.epochs})")
        else:
            print_(f"{checkpoints}: checkpoints of another configuration or data; starting afresh")
            group.barrier("every process to read the checkpoints")
            if main:
                for stale in [*checkpoints.glob("epoch-*.pt"), checkpoints / BEST]:
                    stale.unlink(missing_ok=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    epochs_this_call = 0
    while state.epoch < config.epochs and not state.stopped_early:
        if stop_after is not None and epochs_this_call >= stop_after:
            break
        epoch = state.epoch
        dataset.use_epoch(epoch)
        model.train()
        sums, seen, start, lr = {"loss": 0.0, "real": 0.0, "fake": 0.0}, 0, time.perf_counter(), config.lr
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not (progress and main))
        for step, batch in enumerate(checked_batches(bar)):
            n = len(batch["real"])
            if n < 2:  # a last batch of one has no same-class positive; even_batches makes all processes agree
                continue
            out = batch_loss(model, batch, seed=config.seed, epoch=epoch, step=step,
                             process=accelerator.process_index, config=config)
            accelerator.backward(out["loss"])
            optimizer.step()
            lr = float(schedule.get_last_lr()[0])  # the lr this step used
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            values = accelerator.reduce(torch.stack([out[k].detach() for k in sums]), reduction="mean")
            for key, value in zip(sums, values.tolist(), strict=True):
                sums[key] += value * n
            seen += n
            images = len(VIEWS) * seen * accelerator.num_processes
            bar.set_postfix(loss=f"{float(values[0]):.4f}", img_s=f"{images / (time.perf_counter() - start):.1f}")
        # throughput is printed, never recorded: the history goes into checkpoints, and time in an output
        # would change its bytes (and DVC's hash) on every run
        throughput = len(VIEWS) * seen * accelerator.num_processes / (time.perf_counter() - start)
        record = {"epoch": float(epoch + 1), "lr": lr,
                  **{f"train_{k}" if k == "loss" else f"train_loss_{k}": v / max(seen, 1) for k, v in sums.items()}}

        monitored = [None]
        if main:
            bare = accelerator.unwrap_model(model)
            if config.monitor is Monitor.val_loss:
                monitored[0] = val_loss(bare, val_pairs, views, config, num_workers=num_workers)
            else:
                monitored[0] = val_accuracy(bare, [r for r in refs if r.split in ("train", "val")], net.image_size,
                                            num_workers=num_workers, batch_size=config.batch_size,
                                            limit=config.probe_images, seed=config.seed)
        group.barrier(f"the main process to validate epoch {epoch + 1}")
        value = float(broadcast_object_list(monitored)[0])
        record[config.monitor.value] = value
        lower_is_better = config.monitor is Monitor.val_loss
        better = state.best is None or (value < state.best if lower_is_better else value > state.best)
        state.epoch, state.history = epoch + 1, [*state.history, record]
        if better:
            state.best, state.best_epoch, state.bad_epochs = value, epoch + 1, 0
        else:
            state.bad_epochs += 1
            state.stopped_early = 0 < config.patience <= state.bad_epochs
        print_(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}, {config.monitor.value} {value:.4f}"
               f"{' (best)' if better else ''}, {throughput:.1f} images/s")
        if main:
            bare = accelerator.unwrap_model(model)
            if better:
                save_model(checkpoints / BEST, bare, net, {"epoch": epoch + 1, config.monitor.value: value})
            with atomic_path(checkpoints / f"epoch-{epoch + 1:04d}.pt") as tmp:
                torch.save(canonical({"fingerprint": stamp, "model": bare.state_dict(),
                                      "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                                      "state": asdict(state)}), tmp)
            for old in sorted(checkpoints.glob("epoch-*.pt"))[:-keep_checkpoints]:
                old.unlink()
        group.barrier(f"the main process to save epoch {epoch + 1}")
        epochs_this_call += 1
    return state
