"""Synthetic embedding caches laid out like data/embeddings/, shared by the study stages' tests."""

from __future__ import annotations

from pathlib import Path

from tests.synthetic import SyntheticSpec, write_synthetic_caches


def write_study_caches(root: Path, *, generators: tuple[str, ...] = ("g1", "g2"), n_clusters: int = 60,
                       dim: int = 16, style: float = 1.0, text_tower: bool = True, backbone: str = "bb",
                       style_seeds: dict[str, int] | None = None) -> Path:
    """``root/<backbone>/{parents,<generator>...,captions}.h5``; returns the backbone folder."""
    spec = SyntheticSpec(n_clusters=n_clusters, dim=dim, style=style)
    return write_synthetic_caches(root, backbone, spec, generators, text_tower=text_tower, style_seeds=style_seeds)
