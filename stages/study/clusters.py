"""The cluster view of the embedding caches that the study stages read: parents and one generator's children
stacked as ``(K, N+1, D)`` with the parent at position 0, after checking that the two caches agree.

Rows are matched by cluster id and caption index, never by file order, and any disagreement (a cluster with
no parent, a parent with too few children, a child in another split than its parent, caches from two
backbones) is an error naming both files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.contracts.embeddings import EmbeddingTable, check_alignment, read_embeddings, row_ids, same_backbone
from stages.contracts.errors import InputError
from stages.contracts.labels import FAKE, REAL

PARENT = 0  # position of the parent inside a cluster; children follow in caption order


@dataclass
class Clusters:
    """Embeddings of whole clusters: parent first, then the N children in caption order."""

    embeddings: np.ndarray  # (K, N+1, D) float32
    cluster_id: np.ndarray  # (K,) int64, ascending
    split: np.ndarray  # (K,) str
    attrs: dict

    @property
    def size(self) -> int:
        """N+1: the elements of one cluster."""
        return int(self.embeddings.shape[1])

    def labels(self) -> np.ndarray:
        """(K, N+1) labels: REAL at the parent, FAKE at every child."""
        labels = np.full(self.embeddings.shape[:2], FAKE, dtype=np.int8)
        labels[:, PARENT] = REAL
        return labels

    def select(self, split: str) -> Clusters:
        mask = self.split == split
        return Clusters(self.embeddings[mask], self.cluster_id[mask], self.split[mask], self.attrs)


def stack_clusters(parents: EmbeddingTable, children: EmbeddingTable, *, where: str) -> Clusters:
    """Stack the two tables by cluster; raise `InputError` (naming `where`) when they are out of step."""
    same_backbone({"parents": parents, "children": children})
    for table in (parents, children):
        check_alignment(table, row_ids(table), where=where)
    if len(parents) == 0:
        raise InputError(where, "the parents cache has no rows")
    if (parents.label != REAL).any() or (children.label != FAKE).any():
        raise InputError(where, "parents must all carry label REAL and children label FAKE (caches swapped?)")
    order = np.argsort(parents.cluster_id, kind="stable")
    parent_clusters = parents.cluster_id[order]
    if (np.diff(parent_clusters) == 0).any():
        raise InputError(where, "a cluster has more than one parent row")
    if len(children) == 0 or len(children) % len(parents):
        raise InputError(where, f"{len(children)} children for {len(parents)} parents; expected N per parent "
                                "(children of another clusters table? rerun the embed stage: dvc repro)")
    n = len(children) // len(parents)
    child_order = np.lexsort((children.caption_index, children.cluster_id))
    child_clusters = children.cluster_id[child_order].reshape(-1, n)  # (K, N)
    captions = children.caption_index[child_order].reshape(-1, n)  # (K, N)
    mismatch = (child_clusters != parent_clusters[:, None]).any(axis=1) | (captions != np.arange(n)).any(axis=1)
    if mismatch.any():
        missing = np.setdiff1d(parent_clusters, children.cluster_id)
        raise InputError(where, f"children and parents are out of step in {int(mismatch.sum())} clusters "
                                f"(e.g. cluster {int(parent_clusters[mismatch.argmax()])}); {len(missing)} "
                                f"parents have no children; expected captions 0..{n - 1} for every parent "
                                "(rerun the embed stage: dvc repro)")
    split = parents.split[order]
    child_split = children.split[child_order].reshape(-1, n)
    if (child_split != split[:, None]).any():
        bad = int(parent_clusters[(child_split != split[:, None]).any(axis=1).argmax()])
        raise InputError(where, f"cluster {bad}: children and parent are in different splits")
    if parents.dim != children.dim:
        raise InputError(where, f"parents have dimension {parents.dim}, children {children.dim}")
    stacked = np.empty((len(parents), n + 1, parents.dim), dtype=np.float32)
    stacked[:, PARENT] = parents.embeddings[order]
    stacked[:, PARENT + 1:] = children.embeddings[child_order].reshape(len(parents), n, -1)
    return Clusters(stacked, parent_clusters, split, dict(parents.attrs))


def load_clusters(parents_path: Path | str, children_path: Path | str) -> Clusters:
    """Read the parents cache and one generator's children cache and stack them (see `stack_clusters`)."""
    parents, children = read_embeddings(parents_path), read_embeddings(children_path)
    try:
        return stack_clusters(parents, children, where=f"{parents_path} + {children_path}")
    except ValueError as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{parents_path} + {children_path}", str(error)) from error


def child_cache(embeddings: Path | str, generator: str) -> Path:
    """Where the embed stage writes the children of `generator` for one backbone's folder."""
    return Path(embeddings) / f"{generator}.h5"
