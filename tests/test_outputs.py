"""Outputs never go silently stale or get lost: atomic writes delete only earlier copies of their own output,
and killed runs leave no debris behind."""

from pathlib import Path

import pytest

from stages import detect
from stages.contracts.io import MARKER, OutputError, atomic_path
from tests.fixtures import BOOTSTRAP
from tests.test_hostile import assert_refused  # exit 2, a message naming each name, no traceback


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
    with atomic_path(target, stage="probe") as tmp:
        tmp.mkdir()
        (tmp / "a.json").write_text("1")
    assert (target / MARKER).read_text() == "probe\n"
    with atomic_path(target, stage="probe") as tmp:  # a rerun of the same output: replaced
        tmp.mkdir()
        (tmp / "a.json").write_text("2")
    assert (target / "a.json").read_text() == "2"
    with pytest.raises(OutputError, match="folder output of the 'probe' stage"), atomic_path(target,
                                                                                           stage="tsne") as tmp:
        tmp.mkdir()
    assert (target / "a.json").read_text() == "2"

    afile = tmp_path / "plain.txt"
    afile.write_text("mine")
    with pytest.raises(OutputError, match="is an existing file"), atomic_path(afile, stage="probe") as tmp:
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
    # the detector's metrics file is a git-tracked output (the review file, the one metrics file, is the report's)
    detectors = [run_["data"]["outs"]["metrics/detector.json"] for exp in experiments for run_ in exp["revs"]
                 if run_["data"].get("outs", {}).get("metrics/detector.json", {}).get("hash")]
    assert len(detectors) == 2, shown


# ------------------------------------------------ issue 23, item 1: an output is replaced only if it is ours
def snapshot(folder):
    """Every file below `folder` with its bytes: what a refused write must leave as it was."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def scored_by_a_tiny_detector(monkeypatch):
    """detect's detector and backbone, without a registry: a random head on the tiny test backbone."""
    from tests.test_detector_artifact import random_detector
    from tests.tiny_backbone import TinyBackbone

    monkeypatch.setattr("stages.shipped.wild.load_checked", lambda *args, **kwargs: (random_detector(), TinyBackbone()))


def test_a_folder_output_never_replaces_a_folder_no_stage_wrote(tmp_path):
    """The shared writer of demo_parents, detector, tiny_generator and benchmark_demo: a person's folder is never
    replaced, not even one holding only names the output also writes (an older rule took that for an earlier copy);
    a folder carrying the stage's marker, or an empty one, is."""
    from stages import demo_parents
    from stages.shipped.artifact import SPEC_FILE, load_detector, save_detector
    from tests.test_detector_artifact import random_detector

    photos = tmp_path / "photos"  # demo_parents writes skimage/ and sklearn/
    (photos / "skimage").mkdir(parents=True)
    (photos / "skimage" / "astronaut.png").write_bytes(b"my own astronaut")
    notes = tmp_path / "notes"  # the detector writes detector.json and head.safetensors
    notes.mkdir()
    (notes / SPEC_FILE).write_text("my notes")
    kept = {folder: snapshot(folder) for folder in (photos, notes)}
    captions = Path(demo_parents.__file__).parent / "sources" / "demo" / "captions.json"
    with pytest.raises(OutputError, match=rf"photos: is a folder holding \['skimage'\] with no {MARKER}"):
        demo_parents.run(captions, photos)
    with pytest.raises(OutputError, match=rf"notes: is a folder holding \['{SPEC_FILE}'\] with no {MARKER}"):
        save_detector(random_detector(), notes)
    assert {folder: snapshot(folder) for folder in (photos, notes)} == kept

    empty = tmp_path / "empty"
    empty.mkdir()
    save_detector(random_detector(), empty)
    assert (empty / MARKER).read_text() == "detector\n"
    save_detector(random_detector(seed=1), empty)  # its own earlier copy
    assert load_detector(empty).id == random_detector(seed=1).id
    with pytest.raises(OutputError, match="folder output of the 'detector' stage"):
        demo_parents.run(captions, empty)


