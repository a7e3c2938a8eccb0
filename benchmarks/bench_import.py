"""Embedding imported children versus generated children of the same bytes (goal: imported / generated >= 0.9).

A generated children folder of N children is written the way generate writes one (stages.generation.shards:
plan, shards of encoded JPEGs, manifest), from smooth random images of one size, so no diffusion model runs.
Its images are then exported as files with a CSV manifest and imported by import_children (manifest layout,
bytes copied): the two folders hold the same image bytes in the same shard sizes. Each is embedded by the embed
protocol (stages.embedding.runner.embed_rows, as the embed stage calls it), alternately after an untimed warm-up
on a few children, and the median throughput
of each and the median of the per-repeat ratios are printed beside the goal.

    python benchmarks/bench_import.py [--children 1000] [--size 256] [--backbone efficientnet_lite0]
        [--batch-size 32] [--threads 2] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GOAL = 0.9
CAPTIONS = 5


def picture(seed: int, size: int):
    import numpy as np
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BILINEAR)


def clusters_table(folder: Path, n_parents: int, size: int) -> Path:
    import pandas as pd

    rows = []
    for cluster in range(n_parents):
        path = folder / "parents" / f"{cluster}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture(cluster, size).save(path, quality=90)
        rows.append({"cluster_id": cluster, "split": ("train", "val", "test")[cluster % 3], "image_path": str(path),
                     "source_id": str(cluster), "captions": [f"caption {k}" for k in range(CAPTIONS)],
                     "mode": "RGB", "format": "JPEG", "width": size, "height": size, "exif_rotated": False,
                     "image_sha256": ""})
    out = folder / "clusters.parquet"
    pd.DataFrame(rows).to_parquet(out)
    return out


def generated_folder(folder: Path, clusters: Path, n: int, size: int, shard_size: int) -> Path:
    """A children folder as generate writes it (its shards, fingerprints and manifest), without a pipeline."""
    from stages.contracts.clusters import read_clusters
    from stages.generation import shards as gen

    children = gen.plan_children(read_clusters(clusters), base_seed=0)[:n]
    shards = gen.plan_shards(children, shard_size)
    settings = {"alias": "bench", "encoding": "jpeg", "jpeg_quality": 95, "shard_size": shard_size}
    fingerprints = {s.name: gen.shard_fingerprint(s, settings) for s in shards}
    gen.prepare_folder(folder, shards, fingerprints, stage="generate")
    for shard in shards:
        images = [gen.encode(picture(10_000 + c.seed % 100_000, size), gen.Encoding.jpeg, 95) for c in shard.children]
        gen.write_shard(folder / "shards" / shard.name, shard, images, [None] * len(images),
                        fingerprint=fingerprints[shard.name], extension="jpeg", stage="generate")
    gen.write_manifest(folder, shards, alias="generated", settings=settings, stage="generate")
    return folder


def imported_folder(work: Path, generated: Path, clusters: Path, shard_size: int) -> Path:
    """The generated folder's images as files + a CSV manifest, imported by import_children (bytes copied)."""
    import pandas as pd

    from stages.contracts.children import iter_image_bytes, read_manifest
    from stages.contracts.errors import OnBad
    from stages.import_children import run
    from stages.importing.children import Reencode
    from stages.importing.layouts import Layout

    manifest = read_manifest(generated)
    files = work / "published"
    files.mkdir()
    for child, data in iter_image_bytes(generated):
        (files / f"{child}.jpg").write_bytes(data)
    pd.DataFrame({"path": [f"{c}.jpg" for c in manifest["child_id"]], "parent": manifest["cluster_id"].astype(str),
                  "caption_index": manifest["caption_index"]}).to_csv(files / "manifest.csv", index=False)
    out = work / "children" / "imported"
    run("imported", Layout.manifest, files / "manifest.csv", clusters, out, work / "import.json", generator="",
        reencode=Reencode.none, on_bad=OnBad.error, shard_size=shard_size, progress=False)
    return out


def embed_seconds(children: Path, clusters: Path, backbone, config, state, out: Path, *,
                  limit: int | None = None) -> float:
    from stages.contracts.clusters import read_clusters
    from stages.embedding import runner as embedding

    start = time.perf_counter()
    rows = embedding.child_rows(children, read_clusters(clusters))[:limit]
    embedding.embed_rows(rows, backbone, out, kind="images", attrs={**backbone.attrs(), "image_set": children.name},
                         config=config, state=state, children=children)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256, help="side of every child image, pixels")
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from accelerate import PartialState

    from stages.embedding import runner as embedding
    from stages.embedding.backbones import get_spec, load_backbone

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clusters = clusters_table(work, -(-args.children // CAPTIONS), args.size)
        generated = generated_folder(work / "children" / "generated", clusters, args.children, args.size,
                                     args.shard_size)
        imported = imported_folder(work, generated, clusters, args.shard_size)
        backbone = load_backbone(get_spec(args.backbone, REPO / "stages" / "embedding" / "backbones.yaml"))
        config = embedding.RunConfig(batch_size=args.batch_size, chunk_size=4 * args.batch_size, workers=args.workers,
                                     precision=embedding.Precision.auto, skip_bad=False, progress=False)
        state = PartialState(cpu=True)
        # first-call costs (allocator, kernels, worker start-up), untimed
        embed_seconds(generated, clusters, backbone, config, state, work / "warm-up.h5", limit=2 * args.batch_size)
        rates: dict[str, list[float]] = {"generated": [], "imported": []}
        for repeat in range(args.repeats):
            # alternate which goes first, so a warming cache or a busy neighbour favours neither
            order = (("generated", generated), ("imported", imported))
            for name, folder in order if repeat % 2 == 0 else order[::-1]:
                seconds = embed_seconds(folder, clusters, backbone, config, state, work / f"{name}-{repeat}.h5")
                rates[name].append(args.children / seconds)
        ratios = [i / g for i, g in zip(rates["imported"], rates["generated"], strict=True)]
        print(f"{args.children} children of {args.size}x{args.size} px (the same JPEG bytes in both folders), "
              f"{args.backbone}, batch {args.batch_size}, {args.threads} torch threads, {args.workers} workers, "
              f"median of {args.repeats}")
        for name in ("generated", "imported"):
            print(f"  {name:10} {statistics.median(rates[name]):8.1f} children/s")
        ratio = statistics.median(ratios)
        print(f"  ratio imported / generated {ratio:.2f} (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})")


if __name__ == "__main__":
    main()
