"""Runtime knobs (stages.contracts.runtime): a DataLoader whose worker is stuck or dead is an error naming the stage
and the knob to lower, never a hang; thread and worker values are bounded; a misspelt PARENTAGE_* variable is
named with the nearest known one."""

from __future__ import annotations

import os
import time

import pytest
import typer

from stages.contracts import runtime
from stages.shipped.wild import ImageItems, embed_items
from tests.images import photo
from tests.tiny_backbone import TinyBackbone


class StuckItems(ImageItems):
    """Items whose worker never delivers: `stuck` blocks as a worker that could not start its threads does (the
    benchmark stage sat at 0 % CPU for over 10 minutes), `dead` exits as one killed for memory does; any other
    `how` reads them."""

    def __init__(self, paths, how: str) -> None:
        super().__init__(paths, [str(p) for p in paths], TinyBackbone().preprocess)
        self.how = how

    def __getitem__(self, index: int):
        from torch.utils.data import get_worker_info

        if get_worker_info() is not None and self.how == "dead":
            os._exit(1)
        if get_worker_info() is not None and self.how == "stuck":
            time.sleep(3600)
        return super().__getitem__(index)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["stuck", "dead"])
def test_a_stuck_or_dead_worker_names_the_stage_and_its_knob(tmp_path, monkeypatch, how):
    from stages import benchmark

    monkeypatch.setattr(runtime, "LOADER_TIMEOUT", 3.0)
    paths = [tmp_path / f"{i}.png" for i in range(2)]
    for path in paths:
        photo(0).save(path)
    command = typer.main.get_command(benchmark.app)
    start = time.monotonic()
    with command.make_context("benchmark", ["--help"], resilient_parsing=True), \
            pytest.raises(runtime.WorkerError) as caught:
        list(embed_items(TinyBackbone(), StuckItems(paths, how), batch_size=1, workers=1, progress=False))
    assert time.monotonic() - start < 60
    message = str(caught.value)
    assert message.startswith("benchmark: ") and "lower --workers (PARENTAGE_BENCHMARK_WORKERS)" in message, message


@pytest.mark.timeout(120)
def test_a_worker_in_no_command_names_the_loaders_own_knob(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "LOADER_TIMEOUT", 3.0)
    photo(0).save(tmp_path / "a.png")
    with pytest.raises(runtime.WorkerError, match="lower num_workers"):
        list(embed_items(TinyBackbone(), StuckItems([tmp_path / "a.png"], "stuck"), workers=1, progress=False))


def _stderr_of(*command: str, env: dict[str, str]) -> str:
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("PARENTAGE_")}
    result = subprocess.run([sys.executable, "-m", *command, "--help"], env={**environ, **env}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.mark.parametrize("command", [("stages.detect",), ("stages.clusters",), ("stages.cli", "detect")])
def test_a_misspelt_variable_is_named_with_the_nearest_known_one(command):
    """A misspelt PARENTAGE_* variable was ignored without a word: every command (a stage run by DVC, the
    `parentage` CLI) names it on stderr before it starts, with the nearest known one; a known one says nothing."""
    stderr = _stderr_of(*command, env={"PARENTAGE_EMBED_THREDS": "4", "PARENTAGE_DETECT_WORKERS": "1"})
    assert "PARENTAGE_EMBED_THREDS" in stderr and "did you mean PARENTAGE_EMBED_THREADS?" in stderr, stderr
    assert "PARENTAGE_DETECT_WORKERS" not in stderr, stderr


def test_the_known_variables_are_the_commands_options_and_nothing_else_is_needed():
    """known_variables reads the source with ast; it agrees with the options the commands really declare, and
    every PARENTAGE_* name the README, docs/, dvc.yaml and the Makefile use is among them."""
    import re

    from stages.cli import COMMANDS
    from stages.compute import processes
    from stages.generation import speed
    from tests.imports import REPO

    declared = {p.envvar for _, module in COMMANDS for p in typer.main.get_command(
        __import__(module, fromlist=["app"]).app).params if p.envvar}
    outside = {*speed.ENVIRONMENT, *processes.ENVIRONMENT, "PARENTAGE_GENERATE_LAUNCHER", "PARENTAGE_EMBED_LAUNCHER",
               "PARENTAGE_CODE_TRAIN_LAUNCHER"}
    assert runtime.known_variables() == declared | outside
    files = [REPO / name for name in ("README.md", "dvc.yaml", "Makefile")] + sorted((REPO / "docs").rglob("*.md"))
    used = {name for file in files
            for name in re.findall(r"PARENTAGE_[A-Z0-9_]*[A-Z0-9]\b(?![_*])", file.read_text())}
    assert used and used <= runtime.known_variables(), used - runtime.known_variables()
    assert runtime.unknown_variables({"PARENTAGE_FOO": "1", "PATH": "/bin"}) == {"PARENTAGE_FOO": None}


@pytest.mark.timeout(120)
def test_a_worker_that_cannot_start_a_thread_names_the_knob(tmp_path, monkeypatch):
    """The reported failure: starting the loader's threads fails ("can't start new thread", the process limit
    reached); the error names the knob instead of leaving a RuntimeError or a wait."""
    import threading

    from stages import benchmark

    def refuse(self):
        raise RuntimeError("can't start new thread")

    photo(0).save(tmp_path / "a.png")
    items = StuckItems([tmp_path / "a.png"], "none")
    monkeypatch.setattr(threading.Thread, "start", refuse)
    with typer.main.get_command(benchmark.app).make_context("benchmark", ["--help"], resilient_parsing=True), \
            pytest.raises(runtime.WorkerError, match="lower --workers"):
        list(embed_items(TinyBackbone(), items, workers=1, progress=False))


def test_a_dead_worker_keeps_the_embed_parts_for_the_rerun(tmp_path, monkeypatch):
    """Bad input clears the embed stage's resumable parts (its fix changes the fingerprint); a dead worker is the
    machine's, and the rerun with fewer workers resumes from them."""
    from stages.embedding import runner

    parts = tmp_path / ".cache.h5.parts"
    parts.mkdir()

    def die(*args, **kwargs):
        raise runtime.WorkerError("embed", "a DataLoader worker died")

    monkeypatch.setattr(runner, "_prepare_parts", lambda *args: None)
    monkeypatch.setattr(runner, "fingerprint", lambda *args, **kwargs: "print")
    monkeypatch.setattr(runner, "_run_chunks", die)
    state = type("State", (), {"device": type("D", (), {"type": "cpu"})(), "is_main_process": True,
                               "process_index": 0, "num_processes": 1})()
    config = runner.RunConfig(batch_size=1, chunk_size=1, workers=1, precision=runner.Precision.auto,
                              skip_bad=False, progress=False)
    with pytest.raises(runtime.WorkerError):
        runner.embed_rows([], None, tmp_path / "cache.h5", kind="images", attrs={"backbone": "b", "image_set": "s"},
                          config=config, state=state, parts=parts)
    assert parts.is_dir()
