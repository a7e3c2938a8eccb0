"""The bootstrap's two command-line options, the same in every stage that reports intervals (params.yaml
`bootstrap`, passed by dvc.yaml as --bootstrap-resamples and --bootstrap-seed)."""

from __future__ import annotations

import typer


def resamples_option():
    """``bootstrap_resamples: int = resamples_option()``."""
    return typer.Option(..., min=1, help="bootstrap.resamples: resamples behind each 95 % interval "
                                         "(docs/intervals.md).")


def seed_option():
    """``bootstrap_seed: int = seed_option()``."""
    return typer.Option(..., min=0, max=2**63 - 1, help="bootstrap.seed: seed of the resampling draws.")