def test_benchmark_demo_never_deletes_a_users_real_and_fake_images(tmp_path):
    from typer.testing import CliRunner

    from stages import benchmark_demo
    from stages.contracts.clusters import read_clusters
    from tests.fixtures import write_children, write_clusters

    clusters = write_clusters(tmp_path, n_parents=3, n_captions=1, size=(24, 16))
    write_children(tmp_path / "children" / "g1", read_clusters(clusters), generator="g1", size=(16, 16))
    mine = tmp_path / "my_benchmark"
    (mine / "real").mkdir(parents=True)
    (mine / "fake" / "g1").mkdir(parents=True)
    (mine / "real" / "holiday.jpg").write_bytes(b"a real photograph")
    (mine / "fake" / "g1" / "made.png").write_bytes(b"a generated one")
    kept = snapshot(mine)
    result = CliRunner().invoke(benchmark_demo.app, ["--clusters", str(clusters), "--children",
                                                     str(tmp_path / "children"), "--generators", "g1",
                                                     "--out", str(mine)])
    assert_refused(result, str(mine), "with no .parentage-output")
    assert snapshot(mine) == kept


def test_detect_never_overwrites_the_image_it_scores(tmp_path, scored_by_a_tiny_detector):
    from typer.testing import CliRunner

    from tests.images import photo

    image = tmp_path / "x.jpg"
    photo(0, (32, 32)).save(image)
    kept = image.read_bytes()
    result = CliRunner().invoke(detect.app, [str(image), "--out", str(image), "--workers", "0", "--no-progress"])
    assert_refused(result, f"{image}: is {image}, an input of this command")
    assert image.read_bytes() == kept


def test_detect_never_writes_into_the_detector_folder(tmp_path, scored_by_a_tiny_detector):
    from typer.testing import CliRunner

    from stages.shipped.artifact import SPEC_FILE, load_detector, save_detector
    from tests.images import photo
    from tests.test_detector_artifact import random_detector

    save_detector(random_detector(), tmp_path / "detector")
    image = tmp_path / "x.jpg"
    photo(0, (32, 32)).save(image)
    out = tmp_path / "detector" / SPEC_FILE
    result = CliRunner().invoke(detect.app, [str(image), "--detector", str(tmp_path / "detector"), "--out", str(out),
                                             "--workers", "0", "--no-progress"])
    assert_refused(result, str(out), "lies inside", "'detector' stage")
    assert load_detector(tmp_path / "detector").id == random_detector().id


def test_import_children_never_overwrites_the_sets_manifest(tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from stages import import_children
    from tests.fixtures import write_clusters
    from tests.images import photo

    clusters = write_clusters(tmp_path / "parents", n_parents=3, n_captions=1, size=(24, 16))
    folder = tmp_path / "set"
    folder.mkdir()
    for cluster in range(3):
        photo(100 + cluster, (16, 16)).save(folder / f"{cluster}.jpg")
    pd.DataFrame({"path": [f"{c}.jpg" for c in range(3)], "parent": [str(c) for c in range(3)]}).to_parquet(
        folder / "manifest.parquet")
    kept = snapshot(folder)
    result = CliRunner().invoke(import_children.app, [
        "--name", "theirs", "--layout", "manifest", "--root", str(folder / "manifest.parquet"), "--generator", "",
        "--reencode", "none", "--on-bad", "error", "--shard-size", "2", "--clusters", str(clusters),
        "--out", str(folder), "--metrics", str(tmp_path / "m.json")])
    assert_refused(result, str(folder))
    assert snapshot(folder) == kept and not (tmp_path / "m.json").exists()


def _special(path, kind: str) -> str:
    """Make a FIFO, a socket or a character device (the one /dev/null is: 1, 3) at `path`; its name in errors."""
    import os
    import socket
    import stat

    if kind == "fifo":
        os.mkfifo(path)
        return "a FIFO (named pipe)"
    if kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
        return "a socket"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root (CI runs as root)")
    return "a character device"


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_no_output_replaces_a_device_fifo_or_socket(tmp_path, kind, scored_by_a_tiny_detector):
    """As root, `--out /dev/null` replaced the device node with a regular file; a FIFO or device given as any
    output was replaced the same way. Here the special file is made in the test's folder (a device node like
    /dev/null's when run as root), as the file output of detect, a metrics file and a folder output."""
    import os
    import re
    import stat

    from typer.testing import CliRunner

    from stages import demo_parents
    from stages.contracts.io import write_metrics
    from tests.images import photo

    special = tmp_path / "special"
    what = _special(special, kind)
    mode = os.lstat(special).st_mode
    image = tmp_path / "x.jpg"
    photo(0, (32, 32)).save(image)
    result = CliRunner().invoke(detect.app, [str(image), "--out", str(special), "--workers", "0", "--no-progress"])
    assert_refused(result, f"{special}: is {what}, not a regular file")
    with pytest.raises(OutputError, match=re.escape(f"is {what}")):
        write_metrics(special, {"accuracy": 1})
    captions = Path(demo_parents.__file__).parent / "sources" / "demo" / "captions.json"
    result = CliRunner().invoke(demo_parents.app, ["--captions", str(captions), "--out", str(special)])
    assert_refused(result, f"{special}: is {what}")
    link = tmp_path / "link"  # a link to it: the special file is what it would replace (/dev/stdout is one)
    link.symlink_to(special)
    with pytest.raises(OutputError, match=re.escape(f"is {what}")):
        write_metrics(link, {"accuracy": 1})
    assert os.lstat(special).st_mode == mode and stat.S_IFMT(mode) != stat.S_IFREG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "special", "x.jpg"]


