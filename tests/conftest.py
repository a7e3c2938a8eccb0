"""Offline by construction: any attempt to reach a model hub fails loudly instead of downloading."""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """../shared/data/coco-mini, or a clean skip where ../shared is absent."""
    path = SHARED_DATA / "coco-mini"
    if not path.is_dir():
        pytest.skip("../shared/data/coco-mini is absent")
    return path


@pytest.fixture(scope="session")
def wild_generated() -> Path:
    path = SHARED_DATA / "wild-generated"
    if not path.is_dir():
        pytest.skip("../shared/data/wild-generated is absent")
    return path


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    import subprocess

    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


@pytest.fixture
def dvc_repo(tmp_path: Path):
    """A throwaway git + DVC repository holding this project's pipeline; returns a runner for commands in it, whose
    `path` and `env` are the repository and the environment the commands run in.

    Commands run with this interpreter's bin folder first on PATH, so `dvc` and the stages' `python` are
    the ones the tests run under."""
    import shutil
    import sys

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("stages", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/plots", ".dvcignore", "detectors"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, repo / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PYTHONPATH": str(repo)}

    def run(*args: str) -> str:
        return _run(list(args), repo, env)

    run("git", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "pipeline")
    run.path = repo  # type: ignore[attr-defined]
    run.env = env  # type: ignore[attr-defined]
    return run
