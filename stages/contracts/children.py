"""The children of one generator (``data/children/<gen>/``), as the generate stage (or import_children, for a
published set) writes them and every image-reading stage reads them.

    manifest.parquet        one row per child, sorted by (cluster_id, caption_index):
        child_id str (stages.contracts.ids.child_id), cluster_id int64, caption_index int16, caption str,
        seed int64, split str, shard str (file name in shards/), row int32 (row within that shard),
        nsfw bool (the safety checker's verdict; null: not checked, as when it is off or the pipeline has
        none), generator str (the alias), truncated bool (a text encoder cut the caption, as the pipeline
        does when it has more tokens than the encoder takes)
        file metadata b"settings": the generator's settings as JSON (an import's: its layout and options)
        An imported set (import_children) also has `original` str (the path below the import's root, or
        "<file>#<row>", the child came from); its seed is -1, nsfw null and truncated false.
    caption_index < 0 means "unknown": the set does not say which caption made the child. The k-th (0-based,
    in order of `original`) such child of a cluster has caption_index -(k+1) and the id child_id(cluster,
    -(k+1)) == ``c{cluster:012d}_u{k}``. The caption column holds the set's own caption when it has one, else
    the cluster's caption at a known index, else "". A parent may have any number of children (0 included)
    when the set is imported; generate makes exactly N.
    shards/<shard>.parquet  child_id str, image struct<bytes: binary, path: str>   (Hugging Face
                            `datasets` reads this struct as an Image feature)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

MANIFEST = "manifest.parquet"
SHARDS = "shards"
MANIFEST_COLUMNS = ("child_id", "cluster_id", "caption_index", "caption", "seed", "split", "shard", "row",
                    "nsfw", "generator")
# Written by the generate stage after the columns above; readers do not require it (older folders lack it).
RECORDED_COLUMNS = ("truncated",)


def read_manifest(folder: Path | str):
    """The manifest as a pandas DataFrame; raises naming the folder if it is missing or malformed."""
    from stages.contracts.io import read_parquet_checked

    return read_parquet_checked(Path(folder) / MANIFEST, MANIFEST_COLUMNS, what="children manifest",
                                made_by="generate")


def read_settings(folder: Path | str) -> dict:
    """The generator settings stored in the manifest's metadata."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(Path(folder) / MANIFEST).metadata or {}
    return json.loads(metadata.get(b"settings", b"{}"))


def iter_image_bytes(folder: Path | str, child_ids: Sequence[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield (child_id, encoded image bytes) shard by shard, so memory holds one shard at a time.

    With `child_ids`, only those children are yielded, in manifest order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stages.contracts.errors import InputError

    folder = Path(folder)
    manifest = read_manifest(folder)
    if child_ids is not None:
        wanted = set(child_ids)
        unknown = wanted - set(manifest["child_id"])
        if unknown:
            raise KeyError(f"{folder}: {len(unknown)} child ids not in the manifest, e.g. {sorted(unknown)[:3]}")
        manifest = manifest[manifest["child_id"].isin(wanted)]
    for shard, rows in manifest.groupby("shard", sort=True):
        try:
            table = pq.read_table(folder / SHARDS / shard, columns=["child_id", "image"])
            ids = table.column("child_id").to_pylist()
            images = table.column("image").combine_chunks().field("bytes").to_pylist()
        except (pa.ArrowException, OSError, KeyError) as error:  # not Parquet, truncated, or other columns
            raise InputError(str(folder / SHARDS / shard), f"the shard cannot be read "
                             f"({' '.join(str(error).split())[:200]})", "rerun generate") from error
        for row, child in zip(rows["row"], rows["child_id"], strict=True):
            if row >= len(ids) or ids[row] != child:
                held = repr(ids[row]) if row < len(ids) else "nothing"
                raise InputError(str(folder / SHARDS / shard), f"row {row} holds {held}, the manifest says "
                                 f"{child!r}; the children folder is inconsistent", "rerun generate")
            yield child, images[row]
