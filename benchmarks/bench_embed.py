"""Embedding throughput and memory on ../shared/data/coco-mini photos.

For each backbone, side by side in one run, same model, batch size and torch threads:
  bare        the model's forward on ready tensors (preprocessed beforehand), images/s
  end-to-end  the embed protocol: read + decode + preprocess in DataLoader workers, forward, part files, HDF5
  draft       the same with embed.jpeg_decode=draft (a JPEG at least twice the backbone's resize decoded reduced)
  decode      read + decode + preprocess alone, through the same DataLoader
and the ratios end-to-end / bare and draft / bare (goal >= 0.9). Then the peak resident memory of the stage
(a subprocess, workers included) at N and 4N images (goal: 4N within 1.1x of N). Every figure is printed beside
its goal. The cosine between draft and full embeddings: benchmarks/draft_cosine.py.

    python benchmarks/bench_embed.py [--images 64] [--batch-size 32] [--threads 2] [--workers 2] [--repeats 3]
        [--coco ../shared/data/coco-mini]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COCO = REPO.parent / "shared" / "data" / "coco-mini"
sys.path.insert(0, str(REPO))


def clusters_table(folder: Path, n: int, coco: Path) -> Path:
    """A clusters table of n coco-mini photos (cycled when n exceeds them, under distinct ids)."""
    import pandas as pd

    photos = sorted(p for p in coco.rglob("*.jpg"))
    rows = [{"cluster_id": i, "split": "train", "image_path": str(photos[i % len(photos)]), "source_id": str(i),
             "captions": ["a photo"] * 5, "mode": "RGB", "format": "JPEG", "width": 0, "height": 0,
             "exif_rotated": False, "image_sha256": ""} for i in range(n)]
    path = folder / f"clusters-{n}.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def bench_backbone(alias: str, clusters: Path, args, work: Path) -> dict[str, float]:
    import torch
    from accelerate import PartialState
    from torch.utils.data import DataLoader

    from stages.contracts.clusters import read_clusters
    from stages.contracts.runtime import checked_batches, data_loader
    from stages.embedding import runner as embedding
    from stages.embedding.backbones import get_spec, load_backbone

    torch.set_num_threads(args.threads)
    backbone = load_backbone(get_spec(alias, REPO / "stages" / "embedding" / "backbones.yaml"))
    rows = embedding.parent_rows(read_clusters(clusters))
    config = embedding.RunConfig(batch_size=args.batch_size, chunk_size=4 * args.batch_size, workers=args.workers,
                                 precision=embedding.Precision.auto, skip_bad=False, progress=False)
    batches = embedding._batches(len(rows), config.chunk_size, config.batch_size, range(len(rows)))
    source = embedding.BatchSource(rows, batches, transform=backbone.transform)
    tensors = [b["inputs"] for b in DataLoader(source, batch_size=None, num_workers=0)]
    model = backbone.image_encoder
    if backbone.spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
        tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    state = PartialState(cpu=True)
    with torch.inference_mode():
        model(tensors[0])  # warm-up
    draft_config = embedding.RunConfig(**{**config.__dict__, "jpeg_draft": True})
    bare, e2e, draft, decode = [], [], [], []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in tensors:
                model(batch)
        bare.append(len(rows) / (time.perf_counter() - start))

        start = time.perf_counter()
        embedding.embed_rows(rows, backbone, work / f"{alias}-{repeat}.h5", kind="images",
                             attrs={**backbone.attrs(), "image_set": "parents"}, config=config, state=state)
        e2e.append(len(rows) / (time.perf_counter() - start))

        start = time.perf_counter()
        embedding.embed_rows(rows, backbone, work / f"{alias}-{repeat}-draft.h5", kind="images",
                             attrs={**backbone.attrs(), "image_set": "parents"}, config=draft_config, state=state)
        draft.append(len(rows) / (time.perf_counter() - start))

        start = time.perf_counter()
        for _ in checked_batches(data_loader(source, batch_size=None, num_workers=args.workers)):
            pass
        decode.append(len(rows) / (time.perf_counter() - start))
    return {"bare": statistics.median(bare), "e2e": statistics.median(e2e), "draft": statistics.median(draft),
            "decode": statistics.median(decode), "ratio": statistics.median(e2e) / statistics.median(bare),
            "draft_ratio": statistics.median(draft) / statistics.median(bare)}


def peak_memory_mb(clusters: Path, work: Path, args) -> float:
    """Peak RSS (MB) of one embed run: the largest of the stage process and its workers, measured by a
    wrapper process whose only descendants they are."""
    stage = [sys.executable, "-m", "stages.embed", "--backbone", "efficientnet_lite0",
             "--registry", str(REPO / "stages" / "embedding" / "backbones.yaml"), "--clusters", str(clusters),
             "--children", "", "--out", str(work / f"{clusters.stem}.h5"), "--captions-out", "",
             "--metrics", str(work / f"{clusters.stem}.json"), "--batch-size", str(args.batch_size),
             "--chunk-size", str(2 * args.batch_size), "--workers", str(args.workers), "--threads", str(args.threads),
             "--precision", "auto", "--device", "cpu", "--on-bad", "error", "--jpeg-decode", "full"]
    wrapper = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "sys.exit(done.stderr) if done.returncode else "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", wrapper, *stage], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 128 = four batches: the first batch's decoding and the workers' start are not overlapped with any forward,
    # a fixed cost a COCO-scale run amortises; with 64 images (two batches) it was a third of the gap to bare
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "openclip_vitb32_random"])
    parser.add_argument("--memory-images", type=int, default=60, help="N of the memory test (and 4N); 0: skip")
    parser.add_argument("--coco", type=Path, default=COCO, help="the coco-mini folder")
    args = parser.parse_args()
    if not args.coco.is_dir():
        sys.exit(f"{args.coco} is absent: this benchmark needs ../shared/data/coco-mini")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clusters = clusters_table(work, args.images, args.coco)
        print(f"{args.images} coco-mini photos, batch {args.batch_size}, {args.threads} torch threads, "
              f"{args.workers} workers, median of {args.repeats}")
        print(f"{'backbone':24} {'bare img/s':>11} {'end-to-end':>11} {'draft':>8} {'decode img/s':>13}  ratios")
        for alias in args.backbones:
            r = bench_backbone(alias, clusters, args, work)
            print(f"{alias:24} {r['bare']:11.1f} {r['e2e']:11.1f} {r['draft']:8.1f} {r['decode']:13.1f}  "
                  f"end-to-end/bare {r['ratio']:.2f} (goal >= 0.9), draft/bare {r['draft_ratio']:.2f} (goal >= 0.9)")
        n = args.memory_images
        if not n:
            return
        small = peak_memory_mb(clusters_table(work, n, args.coco), work, args)
        large = peak_memory_mb(clusters_table(work, 4 * n, args.coco), work, args)
        print(f"peak RSS of the stage (efficientnet_lite0): {n} images {small:.0f} MB, {4 * n} images {large:.0f} MB: "
              f"ratio {large / small:.2f} (goal <= 1.1)")


if __name__ == "__main__":
    main()
