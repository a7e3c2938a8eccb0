"""Every reader of an artifact, checkpoint or cache refuses a FIFO (or any file that is not a regular one) before
opening it, naming the path and what it is: opening a FIFO to read waits for a writer, for ever."""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stages.contracts.errors import InputError
from tests.test_detector_artifact import random_detector


@contextmanager
def fifo_at(path: Path, seconds: float = 3):
    """A FIFO at `path`; fails the test, instead of hanging it, when the block opens it to read: after `seconds`
    a writer in another process opens it and closes it at once, so a blocked reader sees an empty file (a
    thread of this process could not: a reader blocked inside a library may hold the interpreter's lock)."""
    os.mkfifo(path)
    writer = subprocess.Popen(["sh", "-c", f'sleep {seconds}; : > "$0"', str(path)])
    start = time.monotonic()
    try:
        yield path
    finally:
        opened = False
        if time.monotonic() - start >= seconds:
            with suppress(subprocess.TimeoutExpired):
                opened = writer.wait(timeout=2) == 0
        writer.kill()
        writer.wait()
    assert not opened, f"the reader opened the FIFO {path} and waited on it"


def test_detect_refuses_a_detector_whose_head_is_a_fifo(tmp_path):
    """The defect: a detector folder whose head.safetensors is a FIFO hung `detect`."""
    from stages import detect
    from stages.shipped.artifact import TENSORS_FILE, save_detector

    folder = save_detector(random_detector(), tmp_path / "detector")
    (folder / TENSORS_FILE).unlink()
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    with fifo_at(folder / TENSORS_FILE) as head:
        result = CliRunner().invoke(detect.app, [str(image), "--detector", str(folder), "--no-progress"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert str(head) in text and "is a FIFO" in text, text
    assert "Traceback" not in result.output


def _detector_spec(folder: Path) -> None:
    from stages.shipped.artifact import load_detector

    load_detector(folder.parent)


def _code_model(path: Path) -> None:
    from stages.code.net import load_model

    load_model(path)


def _checkpoint(path: Path) -> None:
    from stages.code.trainer import load_checkpoint

    load_checkpoint(path)


def _code_setting(path: Path) -> None:
    from stages.code.setting import read_setting

    read_setting(path)


def _projections(path: Path) -> None:
    from stages.study.disentangle import load_projections

    load_projections(path)


def _embeddings(path: Path) -> None:
    from stages.contracts.embeddings import read_embeddings

    read_embeddings(path)


READERS = {"detector.json": _detector_spec, "model.pt": _code_model, "epoch-0001.pt": _checkpoint,
           "setting.json": _code_setting, "projections.safetensors": _projections, "parents.h5": _embeddings}


@pytest.mark.parametrize("name", READERS)
def test_every_artifact_reader_refuses_a_fifo_by_name(tmp_path, name):
    with fifo_at(tmp_path / name) as path, pytest.raises(InputError) as caught:
        READERS[name](path)
    assert caught.value.where == str(path) and "is a FIFO" in caught.value.problem, str(caught.value)
