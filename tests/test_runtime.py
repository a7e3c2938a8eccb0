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
    benchmark stage sat at 0 % CPU for over 10 minutes), `dead` exits as one killed for memory does."""

    def __init__(self, paths, how: str) -> None:
        super().__init__(paths, [str(p) for p in paths], TinyBackbone().preprocess)
        self.how = how

    def __getitem__(self, index: int):
        from torch.utils.data import get_worker_info

        if get_worker_info() is not None:
            if self.how == "dead":
                os._exit(1)
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


def test_a_worker_in_no_command_names_the_loaders_own_knob(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "LOADER_TIMEOUT", 3.0)
    photo(0).save(tmp_path / "a.png")
    with pytest.raises(runtime.WorkerError, match="lower num_workers"):
        list(embed_items(TinyBackbone(), StuckItems([tmp_path / "a.png"], "stuck"), workers=1, progress=False))
