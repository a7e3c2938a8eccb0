"""One run on several machines, played on this one: two `accelerate launch`es on localhost as machine 0 and
machine 1 (gloo on CPU, one process each, a free port), exactly as SLURM's `srun` starts them on two nodes
(docs/cluster.md). generate (the tiny generator) and embed (parents and captions) give the bytes of a
one-process run; a machine killed or frozen half-way makes the other stop within PARENTAGE_LOST_TIMEOUT with an
error naming the lost rank, and the next run resumes to the same bytes. stages.compute.processes' barrier and
timeout are unit-tested without processes.

The slow tests print their timings (run them with -s): the two-machine run beside one process, and the time
from the kill (or freeze) to the survivor's exit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stages.compute import processes as procs
from stages.contracts.errors import InputError
from stages.generation.registry import REGISTRY
from stages.generation.tiny import TinyConfig, save_pipeline
from tests.fixtures import write_clusters
from tests.test_embed import tiny_registry
from tests.test_generate import free_port

REPO = Path(__file__).resolve().parents[1]
LOST = 8  # seconds: PARENTAGE_LOST_TIMEOUT of these runs (short, so a lost machine is named quickly)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """4 parents x 3 captions = 12 children of the tiny generator (64 px); a tiny CLIP backbone registry."""
    root = tmp_path_factory.mktemp("machines")
    save_pipeline(TinyConfig(resolution=64), root / "models" / "tiny_random")
    return {"clusters": write_clusters(root / "clusters", n_parents=4, n_captions=3), "models": root / "models",
            "backbones": tiny_registry(root, "tiny_a")}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "PARENTAGE_LOST_TIMEOUT": str(LOST)}


def generate_args(inputs: dict[str, Path], out: Path, *, shard_size: int, batch_size: int) -> list[str]:
    return ["-m", "stages.generate", "--generator", "tiny_random", "--registry", str(REGISTRY), "--clusters",
            str(inputs["clusters"]), "--models-root", str(inputs["models"]), "--out", str(out / "children"),
            "--metrics", str(out / "generate.json"), "--encoding", "jpeg", "--jpeg-quality", "95", "--shard-size",
            str(shard_size), "--batch-size", str(batch_size), "--device", "cpu"]


def embed_args(inputs: dict[str, Path], out: Path) -> list[str]:
    return ["-m", "stages.embed", "--backbone", "tiny_a", "--registry", str(inputs["backbones"]), "--clusters",
            str(inputs["clusters"]), "--children", "", "--out", str(out / "parents.h5"), "--captions-out",
            str(out / "captions.h5"), "--metrics", str(out / "parents.json"), "--batch-size", "2", "--chunk-size",
            "1", "--workers", "0", "--threads", "1", "--precision", "auto", "--device", "cpu", "--on-bad", "error",
            "--jpeg-decode", "full"]


def machine(rank: int, port: int, args: list[str]) -> subprocess.Popen:
    """Machine `rank` of two, one process each: what `srun` starts on each node (docs/cluster.md)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
              "--machine_rank", str(rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1",
              "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]
    return subprocess.Popen([*launch, *args], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def two_machines(args: list[str]) -> float:
    """Run `args` on two "machines"; both must succeed. Returns the wall time."""
    start, port = time.perf_counter(), free_port()
    launched = [machine(rank, port, args) for rank in (0, 1)]
    outputs = [process.communicate(timeout=600)[0] for process in launched]
    for rank, (process, output) in enumerate(zip(launched, outputs, strict=True)):
        assert process.returncode == 0, f"machine {rank}:\n{output}"
    return time.perf_counter() - start


def one_process(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return time.perf_counter() - start


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def kill_machine(process: subprocess.Popen) -> None:
    """SIGKILL a launcher and every process under it, as a node's power cut would."""
    for pid in machine_processes(process):
        with contextlib.suppress(ProcessLookupError):  # it ended with its parent
            os.kill(pid, signal.SIGKILL)
    process.wait()


def machine_processes(process: subprocess.Popen) -> list[int]:
    """A launcher and every process under it (torch's launcher starts its workers in their own sessions, so the
    launcher's process group does not hold them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # a process that ended while we read
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    family, todo = [], [process.pid]
    while todo:
        pid = todo.pop()
        family.append(pid)
        todo += children.get(pid, [])
    return family


# ------------------------------------------------------------------------------------------- two machines
@pytest.mark.slow
def test_two_machines_give_the_bytes_of_one_process(inputs, tmp_path):
    """generate and then embed, each on machines 0 and 1 (shards and parts dealt over both), equal a
    one-process run file for file, byte for byte: children shards, manifest, marker, metrics, HDF5 caches."""
    one, two = tmp_path / "one", tmp_path / "two"
    timings = {}
    for name, args in (("generate", lambda out: generate_args(inputs, out, shard_size=3, batch_size=3)),
                       ("embed", lambda out: embed_args(inputs, out))):
        timings[name] = (one_process(args(one)), two_machines(args(two)))
    assert files(two) == files(one)
    assert len(list((two / "children" / "shards").glob("shard-*.parquet"))) == 4
    assert {"parents.h5", "captions.h5", "parents.json"} <= set(files(two))
    for name, (single, double) in timings.items():
        print(f"\n{name}: one process {single:.1f} s, two machines x 1 process {double:.1f} s (wall)")


@pytest.mark.slow
@pytest.mark.parametrize(("how", "lost"), [("kill", 1), ("kill", 0), ("freeze", 0)])
def test_a_lost_machine_is_named_within_the_timeout_and_the_rerun_resumes(inputs, tmp_path, how, lost):
    """Machine `lost` is killed (SIGKILL: its sockets close) or frozen (SIGSTOP: its sockets stay open and
    nothing answers, as a node that hangs or drops off the network) once 2 of the 12 one-child shards exist.
    Machine 0's launcher hosts the run's store. The other machine finishes its own shards and stops, at the
    barrier before the manifest, with an error naming the lost rank, within PARENTAGE_LOST_TIMEOUT (plus its
    remaining shards and the launcher's teardown), never hanging. No manifest is written; the next run (one
    process) resumes from the shards on disk and ends byte-identical to an uninterrupted run."""
    out = tmp_path / "killed"
    args = generate_args(inputs, out, shard_size=1, batch_size=1)
    port = free_port()
    launched = {rank: machine(rank, port, args) for rank in (0, 1)}
    deadline = time.monotonic() + 300
    while len(list((out / "children" / "shards").glob("shard-*.parquet"))) < 2:
        assert time.monotonic() < deadline and all(p.poll() is None for p in launched.values()), \
            "\n".join(p.communicate()[0] for p in launched.values() if p.poll() is not None)
        time.sleep(0.05)
    if how == "freeze":
        family = machine_processes(launched[lost])
        for pid in family:
            os.kill(pid, signal.SIGSTOP)
    else:
        kill_machine(launched[lost])
    killed_at = time.monotonic()
    survivor = launched[1 - lost]
    try:
        output = survivor.communicate(timeout=LOST + 120)[0]  # a hang fails here
    finally:
        stopped = time.monotonic() - killed_at
        if how == "freeze":
            kill_machine(launched[lost])
    assert survivor.returncode != 0, output
    named = "lost rank 1 (machine 1, host" if lost == 1 else "lost rank 0's machine"
    assert named in output and "PARENTAGE_LOST_TIMEOUT" in output, output
    assert not (out / "children" / "manifest.parquet").exists()
    finished = len(list((out / "children" / "shards").glob("shard-*.parquet")))
    assert 2 <= finished < 12
    print(f"\nmachine {lost} {how}: machine {1 - lost} stopped {stopped:.1f} s later "
          f"(PARENTAGE_LOST_TIMEOUT={LOST} s), {finished} of 12 shards kept")
    assert stopped < LOST + 60

    resumed = subprocess.run([sys.executable, *args], cwd=REPO, env=env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming, {finished} of 12 shards already finished" in resumed.stdout
    one_process(generate_args(inputs, tmp_path / "whole", shard_size=1, batch_size=1))
    assert files(out) == files(tmp_path / "whole")


# ------------------------------------------------------------------------------------------- the barrier
class Store:
    """The part of torch's key-value store the barrier uses, in memory."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def set(self, key: str, value: str) -> None:
        self.values[key] = value.encode()

    def get(self, key: str) -> bytes:
        return self.values[key]

    def add(self, key: str, amount: int) -> int:
        self.values[key] = int(self.values.get(key, 0)) + amount
        return self.values[key]

    def check(self, keys: list[str]) -> bool:
        return all(key in self.values for key in keys)


def test_a_barrier_passes_when_all_arrived_and_names_a_silent_rank_after_the_timeout(monkeypatch):
    store = Store()
    monkeypatch.setenv("GROUP_RANK", "0")
    first = procs.Processes(0, 2, store, timeout=0.6)
    store.values[f"{procs.PREFIX}/barrier/1/1"] = b"1"  # rank 1 arrived at barrier 1
    store.add(f"{procs.PREFIX}/barrier/1", 1)
    first.barrier("the first point")
    store.set(f"{procs.PREFIX}/host/1", "machine 1, host node7")
    start = time.monotonic()
    with pytest.raises(procs.LostProcess, match=r"lost rank 1 \(machine 1, host node7\): no sign of life .* "
                                                r"waiting for the second point"):
        first.barrier("the second point")  # rank 1 never beats again
    assert time.monotonic() - start < 5
    first.close()


def test_a_barrier_waits_for_a_slow_rank_that_still_beats():
    import threading

    store = Store()
    waiting = procs.Processes(0, 2, store, timeout=0.6)
    stop = time.monotonic() + 1.5  # rank 1 beats for 1.5 s (over twice the timeout), then arrives

    def slow_rank() -> None:
        while time.monotonic() < stop:
            store.add(f"{procs.PREFIX}/beat/1", 1)
            time.sleep(0.1)
        store.set(f"{procs.PREFIX}/barrier/1/1", "1")
        store.add(f"{procs.PREFIX}/barrier/1", 1)

    threading.Thread(target=slow_rank, daemon=True).start()
    waiting.barrier("the slow one")
    assert time.monotonic() >= stop
    waiting.close()


def test_a_store_that_stops_answering_names_rank_0s_machine():
    class Gone(Store):
        def add(self, key: str, amount: int) -> int:
            if key.startswith(f"{procs.PREFIX}/barrier"):
                raise RuntimeError("Broken pipe")
            return super().add(key, amount)

    group = procs.Processes(1, 2, Gone(), timeout=5)
    with pytest.raises(procs.LostProcess, match=r"lost rank 0's machine: .*stopped answering \(Broken pipe\)"):
        group.barrier("anything")
    group.close()


def test_a_store_that_hangs_names_rank_0s_machine_within_the_timeout():
    """A frozen machine 0 keeps its sockets open and answers nothing: a store call then blocks for ever. Only the
    heartbeat thread calls the store, so the barrier gives up on it after the timeout."""
    import threading

    thawed = threading.Event()

    class Frozen(Store):
        def add(self, key: str, amount: int) -> int:
            if key.startswith(f"{procs.PREFIX}/barrier"):
                thawed.wait(60)
            return super().add(key, amount)

    group = procs.Processes(1, 2, Frozen(), timeout=0.6)
    start = time.monotonic()
    with pytest.raises(procs.LostProcess, match=r"lost rank 0's machine: .*stopped answering \(no answer for"):
        group.barrier("anything")
    assert time.monotonic() - start < 5
    thawed.set()
    group.close()


def test_one_process_has_no_heartbeat_and_its_barriers_return():
    alone = procs.Processes(0, 1, None, timeout=1)
    alone.barrier("nothing")
    assert alone._thread is None


@pytest.mark.parametrize("value", ["0", "-3", "soon", "inf", "nan"])
def test_a_bad_timeout_names_the_variable(value):
    with pytest.raises(InputError, match=rf"PARENTAGE_LOST_TIMEOUT: is '{value}'; expected a number of seconds"):
        procs.lost_timeout({"PARENTAGE_LOST_TIMEOUT": value})
    assert procs.lost_timeout({}) == procs.DEFAULT_TIMEOUT == 300
    assert procs.lost_timeout({"PARENTAGE_LOST_TIMEOUT": "2.5"}) == 2.5


def test_docs_cluster_shows_the_batch_script_as_it_is():
    """docs/cluster.md holds scripts/slurm/paper.sbatch verbatim; the script parses and sets the launchers
    through make paper."""
    script = (REPO / "scripts" / "slurm" / "paper.sbatch").read_text()
    assert f"```bash\n{script}```" in (REPO / "docs" / "cluster.md").read_text()
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "slurm" / "paper.sbatch")]).returncode == 0
    assert 'make paper COCO="$COCO" LAUNCHER="$launcher"' in script
    makefile = (REPO / "Makefile").read_text()
    for stage in ("GENERATE", "EMBED", "CODE_TRAIN"):
        assert f"PARENTAGE_{stage}_LAUNCHER='$(LAUNCHER)'" in makefile