def test_the_marker_changes_no_fingerprint(tmp_path):
    """A marker names the stage that wrote a folder, not what it holds: a children set's fingerprint (the select
    stage's) and a model folder's (in generate's shards) pass over it, so adding it reruns no consumer. (The
    detector loader reads its two files by name; the benchmark layouts and detect's walks skip hidden names:
    tests/test_benchmark.py scores a marked benchmark_demo folder.)"""
    from stages.contracts.clusters import read_clusters
    from stages.contracts.selection import fingerprint
    from stages.generation.registry import fingerprint_dir
    from tests.fixtures import write_children, write_clusters

    clusters = write_clusters(tmp_path, n_parents=3, n_captions=1, size=(24, 16))
    children = write_children(tmp_path / "children" / "g1", read_clusters(clusters), generator="g1", size=(16, 16))
    before = fingerprint(children), fingerprint_dir(children)
    (children / MARKER).write_text("generate\n")
    assert (fingerprint(children), fingerprint_dir(children)) == before


def test_a_stages_output_never_replaces_its_own_input(tmp_path):
    """Every stage checks its output paths against its inputs before any work (check_outputs): here distances'
    metrics given the children cache it reads (a link to it, too), and the benchmark's scores given one of the
    set's images. Neither is touched."""
    from typer.testing import CliRunner

    from stages import distances
    from tests.study_caches import write_study_caches

    folder = write_study_caches(tmp_path)
    cache = folder / "g1.h5"
    (tmp_path / "link.h5").symlink_to(cache)
    kept = cache.read_bytes()
    for out in (cache, tmp_path / "link.h5"):
        result = CliRunner().invoke(distances.app, [*BOOTSTRAP, "--parents", str(folder / "parents.h5"),
                                                    "--children", str(cache), "--metrics", str(out)])
        assert_refused(result, f"{out}: is {cache}, an input of this command")
    assert cache.read_bytes() == kept and (tmp_path / "link.h5").is_symlink()

    from stages import benchmark
    from stages.external.sets import Layout
    from stages.imaging.transforms import Transform
    from tests.images import photo
    from tests.test_benchmark import shipped

    root = tmp_path / "set"
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
        for k in range(2):
            photo(k + 10 * (label == "fake"), (32, 32)).save(root / label / f"{k}.png")
    image = root / "real" / "0.png"
    kept = image.read_bytes()
    with pytest.raises(OutputError, match=f"{image}: is {image}, an input"):
        benchmark.run(Layout.real_fake, root, "", "", [Transform.half], lambda: [shipped()], scores=image,
                      metrics=tmp_path / "m.json", grid=tmp_path / "grid.csv", roc=tmp_path / "roc", seed=0,
                      progress=False)
    assert image.read_bytes() == kept and not (tmp_path / "m.json").exists()


def test_check_outputs_names_the_input_and_leaves_empty_options_out(tmp_path):
    from stages.contracts.io import check_outputs

    data = tmp_path / "data"
    data.mkdir()
    (data / "clusters.parquet").write_bytes(b"table")
    check_outputs(writes=[data / "m.json", "", None, "-"], reads=[data / "clusters.parquet", "", None])
    with pytest.raises(OutputError, match="data: holds .*clusters.parquet, an input of this command"):
        check_outputs(writes=[data], reads=[data / "clusters.parquet"])
    with pytest.raises(OutputError, match=r"clusters.parquet: is .*clusters.parquet, an input"):
        check_outputs(writes=[data / "clusters.parquet"], reads=[data / "clusters.parquet"])
