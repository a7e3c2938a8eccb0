"""`detect` throughput against the bare backbone forward, on the same COCO-mini images, side by side; then
detect's peak memory on many small files.

    python benchmarks/bench_detect.py [--images ../shared/data/coco-mini/images] [--repeats 3]
        [--memory-files 2500]

Four measures per repeat, interleaved so machine load hits them alike:
- bare: the registry backbone's forward alone on images decoded and preprocessed beforehand (the ceiling);
- loop: the plain script a user would write: read, preprocess and forward one batch after another in one
  process (decoding included, no workers);
- detect: `stages.shipped.rows.score_inputs` on the folder (path expansion, per-file robust reading in DataLoader
  workers, forward, head, one output row per file), rows written to an in-memory CSV;
- detect draft: the same with --jpeg-decode draft (JPEGs at least twice the backbone's resize decoded
  reduced; stages.imaging.load).
The head is a random linear head with the backbone's dimension (its cost is one dot product per image; the
score values do not matter here). Prints images/s medians and the ratios detect/bare and detect/loop, each
beside its goal.
Memory: the peak resident memory of the `detect` command (a subprocess; the largest of it and its workers)
on N and 4N small JPEG files (64x48, made here), goal: 4N within 1.1x of N. What could grow with N is the
command's own bookkeeping (paths, rows, the loader), not the model, so by default this runs a 1-layer random
CLIP (32 px) that makes 10,000 files take seconds; --memory-backbone efficientnet_lite0 runs the real one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# a 1-layer CLIP with random weights (32 px images, 16-d embeddings), for the memory test
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                             "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "coco-mini" / "images")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--registry", type=Path, default=REPO / "stages" / "embedding" / "backbones.yaml")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-files", type=int, default=2500, help="N of the memory test (and 4N); 0: skip")
    parser.add_argument("--memory-backbone", default="tiny", help="tiny (a 1-layer random CLIP) or a registry alias")
    args = parser.parse_args()
    if not args.images.is_dir():
        sys.exit(f"{args.images}: no images here (COCO-mini lives in ../shared/data/coco-mini)")

    import numpy as np
    import torch

    from stages.detect import OutputFormat, write_rows
    from stages.heads.linear import LinearHead
    from stages.imaging.load import JpegDecode, load_rgb
    from stages.shipped.artifact import Detector, save_detector
    from stages.shipped.rows import score_inputs
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

    def detect(decode: JpegDecode = JpegDecode.full) -> None:
        rows = score_inputs(detector, backbone, inputs, batch_size=args.batch_size, workers=args.workers,
                            progress=False, jpeg_decode=decode)
        scored, failed = write_rows(rows, io.StringIO(), OutputFormat.csv)
        assert (scored, failed) == (n, 0), (scored, failed)

    bare()  # warm-up: first-call allocations and kernel selection
    rates: dict[str, list[float]] = {"bare": [], "loop": [], "detect": [], "detect draft": []}
    for repeat in range(args.repeats):
        for name, run in (("bare", bare), ("loop", loop), ("detect", detect),
                          ("detect draft", lambda: detect(JpegDecode.draft))):
            start = time.perf_counter()
            run()
            rates[name].append(n / (time.perf_counter() - start))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} img/s" for k, v in rates.items()))
    median = {k: statistics.median(v) for k, v in rates.items()}
    print("medians: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in median.items()))
    for name in ("detect", "detect draft"):
        paired = [d / b for d, b in zip(rates[name], rates["bare"], strict=True)]
        print(f"{name} / bare forward: ratio {median[name] / median['bare']:.2f} (goal >= 0.9; median of paired "
              f"ratios {statistics.median(paired):.2f})")
    print(f"detect / plain loop: ratio {median['detect'] / median['loop']:.2f} (goal >= 1.0)")
    if args.memory_files:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            registry = args.registry
            if args.memory_backbone == "tiny":
                registry = folder / "backbones.yaml"
                registry.write_text(json.dumps({"tiny": {"library": "open_clip", "architecture": "tiny",
                                                         "weights": "random", "seed": 0, "model_cfg": TINY_CLIP}}))
            spec = load_registry_backbone(args.memory_backbone, registry).spec
            dim = spec["dim"]
            save_detector(Detector(backbone=spec, head=LinearHead(np.zeros(dim), np.ones(dim), rng.normal(size=dim),
                                                                  [0.0]), threshold=0.5), folder / "detector")
            small, large = (peak_memory_mb(folder, files, registry, args)
                            for files in (args.memory_files, 4 * args.memory_files))
        print(f"peak RSS of detect ({args.memory_backbone}): {args.memory_files} small files {small:.0f} MB, "
              f"{4 * args.memory_files} files {large:.0f} MB: ratio {large / small:.2f} (goal <= 1.1)")


def small_files(folder: Path, n: int) -> Path:
    """n 64x48 JPEG files in `folder`/n (the first ones of a larger set are reused: same names, same bytes)."""
    from PIL import Image

    target = folder / "files"
    target.mkdir(exist_ok=True)
    for i in range(n):
        path = target / f"{i:06d}.jpg"
        if not path.exists():
            Image.new("RGB", (64, 48), (i % 256, (i // 256) % 256, 128)).save(path, quality=90)
    listed = folder / f"list-{n}"
    listed.mkdir()
    for i in range(n):
        (listed / f"{i:06d}.jpg").symlink_to(target / f"{i:06d}.jpg")
    return listed


def peak_memory_mb(folder: Path, n: int, registry: Path, args) -> float:
    """Peak RSS (MB) of one `detect` run on n small files: the largest of the command and its workers, read
    by a wrapper process whose only descendants they are."""
    command = [sys.executable, "-m", "stages.detect", str(small_files(folder, n)), "--detector",
               str(folder / "detector"), "--registry", str(registry), "--out", str(folder / f"scores-{n}.csv"),
               "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--device", "cpu",
               "--no-progress"]
    wrapper = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "sys.exit(done.stderr) if done.returncode else "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", wrapper, *command], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return int(done.stdout.split()[-1]) / 1024


if __name__ == "__main__":
    main()
