"""The pipeline under DVC itself: a fresh repro builds, a second does nothing, `exp run -S` reruns."""

import json

import pytest


@pytest.mark.slow
def test_clusters_stage_under_dvc(dvc_repo):
    out = dvc_repo("dvc", "repro", "clusters")
    assert "Running stage 'clusters'" in out
    metrics = json.loads((dvc_repo.path / "metrics" / "clusters.json").read_text())
    assert metrics["parents"]["total"] == 13
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "repro")

    again = dvc_repo("dvc", "repro", "clusters")
    assert "Running stage" not in again and "didn't change" in again

    exp = dvc_repo("dvc", "exp", "run", "clusters", "-S", "clusters.captions_per_parent=3")
    assert "Running stage 'clusters'" in exp
    import pandas as pd

    frame = pd.read_parquet(dvc_repo.path / "data" / "clusters.parquet")
    assert frame["captions"].map(len).eq(3).all()
