"""Synthetic embedding caches laid out like data/embeddings/, shared by the study stages' tests, whole or with
partial clusters (an imported set's missing children and unknown caption indices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.contracts.embeddings import EmbeddingTable, read_embeddings, write_embeddings
from stages.contracts.ids import child_id
from tests.synthetic import SyntheticSpec, write_synthetic_caches


def write_study_caches(root: Path, *, generators: tuple[str, ...] = ("g1", "g2"), n_clusters: int = 60,
                       dim: int = 16, style: float = 1.0, text_tower: bool = True, backbone: str = "bb",
                       style_seeds: dict[str, int] | None = None) -> Path:
    """``root/<backbone>/{parents,<generator>...,captions}.h5``; returns the backbone folder."""
    spec = SyntheticSpec(n_clusters=n_clusters, dim=dim, style=style)
    return write_synthetic_caches(root, backbone, spec, generators, text_tower=text_tower, style_seeds=style_seeds)


def partial_children(children: EmbeddingTable, plan: dict[int, str]) -> EmbeddingTable:
    """The children of a partial set, as an importer writes them (stages.contracts.children): cluster c keeps
    what `plan[c]` lists, comma-separated, in order: ``3`` the child of caption 3 as it is, ``u3`` the child
    of caption 3 with its caption index unknown (the k-th such child of the cluster: caption index -(k+1), id
    ``child_id(c, -(k+1))``); ``""`` no child. Clusters not in `plan` keep every child. Listing a caption
    twice as ``u`` makes a cluster of more than N children."""
    rows: list[int] = []
    captions: list[int] = []
    for cluster in np.unique(children.cluster_id):
        own = np.flatnonzero(children.cluster_id == cluster)
        if int(cluster) not in plan:
            rows += own.tolist()
            captions += children.caption_index[own].tolist()
            continue
        unknown = 0
        for item in filter(None, plan[int(cluster)].split(",")):
            source = int(item.lstrip("u"))
            rows.append(int(own[children.caption_index[own] == source][0]))
            if item.startswith("u"):
                unknown += 1
                captions.append(-unknown)
            else:
                captions.append(source)
    rows_array = np.asarray(rows, dtype=np.int64)
    cluster_ids = children.cluster_id[rows_array]
    return EmbeddingTable(children.embeddings[rows_array],
                          [child_id(int(c), int(i)) for c, i in zip(cluster_ids, captions, strict=True)],
                          cluster_ids, children.label[rows_array], captions, children.split[rows_array],
                          dict(children.attrs))


def write_partial_caches(root: Path, plan: dict[int, str], *, generators: tuple[str, ...] = ("g1",),
                         **options) -> Path:
    """`write_study_caches`, then the children of `generators` made partial by `plan` (`partial_children`)."""
    folder = write_study_caches(root, **options)
    for generator in generators:
        path = folder / f"{generator}.h5"
        write_embeddings(path, partial_children(read_embeddings(path), plan))
    return folder
