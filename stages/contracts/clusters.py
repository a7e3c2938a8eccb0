"""The clusters table (``data/clusters.parquet``): one row per parent, the contract every later stage reads.

Columns: cluster_id (int64, 0..n-1 in source-id order), split (train/val/test), image_path (str; relative
to the working directory, the repository root under DVC, when the image lies below it, so the table and every
hash downstream are the same in any clone: the demo's photos lie in the repository's .venv),
source_id (str), captions (list of exactly N str), mode / format (str, as stored on disk), width / height
(int, after EXIF rotation), exif_rotated (bool), image_sha256 (str, hex digest of the image file's bytes: a
replaced image changes the table, and so every stage downstream). File metadata: captions_per_parent, source."""

from __future__ import annotations

from pathlib import Path

COLUMNS = ("cluster_id", "split", "image_path", "source_id", "captions", "mode", "format", "width", "height",
           "exif_rotated", "image_sha256")


def natural_key(source_id: str) -> tuple[int, int | str]:
    """Numeric ids sort as numbers (COCO), others as strings, numbers first."""
    return (0, int(source_id)) if source_id.isdigit() else (1, source_id)


def read_clusters(path: Path | str):
    """Read ``clusters.parquet`` as a pandas DataFrame, checking the columns and the N-captions rule."""
    from stages.contracts.errors import InputError
    from stages.contracts.io import read_parquet_checked

    frame = read_parquet_checked(path, COLUMNS, what="clusters table", made_by="clusters")
    lengths = frame["captions"].map(len)
    if lengths.nunique() > 1:
        raise InputError(str(path), f"parents have different numbers of captions {sorted(lengths.unique())}")
    frame["captions"] = frame["captions"].map(list)
    return frame
