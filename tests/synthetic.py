"""Synthetic embedding caches with a known structure, for tests and benchmarks of the study stages.

Each image embedding is ``semantics(cluster) + caption_shift(cluster, caption) + style * label * u + noise``:
a cluster shares one random semantic vector, a child adds the shift of its caption, and every child is
moved by ``style`` along one unit "style" direction ``u`` (the generator's fingerprint). Caption embeddings
(for backbones with a text tower) are ``semantics + caption_shift + noise``, so retrieval has a known answer.
The files follow stages.contracts.embeddings exactly, under the paths the embed stage writes
(``<root>/<backbone>/{parents,<generator>,captions}.h5``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.contracts.embeddings import CAPTION_LABEL, EmbeddingTable, write_embeddings
from stages.contracts.ids import caption_id, child_id, parent_id
from stages.contracts.labels import FAKE, PARENT_CAPTION_INDEX, REAL


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape and strength of each component; defaults give a clearly but not perfectly separable set."""

    n_clusters: int = 60
    n_children: int = 5
    dim: int = 32
    style: float = 1.0  # distance children are moved along the style direction
    semantic: float = 3.0  # norm scale of a cluster's semantic vector
    caption: float = 1.0  # norm scale of a caption's own shift inside its cluster
    noise: float = 0.3  # per-image isotropic noise (norm scale)
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0


def style_direction(dim: int, seed: int) -> np.ndarray:
    """The unit style direction of a spec (the same for every generator of one seed)."""
    u = np.random.default_rng([seed, 1]).normal(size=dim)
    return (u / np.linalg.norm(u)).astype(np.float32)


def splits_of(spec: SyntheticSpec) -> np.ndarray:
    """Split of each cluster: test first, then val, then train, in cluster order."""
    n_test = round(spec.n_clusters * spec.test_fraction)
    n_val = round(spec.n_clusters * spec.val_fraction)
    split = np.full(spec.n_clusters, "train", dtype=object)
    split[:n_test] = "test"
    split[n_test:n_test + n_val] = "val"
    return split.astype(str)


def _scaled(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    # normal / sqrt(D): a vector of expected norm `scale`, whatever the dimension
    return (rng.normal(size=shape) * (scale / np.sqrt(shape[-1]))).astype(np.float32)


def synthetic_tables(spec: SyntheticSpec, generators: tuple[str, ...] = ("tiny_random",), *,
                     backbone: str = "synthetic", text_tower: bool = True,
                     style_seeds: dict[str, int] | None = None) -> dict[str, EmbeddingTable]:
    """The tables ``parents``, one per generator, and ``captions`` (0 rows without a text tower).

    Every generator moves its children along the spec's style direction, unless `style_seeds` gives it a
    direction of its own (a generator with another fingerprint)."""
    k, n, d = spec.n_clusters, spec.n_children, spec.dim
    rng = np.random.default_rng(spec.seed)
    semantics = _scaled(rng, (k, d), spec.semantic)  # (K, D)
    shifts = _scaled(rng, (k, n, d), spec.caption)  # (K, N, D)
    split = splits_of(spec)
    clusters = np.arange(k)
    attrs = {"backbone": backbone, "library": "synthetic", "architecture": "synthetic", "weights": "none",
             "preprocessing": "none", "dim": d, "random_weights": True, "text_tower": text_tower}

    tables = {"parents": EmbeddingTable(
        semantics + _scaled(rng, (k, d), spec.noise), [parent_id(c) for c in clusters], clusters,
        np.full(k, REAL), np.full(k, PARENT_CAPTION_INDEX), split, attrs={**attrs, "image_set": "parents"})}
    rows_cluster = np.repeat(clusters, n)  # (K*N,) in (cluster, caption) order
    rows_caption = np.tile(np.arange(n), k)
    for g, generator in enumerate(generators):
        grng = np.random.default_rng([spec.seed, 2, g])
        u = style_direction(d, (style_seeds or {}).get(generator, spec.seed))  # (D,)
        children = semantics[:, None] + shifts + spec.style * u + _scaled(grng, (k, n, d), spec.noise)
        tables[generator] = EmbeddingTable(
            children.reshape(k * n, d), [child_id(c, i) for c, i in zip(rows_cluster, rows_caption, strict=True)],
            rows_cluster, np.full(k * n, FAKE), rows_caption, np.repeat(split, n),
            attrs={**attrs, "image_set": generator})
    if text_tower:
        texts = (semantics[:, None] + shifts + _scaled(rng, (k, n, d), spec.noise)).reshape(k * n, d)
        tables["captions"] = EmbeddingTable(
            texts, [caption_id(c, i) for c, i in zip(rows_cluster, rows_caption, strict=True)], rows_cluster,
            np.full(k * n, CAPTION_LABEL), rows_caption, np.repeat(split, n), attrs={**attrs, "image_set": "captions"})
    else:
        tables["captions"] = EmbeddingTable(np.zeros((0, d)), [], [], [], [], [],
                                            attrs={**attrs, "image_set": "captions"})
    return tables


def write_synthetic_caches(root: Path | str, backbone: str, spec: SyntheticSpec,
                           generators: tuple[str, ...] = ("tiny_random",), *, text_tower: bool = True,
                           style_seeds: dict[str, int] | None = None) -> Path:
    """Write ``<root>/<backbone>/{parents,<generator>...,captions}.h5``; returns the backbone folder."""
    folder = Path(root) / backbone
    for name, table in synthetic_tables(spec, generators, backbone=backbone, text_tower=text_tower,
                                        style_seeds=style_seeds).items():
        write_embeddings(folder / f"{name}.h5", table)
    return folder
