"""`detect` throughput against the bare backbone forward, on the same COCO-mini images, side by side.

    python benchmarks/bench_detect.py [--images ../shared/data/coco-mini/images] [--repeats 3]

Three measures per repeat, interleaved so machine load hits them alike:
- bare: the registry backbone's forward alone on images decoded and preprocessed beforehand (the ceiling);
- loop: the plain script a user would write: read, preprocess and forward one batch after another in one
  process (decoding included, no workers);
- detect: `stages.detect.score_inputs` on the folder (path expansion, per-file robust reading in DataLoader
  workers, forward, head, one output row per file), rows written to an in-memory CSV.
The head is a random linear head with the backbone's dimension (its cost is one dot product per image; the
score values do not matter here). Prints images/s medians and the ratios detect/bare and detect/loop.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "coco-mini" / "images")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--registry", type=Path, default=REPO / "stages" / "embedding" / "backbones.yaml")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.images.is_dir():
        sys.exit(f"{args.images}: no images here (COCO-mini lives in ../shared/data/coco-mini)")

    import numpy as np
    import torch

    from stages.detect import OutputFormat, score_inputs, write_rows
    from stages.heads.linear import LinearHead
    from stages.imaging.load import load_rgb
    from stages.shipped.artifact import Detector
    from stages.shipped.wild import expand_inputs, load_registry_backbone

    backbone = load_registry_backbone(args.backbone, args.registry)
    inputs = expand_inputs([str(args.images)])
    paths = [Path(i.path) for i in inputs]
    dim = backbone.spec["dim"]
    rng = np.random.default_rng(0)
    detector = Detector(backbone=backbone.spec, head=LinearHead(np.zeros(dim), np.ones(dim), rng.normal(size=dim),
                                                                [0.0]), threshold=0.5)
    pixels = torch.stack([backbone.preprocess(load_rgb(p)) for p in paths])  # (N, 3, H, W)
    batches = list(pixels.split(args.batch_size))
    n = len(paths)
    print(f"{n} images from {args.images}, backbone {args.backbone}, batch {args.batch_size}, "
          f"{args.workers} workers, {torch.get_num_threads()} torch threads")

    def bare() -> None:
        for batch in batches:
            backbone.embed(batch)

    def loop() -> None:
        for start in range(0, n, args.batch_size):
            chunk = paths[start:start + args.batch_size]
            scores = detector.score(backbone.embed(torch.stack([backbone.preprocess(load_rgb(p))
                                                                for p in chunk])).numpy())
            assert len(scores) == len(chunk)

    def detect() -> None:
        rows = score_inputs(detector, backbone, inputs, batch_size=args.batch_size, workers=args.workers,
                            progress=False)
        scored, failed = write_rows(rows, io.StringIO(), OutputFormat.csv)
        assert (scored, failed) == (n, 0), (scored, failed)

    bare()  # warm-up: first-call allocations and kernel selection
    rates: dict[str, list[float]] = {"bare": [], "loop": [], "detect": []}
    for repeat in range(args.repeats):
        for name, run in (("bare", bare), ("loop", loop), ("detect", detect)):
            start = time.perf_counter()
            run()
            rates[name].append(n / (time.perf_counter() - start))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} img/s" for k, v in rates.items()))
    median = {k: statistics.median(v) for k, v in rates.items()}
    print("medians: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in median.items()))
    paired = [d / b for d, b in zip(rates["detect"], rates["bare"], strict=True)]
    print(f"detect / bare forward: {median['detect'] / median['bare']:.3f} (median of paired ratios "
          f"{statistics.median(paired):.3f}; target >= 0.9)")
    print(f"detect / plain loop:   {median['detect'] / median['loop']:.3f}")


if __name__ == "__main__":
    main()
