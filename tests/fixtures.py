"""Small on-disk inputs in the project's contracts, for tests of stages that read them: a clusters table
of random photos, and a children folder in the layout of stages.contracts.children (written here with plain
pyarrow, independently of the generate stage, so readers are tested against the contract itself)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pandas as pd
from PIL import Image

from stages.contracts.ids import child_id
from tests.images import photo

# the bootstrap options of every stage that reports intervals (params.yaml `bootstrap`), few resamples for speed
BOOTSTRAP = ["--bootstrap-resamples", "50", "--bootstrap-seed", "0"]


def write_clusters(folder: Path, n_parents: int = 9, n_captions: int = 5, size: tuple[int, int] = (48, 32)) -> Path:
    """`n_parents` random photos split train/val/test in turn, with `n_captions` captions each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = folder / "parents"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for cluster in range(n_parents):
        path = images / f"{cluster}.jpg"
        photo(cluster, size).save(path, quality=90)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append({"cluster_id": cluster, "split": ("train", "val", "test")[cluster % 3], "image_path": str(path),
                     "source_id": str(cluster), "captions": [f"photo {cluster} caption {k}" for k in range(n_captions)],
                     "mode": "RGB", "format": "JPEG", "width": size[0], "height": size[1], "exif_rotated": False,
                     "image_sha256": digest})
    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    table = table.cast(pa.schema([("cluster_id", pa.int64()), ("split", pa.string()), ("image_path", pa.string()),
                                  ("source_id", pa.string()), ("captions", pa.list_(pa.string())),
                                  ("mode", pa.string()), ("format", pa.string()), ("width", pa.int32()),
                                  ("height", pa.int32()), ("exif_rotated", pa.bool_()),
                                  ("image_sha256", pa.string())]))
    out = folder / "clusters.parquet"
    pq.write_table(table.replace_schema_metadata({"captions_per_parent": str(n_captions), "source": "test"}), out)
    return out


def write_children(folder: Path, clusters: pd.DataFrame, *, generator: str = "fake", shard_size: int = 7,
                   size: tuple[int, int] = (32, 32), fmt: str = "JPEG") -> Path:
    """One child per (parent, caption), encoded as `fmt`, in shards of `shard_size` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "shards").mkdir(parents=True, exist_ok=True)
    manifest, shard_rows = [], []
    for _, parent in clusters.sort_values("cluster_id").iterrows():
        for index, caption in enumerate(parent["captions"]):
            cid = child_id(int(parent["cluster_id"]), index)
            buffer = io.BytesIO()
            photo(1000 + 10 * int(parent["cluster_id"]) + index, size).save(buffer, format=fmt)
            shard = f"shard-{len(manifest) // shard_size:05d}.parquet"
            manifest.append({"child_id": cid, "cluster_id": int(parent["cluster_id"]), "caption_index": index,
                             "caption": caption, "seed": 10 * int(parent["cluster_id"]) + index,
                             "split": parent["split"], "shard": shard, "row": len(manifest) % shard_size,
                             "nsfw": False, "generator": generator})
            shard_rows.append((shard, cid, buffer.getvalue()))
    for shard in sorted({s for s, _, _ in shard_rows}):
        rows = [(c, b) for s, c, b in shard_rows if s == shard]
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        pq.write_table(pa.table({
            "child_id": pa.array([c for c, _ in rows], pa.string()),
            "image": pa.array([{"bytes": b, "path": f"{c}.{fmt.lower()}"} for c, b in rows], image_type),
        }), folder / "shards" / shard)
    frame = pd.DataFrame(manifest).astype({"cluster_id": "int64", "caption_index": "int16", "seed": "int64",
                                           "row": "int32"})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    settings = json.dumps({"alias": generator, "note": "test fixture"})
    pq.write_table(table.replace_schema_metadata({"settings": settings}), folder / "manifest.parquet")
    return folder


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))
