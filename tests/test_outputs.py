"""Outputs never go silently stale or get lost: atomic writes delete only earlier copies of their own output,
and killed runs leave no debris behind."""

import pytest

from stages import detect
from stages.contracts.io import OutputError, atomic_path


def test_a_file_output_never_replaces_a_folder(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.jpg").write_bytes(b"mine")
    with pytest.raises(OutputError, match="photos: is an existing folder"), detect.output(folder) as stream:
        stream.write("path,score\n")
    assert (folder / "keep.jpg").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]

    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    for out in ("..", ".", str(tmp_path)):
        with pytest.raises(OutputError, match="working folder or one of its ancestors"), detect.output(out) as s:
            s.write("path,score\n")
    assert (work / "notes.txt").read_text() == "mine" and (folder / "keep.jpg").exists()


def test_a_folder_output_replaces_only_an_earlier_copy_of_itself(tmp_path):
    target = tmp_path / "artifact"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.json").write_text("1")
    with atomic_path(target) as tmp:  # a rerun of the same output: replaced
        tmp.mkdir()
        (tmp / "a.json").write_text("2")
    assert (target / "a.json").read_text() == "2"
    (target / "thesis.tex").write_text("not ours")
    with pytest.raises(OutputError, match=r"holding \['thesis.tex'\]"), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.json").write_text("3")
    assert (target / "thesis.tex").exists() and (target / "a.json").read_text() == "2"

    afile = tmp_path / "plain.txt"
    afile.write_text("mine")
    with pytest.raises(OutputError, match="is an existing file"), atomic_path(afile) as tmp:
        tmp.mkdir()
    assert afile.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact", "plain.txt"]  # no temporaries left


def test_temporaries_of_killed_runs_are_swept_at_the_next_write(tmp_path):
    import subprocess

    dead, gone = subprocess.Popen(["true"]), subprocess.Popen(["true"])
    dead.wait()
    gone.wait()
    target = tmp_path / "embeddings.h5"
    stale = tmp_path / f".embeddings.h5.tmp-{dead.pid}"
    stale.write_bytes(b"66 MB of a killed run")
    stale_folder = tmp_path / f".embeddings.h5.tmp-{gone.pid}"  # a folder temporary
    (stale_folder / "part").mkdir(parents=True)
    live = subprocess.Popen(["sleep", "30"])
    busy = tmp_path / f".embeddings.h5.tmp-{live.pid}"
    busy.write_bytes(b"another run writing now")
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("new")
        assert not stale.exists() and not stale_folder.exists() and target.read_text() == "new"
        assert busy.exists(), "a live process's temporary is not debris"
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow
def test_experiments_run_in_a_temporary_copy_and_from_the_queue(dvc_repo, repo_root):
    """`dvc exp run --temp` and `dvc queue` run the pipeline in a copy of the repository that holds only what git
    and DVC track: no virtual environment. With the project's `.venv` inside the repository (as `make install`
    builds it), the demo's parents must still be found there, so both experiments succeed.

    Cheap: one caption per parent, one transform, and only the detector (and what it reads) is run."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    repo = dvc_repo.path
    (repo / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    shutil.copy(repo_root / ".gitignore", repo / ".gitignore")
    with (repo / ".gitignore").open("a") as ignore:  # `.venv/` matches a folder, not this link to one
        ignore.write("/.venv\n")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["clusters"]["captions_per_parent"] = 1
    params["detector"]["robustness"]["transforms"] = ["jpeg95"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the stages' `python` is the repository's .venv/bin/python, so its packages live under the repository;
    # no PYTHONPATH: each copy runs its own stages/ (python -m puts the working folder first)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PATH=f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", OMP_NUM_THREADS="1")

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    backbone = "openclip_vitb32_random"
    run("dvc", "repro", f"embed_parents@{backbone}", f"embed_children@{backbone}-tiny_random")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "upstream of the detector")

    temp = run("dvc", "exp", "run", "--temp", "-S", f"model.backbone={backbone}", "detector")
    assert "Running stage 'detector'" in temp, temp
    run("dvc", "exp", "run", "--queue", "-S", f"model.backbone={backbone}", "-S", "detector.seed=1", "detector")
    run("dvc", "exp", "run", "--run-all")
    queue = run("dvc", "queue", "status")
    assert "Success" in queue and "Failed" not in queue, queue
    shown = json.loads(run("dvc", "exp", "show", "--json"))
    experiments = [exp for commit in shown for exp in (commit.get("experiments") or [])]
    metrics = [run_["data"]["metrics"] for exp in experiments for run_ in exp["revs"]
               if run_["data"].get("metrics", {}).get("metrics/detector.json")]
    assert len(metrics) == 2, shown
