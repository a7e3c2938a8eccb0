"""code_train: parents (data/clusters.parquet) + children (data/children/<gen>/) -> a CoDE ViT-Tiny trained
from scratch (data/code/model.pt) and its setting (data/code/setting.json, read by the report), per-epoch
checkpoints (data/code/checkpoints/), metrics/code_train.json and the loss curve (metrics/plots/code_train.csv).

    python -m stages.code_train --clusters data/clusters.parquet --children-root data/children \\
        --generators tiny_random --image-size 64 --local-size 32 --epochs 2 --batch-size 8

Several GPUs: `accelerate launch --num_processes 4 -m stages.code_train ...` (--batch-size is per device).
A killed run started again with the same options resumes from its last checkpoint. The method and the
training protocol: stages.code.loss and stages.code.trainer.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.code.loss import LossVariant
from stages.code.trainer import Monitor
from stages.contracts.errors import user_errors

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

PLOT_COLUMNS = ("epoch", "lr", "train_loss", "train_loss_real", "train_loss_fake")


def write_curve(path: Path, history: list[dict[str, float]], monitor: str) -> None:
    """The per-epoch curve as CSV (DVC plot data); throughput is left out so the file is deterministic."""
    import csv

    from stages.contracts.io import atomic_path

    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*PLOT_COLUMNS, monitor])
        for record in history:
            writer.writerow([f"{record[c]:.6g}" for c in (*PLOT_COLUMNS, monitor)])


def run(clusters: Path, children_root: Path, generators: list[str], out: Path, checkpoints: Path, metrics: Path,
        plot: Path, *, net, views, config, num_workers: int = 0, keep_checkpoints: int = 2, threads: int = 0,
        progress: bool = True, stop_after: int | None = None, setting: Path | None = None) -> dict:
    """Train (or resume) and write the best model, the metrics and the curve; return the metrics. With
    `setting`, also write the CoDE setting file there (stages.code.setting: what the report compares with the
    paper's)."""
    import shutil

    import torch
    from accelerate import PartialState

    from stages.code.data import read_images
    from stages.code.setting import CodeSetting, write_setting
    from stages.code.trainer import BEST, train
    from stages.contracts.io import atomic_path, write_metrics
    from stages.contracts.labels import FAKE

    if threads:
        torch.set_num_threads(threads)
    refs = read_images(clusters, children_root, generators, ("train", "val"))
    state = train(refs, net, views, config, checkpoints=checkpoints, num_workers=num_workers,
                  keep_checkpoints=keep_checkpoints, stop_after=stop_after, progress=progress)
    last = state.history[-1] if state.history else {}
    result = {
        "epochs_run": float(state.epoch),
        "best_epoch": float(state.best_epoch),
        "stopped_early": float(state.stopped_early),
        "best": {config.monitor.value: state.best},
        "final": {k: last.get(k) for k in ("train_loss", "train_loss_real", "train_loss_fake")},
        "images": {f"{split}_{kind}": float(sum(r.split == split and (r.label == FAKE) == (kind == "fake")
                                                for r in refs))
                   for split in ("train", "val") for kind in ("real", "fake")},
    }
    if stop_after is not None and state.epoch < config.epochs and not state.stopped_early:
        return result  # interrupted on purpose: outputs are written only by a finished run
    if not PartialState().is_main_process:
        return result
    with atomic_path(out) as tmp:
        shutil.copyfile(checkpoints / BEST, tmp)
    if setting is not None:
        write_setting(setting, CodeSetting(arch=net.arch, image_size=net.image_size, local_size=net.local_size,
                                           epochs=config.epochs, generators=tuple(generators)))
    write_curve(plot, state.history, config.monitor.value)
    write_metrics(metrics, result)
    return result


@app.command()
def main(
    clusters: Path = typer.Option(Path("data/clusters.parquet"), help="The clusters table (parents)."),
    children_root: Path = typer.Option(Path("data/children"), help="Folder holding one children folder per "
                                                                   "generator."),
    generators: str = typer.Option("tiny_random", help="Comma-separated generator aliases whose children train "
                                                       "CoDE (their train-split children, paired with parents)."),
    out: Path = typer.Option(Path("data/code/model.pt"), help="Output: the best epoch's model."),
    checkpoints: Path = typer.Option(Path("data/code/checkpoints"), help="Per-epoch checkpoints (resume)."),
    metrics: Path = typer.Option(Path("metrics/code_train.json"), help="Output metrics JSON."),
    plot: Path = typer.Option(Path("metrics/plots/code_train.csv"), help="Output per-epoch curve (CSV)."),
    setting: Path = typer.Option(Path("data/code/setting.json"), help="Output: the CoDE setting (for the report)."),
    arch: str = typer.Option("vit_tiny_patch16_224", help="timm architecture, randomly initialised."),
    image_size: int = typer.Option(224, help="Global views and evaluation crop, px (multiple of 16)."),
    local_size: int = typer.Option(224, help="Local crops, px: 96 in the paper, 224 in the released code."),
    num_transform: int = typer.Option(2, help="Up to this many augmentations per view (released recipe: 2)."),
    global_scale_min: float = typer.Option(0.4, help="Global crops: smallest area fraction."),
    global_scale_max: float = typer.Option(1.0, help="Global crops: largest area fraction."),
    local_scale_min: float = typer.Option(0.05, help="Local crops: smallest area fraction."),
    local_scale_max: float = typer.Option(0.4, help="Local crops: largest area fraction."),
    crop_pct: float = typer.Option(0.9, help="Views are resized to size / crop_pct, then centre-cropped."),
    epochs: int = typer.Option(150, help="Maximum epochs (one epoch = every train parent once)."),
    batch_size: int = typer.Option(256, help="(parent, child) pairs per batch and device."),
    lr: float = typer.Option(2e-3, help="AdamW peak learning rate."),
    weight_decay: float = typer.Option(2e-5, help="AdamW weight decay (not on biases, norms, embeddings)."),
    warmup_epochs: float = typer.Option(5.0, help="Linear warm-up length in epochs; cosine decay after."),
    min_lr: float = typer.Option(0.0, help="Learning rate at the end of the cosine."),
    temperature: float = typer.Option(0.1, help="InfoNCE temperature."),
    loss_variant: LossVariant = typer.Option(LossVariant.symmetric, help="symmetric: the paper's loss (real + "
                                             "fake terms); released: the released code's (real term twice)."),
    monitor: Monitor = typer.Option(Monitor.val_accuracy, help="Early-stopping metric on val: val_accuracy (logistic "
                                    "head's balanced accuracy) or val_loss."),
    patience: int = typer.Option(6, help="Stop after this many epochs without a better val metric; 0: never."),
    probe_images: int = typer.Option(0, help="val_accuracy: at most this many train and val images each "
                                             "(a seeded subsample); 0: all."),
    seed: int = typer.Option(0, help="Seed of the initialisation, the data order, the views and the loss."),
    workers: int = typer.Option(0, help="DataLoader worker processes (0: load in the training process)."),
    keep_checkpoints: int = typer.Option(2, help="Per-epoch checkpoints kept (the newest); 0: all."),
    threads: int = typer.Option(0, help="torch CPU threads (0: torch's default)."),
) -> None:
    """Train CoDE (contrastive, global/local crops) from scratch on parents and their children."""
    from stages.code.data import ViewConfig, split_list
    from stages.code.net import CodeNetConfig
    from stages.code.trainer import TrainConfig

    with user_errors():
        net = CodeNetConfig(arch=arch, image_size=image_size, local_size=local_size)
        views = ViewConfig(image_size=image_size, local_size=local_size, num_transform=num_transform,
                           global_scale=(global_scale_min, global_scale_max),
                           local_scale=(local_scale_min, local_scale_max), crop_pct=crop_pct)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                             warmup_epochs=warmup_epochs, min_lr=min_lr, temperature=temperature,
                             loss_variant=loss_variant, monitor=monitor, patience=patience,
                             probe_images=probe_images, seed=seed)
        result = run(clusters, children_root, split_list(generators, "code_train.generators"), out, checkpoints,
                     metrics, plot, net=net, views=views, config=config, num_workers=workers,
                     keep_checkpoints=keep_checkpoints, threads=threads, setting=setting)
    typer.echo(f"{out}: best epoch {result['best_epoch']:.0f} of {result['epochs_run']:.0f} "
               f"({monitor.value} {result['best'][monitor.value]:.4f})")


if __name__ == "__main__":
    app()
