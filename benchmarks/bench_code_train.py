"""Training throughput of the code_train stage against a bare loop, side by side in one process.

    python benchmarks/bench_code_train.py [--image-size 64 --local-size 32 --batch-size 8 --threads 1]

stage: stages.code.trainer.train on a clusters table of 640x480 JPEG parents and 128 px PNG
       children (as the demo generator makes), reading, decoding and augmenting every view each step;
       images/s = 8 views x pairs per second of its training loop (its own measurement, the progress bar's)
bare:  the same model, loss, optimizer, batch and threads on tensors made once (forward + backward + step)
Prints the medians and stage / bare (goal >= 0.9), with data loading in the training process (workers 0) and
in one worker process (workers 1), and workers 1 / workers 0 (goal >= 1.0: a loader worker helps)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def logged_images_per_s(lines: list[str]) -> list[float]:
    """The per-epoch throughput the training loop prints (it is never recorded in an output: same params, same
    bytes), read back from the lines its `log` received."""
    import re

    return [float(m.group(1)) for line in lines for m in [re.search(r"([0-9.]+) images/s", str(line))] if m]


def bare_images_per_s(net, config, batch: int, steps: int, device: str = "cpu") -> list[float]:
    import torch

    from stages.code.loss import VIEWS
    from stages.code.net import build_model
    from stages.code.trainer import batch_loss, param_groups

    model = build_model(net, seed=0).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    tensors = {name: torch.randn(batch, 3, *(2 * [net.local_size if name.startswith("local") else net.image_size]),
                                 device=device) for name in VIEWS}
    rates = []
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = batch_loss(model, tensors, seed=0, epoch=0, step=step, process=0, config=config)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device != "cpu":
            torch.cuda.synchronize()
        if step:  # the first step warms up the allocator
            rates.append(len(VIEWS) * batch / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--local-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=24, help="train pairs (steps per epoch = pairs / batch)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the stage figure is their median)")
    args = parser.parse_args()

    import torch

    from stages.code.data import ViewConfig, read_images
    from stages.code.loss import LossVariant
    from stages.code.net import CodeNetConfig
    from stages.code.trainer import Monitor, TrainConfig, train
    from stages.contracts.clusters import read_clusters
    from tests.fixtures import write_children, write_clusters

    torch.set_num_threads(args.threads)
    # the released recipe's values where the options above do not say
    net = CodeNetConfig(arch="vit_tiny_patch16_224", image_size=args.image_size, local_size=args.local_size)
    views = ViewConfig(image_size=args.image_size, local_size=args.local_size, num_transform=2,
                       global_scale=(0.4, 1.0), local_scale=(0.05, 0.4), crop_pct=0.9)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=2e-3, weight_decay=2e-5, warmup_epochs=0,
                         min_lr=0.0, temperature=0.1, loss_variant=LossVariant.symmetric, monitor=Monitor.val_loss,
                         patience=0, probe_images=0, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clusters = write_clusters(root, n_parents=3 * args.pairs, n_captions=2, size=(640, 480))
        write_children(root / "children" / "g", read_clusters(clusters), generator="g", size=(128, 128), fmt="PNG")
        refs = read_images(clusters, root / "children", ["g"], ("train", "val"))
        print(f"threads {args.threads}, batch {args.batch_size} pairs ({8 * args.batch_size} images), "
              f"views {args.image_size}/{args.local_size} px, {args.pairs} train pairs x {args.epochs} epochs")
        results = {}
        for workers in (0, 1):
            # the bare loop runs just before and just after the stage, so both see the same machine load
            bare = bare_images_per_s(net, config, args.batch_size, steps=4)
            lines: list[str] = []
            train(refs, net, views, config, checkpoints=root / f"ck{workers}", num_workers=workers,
                  progress=False, log=lines.append)
            bare += bare_images_per_s(net, config, args.batch_size, steps=4)
            stage = logged_images_per_s(lines)
            results[workers] = (statistics.median(stage), statistics.median(bare))
            print(f"workers {workers}: stage {results[workers][0]:.1f} images/s (per epoch: "
                  f"{', '.join(f'{r:.1f}' for r in stage)}), bare {results[workers][1]:.1f} images/s (median of "
                  f"{len(bare)} steps), ratio {results[workers][0] / results[workers][1]:.2f} (goal >= 0.9)")
        print(f"workers 1 / workers 0 (stage images/s): ratio {results[1][0] / results[0][0]:.2f} (goal >= 1.0)")


if __name__ == "__main__":
    main()
