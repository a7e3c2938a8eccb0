"""The cluster view of the embedding caches that the study stages read: parents and one generator's children
stacked as ``(K, M, D)`` with the parent at position 0 and the cluster's children after it, after checking
that the two caches agree.

Clusters may be partial (an imported set: stages.contracts.children): a parent has 0..many children, and a
child's caption index may be unknown (negative: the k-th unknown child of a cluster has -(k+1)). The view is
padded: M is 1 + the most children any cluster has, ``children[k]`` says how many cluster k holds (they fill
positions 1..children[k]; the rest is zeros, never read: `present` masks it). Generated sets fill every
cluster with captions 0..N-1, so M = N+1 and nothing is padded (the arrays are those of a dense stack).
Memory is K x M x D: a set with a few very large clusters pads every cluster to their size.

Rows are matched by cluster id and caption index, never by file order, and any real disagreement (a child
whose cluster has no parent row, two parent rows for a cluster, a child in another split than its parent,
caches from two backbones, rows whose ids do not follow from their cluster and caption index) is an error
naming both files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.contracts.embeddings import EmbeddingTable, check_alignment, read_embeddings, row_ids, same_backbone
from stages.contracts.errors import InputError
from stages.contracts.labels import FAKE, REAL

PARENT = 0  # position of the parent inside a cluster; children follow in caption order, unknown indices last
PADDING = np.iinfo(np.int16).min  # caption index of a padded position (no child there)


@dataclass
class Clusters:
    """Embeddings of clusters: parent first, then its children (known caption indices in order, then the
    unknown ones), padded to the largest cluster."""

    embeddings: np.ndarray  # (K, M, D) float32, zeros where no child is
    cluster_id: np.ndarray  # (K,) int64, ascending
    split: np.ndarray  # (K,) str
    attrs: dict
    children: np.ndarray | None = None  # (K,) int64 children per cluster; None: every cluster holds M-1
    caption_index: np.ndarray | None = None  # (K, M-1) int16 of each child position, PADDING where none

    def __post_init__(self) -> None:
        k, m = self.embeddings.shape[:2]
        if self.children is None:
            self.children = np.full(k, m - 1, dtype=np.int64)
        if self.caption_index is None:
            self.caption_index = np.broadcast_to(np.arange(m - 1, dtype=np.int16), (k, m - 1)).copy()

    @property
    def size(self) -> int:
        """M: the elements of the largest cluster (N+1 for a generated set)."""
        return int(self.embeddings.shape[1])

    @property
    def full(self) -> bool:
        """Whether every cluster holds M-1 children (no padding: the dense stack of a generated set)."""
        return bool((self.children == self.size - 1).all())

    def present(self) -> np.ndarray:
        """(K, M) bool: True where an element is (the parent, and the cluster's children)."""
        return np.arange(self.size)[None, :] <= self.children[:, None]

    def labels(self) -> np.ndarray:
        """(K, M) labels: REAL at the parent, FAKE at every child position (padding included: mask it)."""
        labels = np.full(self.embeddings.shape[:2], FAKE, dtype=np.int8)
        labels[:, PARENT] = REAL
        return labels

    def elements(self, embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every present element, cluster by cluster: (E, D) features (of `embeddings`, laid out like this
        view's, when given), (E,) labels and (E,) cluster ids."""
        x = self.embeddings if embeddings is None else embeddings
        k, m, d = x.shape
        cluster = np.repeat(self.cluster_id, m)
        if self.full:  # no padding: the plain reshape, as the dense stack always did
            return x.reshape(k * m, d), self.labels().ravel(), cluster
        present = self.present()
        return x[present], self.labels()[present], cluster[present.ravel()]

    def with_embeddings(self, embeddings: np.ndarray) -> Clusters:
        """The same clusters in another space (e.g. a projection): (K, M, D') laid out like these."""
        return Clusters(embeddings, self.cluster_id, self.split, self.attrs, self.children, self.caption_index)

    def take(self, rows: np.ndarray) -> Clusters:
        """The clusters at `rows` (a boolean mask or indices over K)."""
        return Clusters(self.embeddings[rows], self.cluster_id[rows], self.split[rows], self.attrs,
                        self.children[rows], self.caption_index[rows])

    def select(self, split: str) -> Clusters:
        return self.take(self.split == split)


def _child_order(children: EmbeddingTable) -> np.ndarray:
    """Children sorted by cluster, then known caption indices ascending, then unknown ones (-1, -2, ...)."""
    caption = children.caption_index.astype(np.int64)
    key = np.where(caption >= 0, caption, (1 << 20) - caption)  # unknown -(k+1) after every known index, by k
    return np.lexsort((key, children.cluster_id))


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
    if len(children) == 0:
        raise InputError(where, "the children cache has no rows (rerun the embed stage: dvc repro)")
    if parents.dim != children.dim:
        raise InputError(where, f"parents have dimension {parents.dim}, children {children.dim}")
    child_order = _child_order(children)
    child_clusters = children.cluster_id[child_order]
    position = np.searchsorted(parent_clusters, child_clusters)  # (C,) the parent row of each child
    orphan = (position == len(parent_clusters)) | (
        parent_clusters[np.minimum(position, len(parent_clusters) - 1)] != child_clusters)
    if orphan.any():
        lost = np.unique(child_clusters[orphan])
        raise InputError(where, f"children and parents are out of step: {int(orphan.sum())} children of "
                                f"{len(lost)} clusters have no parent row (e.g. cluster {int(lost[0])}); "
                                "children of another clusters table? (rerun the embed stage: dvc repro)")
    split = parents.split[order]
    crossed = children.split[child_order] != split[position]
    if crossed.any():
        raise InputError(where, f"cluster {int(child_clusters[crossed.argmax()])}: children and parent are in "
                                "different splits")
    counts = np.bincount(position, minlength=len(parent_clusters)).astype(np.int64)  # (K,)
    # each child's place in its cluster: its rank among the cluster's children (they are sorted by cluster)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(child_clusters)) - first[position]
    m = int(counts.max()) + 1
    stacked = np.zeros((len(parents), m, parents.dim), dtype=np.float32)
    stacked[:, PARENT] = parents.embeddings[order]
    stacked[position, PARENT + 1 + slot] = children.embeddings[child_order]
    caption = np.full((len(parents), m - 1), PADDING, dtype=np.int16)
    caption[position, slot] = children.caption_index[child_order]
    return Clusters(stacked, parent_clusters, split, dict(parents.attrs), counts, caption)


def load_clusters(parents_path: Path | str, children_path: Path | str) -> Clusters:
    """Read the parents cache and one generator's children cache and stack them (see `stack_clusters`)."""
    try:  # a malformed cache (e.g. duplicate ids) is bad input naming the files, not a traceback
        parents, children = read_embeddings(parents_path), read_embeddings(children_path)
        return stack_clusters(parents, children, where=f"{parents_path} + {children_path}")
    except ValueError as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{parents_path} + {children_path}", str(error)) from error


def child_cache(embeddings: Path | str, generator: str) -> Path:
    """Where the embed stage writes the children of `generator` for one backbone's folder."""
    return Path(embeddings) / f"{generator}.h5"
