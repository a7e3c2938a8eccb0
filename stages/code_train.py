"""code_train: parents (data/clusters.parquet) + children (data/children/<gen>/) -> a CoDE ViT-Tiny trained
from scratch (data/code/model.pt) and its setting (data/code/setting.json, read by the report),
metrics/code_train.json and the loss curve (metrics/plots/code_train.csv); per-epoch checkpoints in
data/code/checkpoints/ are resume state (git-ignored, not a DVC output).

    python -m stages.code_train --clusters data/clusters.parquet --children-root data/children \\
        --generators tiny_random --arch vit_tiny_patch16_224 --image-size 64 --local-size 32 --num-transform 2 \\
        --global-scale-min 0.4 --global-scale-max 1.0 --local-scale-min 0.05 --local-scale-max 0.4 \\
        --crop-pct 0.9 --epochs 2 --batch-size 8 --lr 0.002 --weight-decay 0.00002 --warmup-epochs 1 \\
        --min-lr 0 --temperature 0.1 --loss-variant symmetric --monitor val_accuracy --patience 6 \\
        --probe-images 0 --seed 0 --workers 0 --keep-checkpoints 2 --threads 1 \\
        --out data/code/model.pt --setting data/code/setting.json --checkpoints data/code/checkpoints \\
        --metrics metrics/code_train.json \\
        --plot metrics/plots/code_train.csv

(params.yaml's demo values). `--generators` takes one alias; repeat it for several:
`--generators sd14 --generators sd21`.

Several GPUs: `accelerate launch --num_processes 4 -m stages.code_train ...` (--batch-size is per device).
A killed run started again with the same options resumes from its last checkpoint and ends with the bytes of
an uninterrupted run. The method and the training protocol: stages.code.loss and stages.code.trainer.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.code.loss import LossVariant
from stages.code.trainer import Monitor
from stages.contracts.errors import user_errors
from stages.contracts.hub import stay_offline
from stages.contracts.runtime import Command, parallel_option

app = Command()
# read by dvc.yaml's shell, not by this module: what runs `-m stages.code_train` (Makefile's paper target)
ENVIRONMENT = ("PARENTAGE_CODE_TRAIN_LAUNCHER",)

PLOT_COLUMNS = ("epoch", "lr", "train_loss", "train_loss_real", "train_loss_fake")


def write_curve(path: Path, history: list[dict[str, float]], monitor: str) -> None:
    """The per-epoch curve as CSV (DVC plot data); throughput is left out so the file is deterministic."""
    import csv

    from stages.contracts.io import atomic_path, csv_cell

    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*PLOT_COLUMNS, monitor])
        for record in history:
            writer.writerow([csv_cell(float(record[c])) for c in (*PLOT_COLUMNS, monitor)])


def run(clusters: Path, children_root: Path, generators: list[str], out: Path, checkpoints: Path, metrics: Path,
        plot: Path, *, net, views, config, num_workers: int, keep_checkpoints: int, threads: int,
        progress: bool = True, stop_after: int | None = None, setting: Path | None = None) -> dict:
    """Train (or resume) and write the best model, the metrics and the curve; return the metrics. With
    `setting`, also write the CoDE setting file there (stages.code.setting: what the report compares with the
    paper's)."""
    import shutil

    import torch
    from accelerate import PartialState

    from stages.code.data import read_images
    from stages.code.net import check_arch
    from stages.code.setting import CodeSetting, write_setting
    from stages.code.trainer import BEST, train
    from stages.contracts.io import atomic_path, check_outputs, write_metrics
    from stages.contracts.labels import FAKE

    check_outputs(writes=[out, metrics, plot, setting], reads=[clusters, children_root])
    check_arch(net.arch)  # before any data is read
    if threads:
        torch.set_num_threads(threads)
    refs = read_images(clusters, children_root, generators, ("train", "val"))
    state = train(refs, net, views, config, checkpoints=checkpoints, num_workers=num_workers,
                  keep_checkpoints=keep_checkpoints, stop_after=stop_after, progress=progress)
    result = {
        "epochs_run": int(state.epoch),
        "best_epoch": int(state.best_epoch),
        "stopped_early": int(state.stopped_early),
        "best": {config.monitor.value: state.best},
        "images": {f"{split}_{kind}": int(sum(r.split == split and (r.label == FAKE) == (kind == "fake")
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
    clusters: Path = typer.Option(..., help="The clusters table (parents)."),
    children_root: Path = typer.Option(..., help="Folder holding one children folder per generator."),
    generators: list[str] = typer.Option(..., help="Generator aliases whose children train CoDE (their "
                                                   "train-split children, paired with parents); repeat the option."),
    out: Path = typer.Option(..., help="Output: the best epoch's model."),
    checkpoints: Path = typer.Option(..., help="Folder of per-epoch checkpoints: resume state, not an output "
                                               "(another configuration's or data's are discarded)."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
    plot: Path = typer.Option(..., help="Output per-epoch curve (CSV)."),
    setting: Path = typer.Option(..., help="Output: the CoDE setting (for the report)."),
    arch: str = typer.Option(..., help="timm architecture, randomly initialised (paper: vit_tiny_patch16_224)."),
    image_size: int = typer.Option(..., min=16, help="Global views and evaluation crop, px (multiple of 16; "
                                                      "paper: 224)."),
    local_size: int = typer.Option(..., min=16, help="Local crops, px: 96 in the paper, 224 in the released code."),
    num_transform: int = typer.Option(..., min=0, help="Up to this many augmentations per view (released recipe: 2)."),
    global_scale_min: float = typer.Option(..., help="Global crops: smallest area fraction (paper: 0.4)."),
    global_scale_max: float = typer.Option(..., help="Global crops: largest area fraction (paper: 1.0)."),
    local_scale_min: float = typer.Option(..., help="Local crops: smallest area fraction (paper: 0.05)."),
    local_scale_max: float = typer.Option(..., help="Local crops: largest area fraction (paper: 0.4)."),
    crop_pct: float = typer.Option(..., help="Views are resized to size / crop_pct, then centre-cropped (0.9)."),
    epochs: int = typer.Option(..., min=1, help="Maximum epochs (one epoch = every train parent once; paper: 150)."),
    batch_size: int = typer.Option(..., min=1, help="(parent, child) pairs per batch and device (paper: 256)."),
    lr: float = typer.Option(..., help="AdamW peak learning rate (paper: 2e-3)."),
    weight_decay: float = typer.Option(..., help="AdamW weight decay, not on biases, norms, embeddings (2e-5)."),
    warmup_epochs: float = typer.Option(..., help="Linear warm-up length in epochs; cosine decay after (paper: 5)."),
    min_lr: float = typer.Option(..., help="Learning rate at the end of the cosine (paper: 0)."),
    temperature: float = typer.Option(..., help="InfoNCE temperature (paper: 0.1)."),
    loss_variant: LossVariant = typer.Option(..., help="symmetric: the paper's loss (real + fake terms); "
                                                       "released: the released code's (real term twice)."),
    monitor: Monitor = typer.Option(..., help="Early-stopping metric on val: val_accuracy (logistic head's "
                                              "balanced accuracy) or val_loss."),
    patience: int = typer.Option(..., min=0, help="Stop after this many epochs without a better val metric; 0: never."),
    probe_images: int = typer.Option(..., min=0, help="val_accuracy: at most this many train and val images each "
                                               "(a seeded subsample); 0: all."),
    seed: int = typer.Option(..., min=0, max=2**32 - 1,
                             help="Seed of the initialisation, the data order, the views and the loss."),
    workers: int = parallel_option(0, envvar="PARENTAGE_CODE_TRAIN_WORKERS",
                                   help="DataLoader worker processes (0: load in the training process)."),
    keep_checkpoints: int = typer.Option(2, envvar="PARENTAGE_CODE_TRAIN_KEEP_CHECKPOINTS",
                                         help="Per-epoch checkpoints kept (the newest); at least 1: a killed "
                                              "run resumes from the newest."),
    threads: int = parallel_option(1, envvar="PARENTAGE_CODE_TRAIN_THREADS",
                                   help="torch CPU threads (0: torch's default)."),
) -> None:
    """Train CoDE (contrastive, global/local crops) from scratch on parents and their children."""
    stay_offline()  # no command downloads a model: weights come from disk or the local caches
    from stages.code.data import ViewConfig
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
        result = run(clusters, children_root, generators, out, checkpoints, metrics, plot, net=net, views=views,
                     config=config, num_workers=workers, keep_checkpoints=keep_checkpoints, threads=threads,
                     setting=setting)
    typer.echo(f"{out}: best epoch {result['best_epoch']:.0f} of {result['epochs_run']:.0f} "
               f"({monitor.value} {result['best'][monitor.value]:.4f})")


if __name__ == "__main__":
    app()
