"""benchmarks/bench_study.py runs every study stage with the options dvc.yaml passes (so a stage's new required
option cannot break it unseen, as `--protocol` once did), on a tiny synthetic set."""

import json
import subprocess
import sys

import pytest

from tests.imports import REPO


@pytest.mark.slow
def test_bench_study_runs_every_stage_at_a_tiny_scale():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_study.py"), "--scale", "0.0005",
                           "--tsne-clusters", "20"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    from stages.reporting.layout import study_stages

    # every study stage of the layout, derived there (a new one reaches the benchmark without an edit)
    assert set(summary["stages"]) == {*study_stages(REPO / "stages/reporting/layout.yaml"), "disentangle_train",
                                      "tsne", "report"}
    assert all(stage["wall_s"] > 0 and stage["peak_mib"] > 0 for stage in summary["stages"].values())
