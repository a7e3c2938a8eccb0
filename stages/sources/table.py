"""Building the clusters table (stages.contracts.clusters) from a source's records: the first N captions of
each parent, every image decoded once to check it, a seeded split, cluster ids in source-id order."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from stages.contracts.clusters import natural_key
from stages.contracts.errors import InputError, Skips
from stages.contracts.labels import SPLITS
from stages.imaging.load import ImageInfo, inspect_image, special_kind
from stages.sources.readers import Record

SKIP_REASONS = ("missing_file", "unreadable_image", "duplicate_id", "too_few_captions", "empty_caption",
                "bad_caption", "unknown_image", "not_in_split_file")


def keep_captions(records: Sequence[Record], n: int, skips: Skips) -> tuple[list[Record], int]:
    """Keep the first `n` captions of each record (they arrive in annotation-id order).

    A record with fewer than `n`, or with an empty caption among its first `n`, is bad input. Returns the
    kept records and how many extra captions were dropped."""
    kept, dropped = [], 0
    for record in records:
        captions = record.captions[:n]
        if len(captions) < n:
            skips.handle(InputError(record.where, f"has {len(captions)} captions; {n} are needed "
                                    "(clusters.captions_per_parent)"), "too_few_captions")
            continue
        empty = [i for i, c in enumerate(captions) if not c.strip()]
        if empty:
            skips.handle(InputError(record.where, f"caption {empty[0]} is empty"), "empty_caption")
            continue
        dropped += len(record.captions) - n
        kept.append(Record(record.source_id, record.image_path, [c.strip() for c in captions], record.split,
                           record.where))
    return kept, dropped


def check_inside(records: Sequence[Record], images: Path) -> None:
    """Every record's image must lie inside `images`, the folder DVC tracks for the clusters stage: an image
    elsewhere could change without DVC seeing it, leaving the table and every embedding silently stale."""
    import os

    folder = os.path.abspath(images)
    for record in records:
        # lexical, as DVC sees the folder: `..` is resolved, symlinks inside the folder are its content
        path = os.path.abspath(record.image_path)
        if os.path.commonpath([folder, path]) != folder:
            raise InputError(record.where, f"image {record.image_path} is outside the image folder {images} "
                             "(clusters.images), so DVC would not see it change",
                             "move it into that folder, or set clusters.images to a folder holding every image")


def check_images(records: Sequence[Record], skips: Skips, *, workers: int = 8,
                 progress: bool = True) -> list[tuple[Record, ImageInfo]]:
    """Decode every image fully (catching truncation) in a thread pool and hash its bytes (ImageInfo.sha256);
    bad ones go through `skips`."""
    from tqdm.auto import tqdm

    def probe(record: Record) -> ImageInfo | tuple[InputError, str]:
        """The image's description, or the error and its skip reason."""
        kind = special_kind(record.image_path)
        if kind:  # never opened: a FIFO would block the read
            return InputError(record.where, f"image file {record.image_path} is {kind}, not a file"), \
                "unreadable_image"
        if not record.image_path.is_file():
            return InputError(record.where, f"image file {record.image_path} does not exist"), "missing_file"
        try:
            data = record.image_path.read_bytes()
            info = inspect_image(data, where=f"{record.where}: {record.image_path}")
        except InputError as error:
            return error, "unreadable_image"
        except OSError as error:
            return InputError(record.where, f"image file {record.image_path} cannot be read ({error})"), \
                "unreadable_image"
        return dataclasses.replace(info, sha256=hashlib.sha256(data).hexdigest())

    good = []
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(probe, records)
        for record, result in tqdm(zip(records, results, strict=True), total=len(records), desc="check images",
                                   unit="img", disable=not progress):
            if isinstance(result, tuple):
                skips.handle(*result)
            else:
                good.append((record, result))
    return good


def assign_splits(source_ids: Sequence[str], *, val_fraction: float, test_fraction: float,
                  seed: int) -> list[str]:
    """A seeded random split: the same ids and seed give the same split, whatever their input order."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
                         "and leave room for train")
    order = sorted(range(len(source_ids)), key=lambda i: natural_key(source_ids[i]))
    permuted = np.random.default_rng(seed).permutation(len(order))
    n_test = round(len(order) * test_fraction)
    n_val = round(len(order) * val_fraction)
    splits = [""] * len(source_ids)
    for rank, position in enumerate(permuted):
        index = order[position]
        splits[index] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


def build_table(checked: Sequence[tuple[Record, ImageInfo]], splits: Sequence[str]):
    """The clusters table as a pyarrow Table, sorted by source id, cluster ids 0..n-1."""
    import pyarrow as pa

    rows = sorted(zip(checked, splits, strict=True), key=lambda item: natural_key(item[0][0].source_id))
    for (record, _), split in rows:
        if split not in SPLITS:
            raise ValueError(f"{record.where}: split {split!r} is not one of {SPLITS}")
    return pa.table({
        "cluster_id": pa.array(range(len(rows)), pa.int64()),
        "split": pa.array([s for _, s in rows], pa.string()),
        "image_path": pa.array([portable_path(r.image_path) for (r, _), _ in rows], pa.string()),
        "source_id": pa.array([r.source_id for (r, _), _ in rows], pa.string()),
        "captions": pa.array([r.captions for (r, _), _ in rows], pa.list_(pa.string())),
        "mode": pa.array([i.mode for (_, i), _ in rows], pa.string()),
        "format": pa.array([i.format for (_, i), _ in rows], pa.string()),
        "width": pa.array([i.width for (_, i), _ in rows], pa.int32()),
        "height": pa.array([i.height for (_, i), _ in rows], pa.int32()),
        "exif_rotated": pa.array([i.exif_rotated for (_, i), _ in rows], pa.bool_()),
        "image_sha256": pa.array([i.sha256 for (_, i), _ in rows], pa.string()),
    })


def portable_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it, else as given."""
    if path.is_absolute():
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)
    return str(path)

