"""benchmarks/gpu_check.py, the prepared GPU check, runs end to end in its small CPU mode and prints each
measurement with its ratio (on a GPU machine the same script times the real sizes)."""

from __future__ import annotations

import re
import sys

from tests.conftest import REPO


def test_gpu_check_runs_in_its_small_cpu_mode(capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    gpu_check.main(["--cpu"])
    out = capsys.readouterr().out
    number = r"\d+\.\d+"
    assert re.search(rf"generate SD-1.4-shaped .*stage/bare {number}, stage/peers {number}", out), out
    assert re.search(rf"generate SDXL-shaped .*stage/bare {number}, stage/peers {number}", out), out
    assert re.search(rf"embed ViT-B/32 .*stage/bare {number}", out), out
    assert re.search(rf"CoDE train 2 steps.*stage/bare {number}", out), out
    assert re.search(rf"embed jpeg_decode=gpu vs full: cosine median {number}", out), out
