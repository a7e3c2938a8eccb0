"""The HDF5 embedding cache: one file per (backbone, image set), written once, read by every head and metric.

Layout of ``data/embeddings/<backbone>/<set>.h5`` (DESIGN.md, "Data contracts")::

    /embeddings     float32 (N, D)   one row per image (or caption, for the ``captions`` set)
    /id             str (N,)         parent_id / child_id / caption_id (stages.contracts.ids)
    /cluster_id     int64 (N,)
    /label          int8 (N,)        REAL=0 for parents, FAKE=1 for children, -1 for captions
    /caption_index  int16 (N,)       -1 for parents
    /split          str (N,)         train / val / test
    attributes: backbone, library, architecture, weights, preprocessing, dim, image_set, versions (JSON),
                random_weights (bool), and any other string the writer adds.

Readers check that rows are aligned with the ids they expect (`check_alignment`) instead of trusting order:
the study and the shipped detector check every row's id against its cluster id, label and caption index
(`row_ids`), so a cache whose columns are out of step is refused, naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.contracts.io import atomic_path

ROW_FIELDS = ("id", "cluster_id", "label", "caption_index", "split")
CAPTION_LABEL = -1  # rows of the captions set are neither real nor fake


@dataclass
class EmbeddingTable:
    """Embeddings and their row metadata, aligned row for row."""

    embeddings: np.ndarray  # (N, D) float32
    id: np.ndarray  # (N,) str
    cluster_id: np.ndarray  # (N,) int64
    label: np.ndarray  # (N,) int8
    caption_index: np.ndarray  # (N,) int16
    split: np.ndarray  # (N,) str
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        self.id = np.asarray(self.id, dtype=str)
        self.cluster_id = np.asarray(self.cluster_id, dtype=np.int64)
        self.label = np.asarray(self.label, dtype=np.int8)
        self.caption_index = np.asarray(self.caption_index, dtype=np.int16)
        self.split = np.asarray(self.split, dtype=str)
        n = len(self.id)
        if self.embeddings.ndim != 2 or len(self.embeddings) != n:
            raise ValueError(f"embeddings have shape {self.embeddings.shape}; expected ({n}, D)")
        for name in ROW_FIELDS[1:]:
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows; expected {n} (one per id)")
        if len(set(self.id.tolist())) != n:
            raise ValueError("ids are not unique")

    def __len__(self) -> int:
        return len(self.id)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def select(self, mask: np.ndarray) -> EmbeddingTable:
        """The rows where `mask` is true (or at the given indices), attributes kept."""
        return EmbeddingTable(self.embeddings[mask], self.id[mask], self.cluster_id[mask], self.label[mask],
                              self.caption_index[mask], self.split[mask], dict(self.attrs))

    def split_rows(self, split: str) -> EmbeddingTable:
        return self.select(self.split == split)



def write_embeddings(path: Path | str, table: EmbeddingTable) -> None:
    """Write a complete table atomically (temporary name, then rename)."""
    rows = {name: getattr(table, name) for name in ROW_FIELDS}
    write_embeddings_streamed(path, rows, [table.embeddings], dim=table.dim, attrs=table.attrs)


def write_embeddings_streamed(path: Path | str, rows: Mapping[str, np.ndarray], blocks: Iterable[np.ndarray], *,
                              dim: int, attrs: Mapping[str, Any]) -> None:
    """Write a cache whose embeddings arrive block by block (memory holds one block), atomically.

    `rows` holds the ROW_FIELDS arrays for all N rows; the blocks, in row order, must add up to (N, dim)."""
    import h5py

    table = EmbeddingTable(np.zeros((len(rows["id"]), 0), np.float32), **{k: rows[k] for k in ROW_FIELDS})
    n = len(table)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        chunks = (min(n, max(1, 2**20 // max(dim, 1))), dim) if n and dim else None
        embeddings = f.create_dataset("embeddings", shape=(n, dim), dtype=np.float32, chunks=chunks)
        start = 0
        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            if block.ndim != 2 or block.shape[1] != dim or start + len(block) > n:
                raise ValueError(f"{path}: block of shape {block.shape} does not fit rows {start}.. of ({n}, {dim})")
            embeddings[start:start + len(block)] = block
            start += len(block)
        if start != n:
            raise ValueError(f"{path}: {start} embedding rows written, {n} expected")
        string = h5py.string_dtype()
        f.create_dataset("id", data=table.id.astype(object), dtype=string)
        f.create_dataset("split", data=table.split.astype(object), dtype=string)
        f.create_dataset("cluster_id", data=table.cluster_id)
        f.create_dataset("label", data=table.label)
        f.create_dataset("caption_index", data=table.caption_index)
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value


def read_embeddings(path: Path | str) -> EmbeddingTable:
    """Read a whole table; raises `FileNotFoundError` naming the stage that makes it when it is missing."""
    import h5py

    from stages.contracts.files import regular_or_absent

    path = regular_or_absent(path, what="an embedding cache")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no embedding cache here; the embed stage writes it (dvc repro)")
    with h5py.File(path, "r") as f:
        missing = [name for name in ("embeddings", *ROW_FIELDS) if name not in f]
        if missing:
            raise ValueError(f"{path}: not an embedding cache, missing datasets {missing}")
        attrs = {key: _attr(value) for key, value in f.attrs.items()}
        return EmbeddingTable(
            embeddings=f["embeddings"][:],
            id=f["id"].asstr()[:],
            cluster_id=f["cluster_id"][:],
            label=f["label"][:],
            caption_index=f["caption_index"][:],
            split=f["split"].asstr()[:],
            attrs=attrs,
        )


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value.item() if isinstance(value, np.generic) else value


def row_ids(table: EmbeddingTable) -> list[str]:
    """The id each row must carry given its cluster id, label and caption index (stages.contracts.ids)."""
    from stages.contracts.ids import caption_id, child_id, parent_id
    from stages.contracts.labels import FAKE, REAL

    made = {REAL: lambda c, _: parent_id(c), FAKE: child_id, CAPTION_LABEL: caption_id}
    return [made[int(label)](int(cluster), int(caption)) if int(label) in made else f"<label {label}>"
            for cluster, label, caption in zip(table.cluster_id, table.label, table.caption_index, strict=True)]


def check_alignment(table: EmbeddingTable, expected_ids: Sequence[str], *, where: str) -> None:
    """Raise unless the table's rows are exactly `expected_ids`, in order (a stale or mixed-up cache)."""
    expected = np.asarray(expected_ids, dtype=str)
    if len(expected) != len(table) or not np.array_equal(expected, table.id):
        have, want = set(table.id.tolist()), set(expected.tolist())
        raise ValueError(
            f"{where}: embedding rows are out of step with their source: {len(table)} rows, "
            f"{len(expected)} expected; {len(want - have)} missing, {len(have - want)} unexpected "
            f"(rerun the embed stage: dvc repro)")


def same_backbone(tables: Mapping[str, EmbeddingTable]) -> None:
    """Raise if tables that are meant to be compared came from different backbones or weights."""
    keys = ("backbone", "weights", "dim")
    seen = {name: tuple(str(t.attrs.get(k)) for k in keys) for name, t in tables.items()}
    if len(set(seen.values())) > 1:
        raise ValueError(f"embedding caches come from different backbones: {seen}")
