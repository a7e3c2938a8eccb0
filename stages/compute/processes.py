"""The processes of one launched run, on one machine or several: barriers that name a lost process.

A launcher (``accelerate launch``, ``torchrun``, either under SLURM's ``srun``) starts the processes of a run and
sets RANK / WORLD_SIZE / MASTER_ADDR in each; accelerate's ``PartialState`` joins them into one process group, so
``process_index`` and ``num_processes`` count every process of every machine and work is dealt over all of them.

A machine that dies mid-run (power, network, the scheduler's OOM killer) must not leave the others waiting until
the job's time limit, and the user must learn which one went. A collective barrier cannot tell: it hangs for the
process group's timeout, or fails with a transport error naming a socket. So the stages' barriers are built on
the process group's key-value store instead:

- `Processes.heartbeat`: a daemon thread in every process adds 1 to its own counter in the store every few
  seconds, and reads the others' counters; a counter that has not moved for `timeout` seconds (measured on the
  reader's own clock: machines' clocks need not agree) marks its process as lost.
- `Processes.barrier`: each process marks its arrival and polls the count. A process that has not arrived and
  has given no sign of life for `timeout` seconds ends the wait with `LostProcess`, naming its rank, machine and
  host. A slow process keeps beating, so a barrier waits for it as long as it takes (the last shard of a
  generator, the main process merging an HDF5 cache). A store that stops answering is the loss of the machine
  that hosts it (the launcher of machine 0): `LostProcess` names that rank.

The timeout is PARENTAGE_LOST_TIMEOUT (seconds, default `DEFAULT_TIMEOUT`). A process that dies while the others
are still working is named at the next barrier, at most `timeout` seconds after it died or after the others got
there, whichever is later; what the survivors finished stays on disk, so the next run resumes from it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from stages.contracts.errors import InputError

# read through os.environ (no command option): every process a launcher starts inherits it
ENVIRONMENT = ("PARENTAGE_LOST_TIMEOUT",)
TIMEOUT_VARIABLE = ENVIRONMENT[0]
# seconds: long enough that a process busy in a long C call (a GIL held while loading weights) or a swapping
# machine is not called lost, short enough that a lost node costs minutes of an allocation, not its time limit
DEFAULT_TIMEOUT = 300.0
PREFIX = "parentage"
POLL = 0.2  # seconds between two looks at a barrier's count


class LostProcess(InputError):
    """Another process of the run stopped giving signs of life: its machine died, was killed or is unreachable."""


def lost_timeout(environ: dict[str, str] | None = None) -> float:
    """PARENTAGE_LOST_TIMEOUT in seconds (DEFAULT_TIMEOUT when unset); anything but a positive number is an error
    naming the variable."""
    text = (os.environ if environ is None else environ).get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InputError(TIMEOUT_VARIABLE, f"is {text!r}; expected a number of seconds above 0 (default "
                                           f"{DEFAULT_TIMEOUT:g})")
    return value


def group_timeout() -> Any:
    """The process group's timeout (a timedelta), for accelerate's PartialState or Accelerator: the lost timeout
    too, so that a store or collective call to a machine that vanished without closing its sockets fails in
    that time as well. The stages wait only in `Processes.barrier` (which waits for slow processes as long as
    they beat); the group's own collectives (CoDE's gradient all-reduce) run in lockstep."""
    from datetime import timedelta

    return timedelta(seconds=lost_timeout())


class Processes:
    """This process's view of the run: its rank, the run's size, and (with several processes) the heartbeat
    and the barriers. Make one per process with `processes(state)`.

    Every store call after the first two runs in the heartbeat thread: a store call to a machine that froze
    (its sockets open, nothing answering) blocks for ever, so the waiting thread only watches the heartbeat
    thread's findings and its last answer, and gives up on a store silent for the timeout."""

    def __init__(self, rank: int, size: int, store: Any = None, *, timeout: float) -> None:
        self.rank, self.size, self.timeout = rank, size, timeout
        self.store, self.count = store, 0
        self.beat = max(0.5, min(10.0, timeout / 6))  # several beats per timeout: one late beat is no loss
        now = time.monotonic()
        self._seen = {r: (-1, now) for r in range(size)}  # rank: (its counter, when it last moved, our clock)
        self._lock, self._wake = threading.Lock(), threading.Event()
        self._stopped = False
        self._pending = self._marked = self._passed = 0  # barrier numbers: waited at, arrival marked, complete
        self._absent: set[int] = set()  # ranks that have not reached the pending barrier (looked up when silent)
        self._hosts: dict[int, str] = {}
        self._answered = now  # when the store last answered the heartbeat thread
        self._broken: BaseException | None = None
        self._thread: threading.Thread | None = None
        if size > 1:
            # torch's elastic launcher (torchrun, accelerate launch) numbers the machines in GROUP_RANK
            machine = os.environ.get("GROUP_RANK")
            where = f"machine {machine}, host {socket.gethostname()}" if machine else f"host {socket.gethostname()}"
            try:  # the store answered the process group's rendezvous a moment ago
                store.set(f"{PREFIX}/host/{rank}", where)
                store.add(f"{PREFIX}/beat/{rank}", 1)
            except Exception as error:
                raise self._store_lost(str(error)) from error
            self._thread = threading.Thread(target=self._heartbeat, name="parentage-heartbeat", daemon=True)
            self._thread.start()

    # ---------------------------------------------------------------------------------------------- beats
    def _heartbeat(self) -> None:
        """Beat and note when each other process last beat; mark and poll the pending barrier. Until `close`
        or the store fails (the waiting thread reports that)."""
        keys = [f"{PREFIX}/beat/{r}" for r in range(self.size)]
        next_beat = 0.0
        try:
            while not self._stopped:
                if time.monotonic() >= next_beat:
                    self.store.add(keys[self.rank], 1)
                    now = time.monotonic()
                    for r, key in enumerate(keys):
                        count = int(self.store.add(key, 0))
                        with self._lock:
                            if count != self._seen[r][0]:
                                self._seen[r] = (count, now)
                    next_beat = now + self.beat
                pending = self._pending
                if pending > self._passed:
                    self._poll_barrier(pending)
                self._answered = time.monotonic()
                self._wake.wait(POLL if self._pending > self._passed else max(0.0, next_beat - time.monotonic()))
                self._wake.clear()
        except Exception as error:  # the store's host is gone: the waiting barrier reports it
            self._broken = error

    def _poll_barrier(self, number: int) -> None:
        key = f"{PREFIX}/barrier/{number}"
        if self._marked < number:
            self.store.set(f"{key}/{self.rank}", "1")
            self.store.add(key, 1)
            self._marked = number
        if int(self.store.add(key, 0)) >= self.size:
            self._passed = number
            return
        silent = self.silent()
        absent = {r for r in silent if not self.store.check([f"{key}/{r}"])}
        for r in absent - set(self._hosts):
            self._hosts[r] = self.store.get(f"{PREFIX}/host/{r}").decode()
        self._absent = absent

    def silent(self) -> dict[int, float]:
        """{rank: seconds since its last sign of life} of the other processes silent for longer than the
        timeout."""
        now = time.monotonic()
        with self._lock:
            return {r: now - moved for r, (_, moved) in self._seen.items()
                    if r != self.rank and now - moved > self.timeout}

    # ---------------------------------------------------------------------------------------------- barriers
    def barrier(self, what: str) -> None:
        """Wait until every process got here; `what` names the point in errors. Every process must call the
        same barriers in the same order (they are numbered)."""
        if self.size == 1:
            return
        self.count += 1
        self._pending = self.count
        self._wake.set()
        while self._passed < self.count:
            if self._broken is not None:
                raise self._store_lost(str(self._broken)) from self._broken
            quiet = time.monotonic() - self._answered
            if quiet > self.timeout:
                raise self._store_lost(f"no answer for {quiet:.0f} s")
            silent = self.silent()
            lost = sorted(r for r in self._absent if r in silent)
            if lost:
                raise self._lost(lost, silent, what)
            time.sleep(POLL)

    def _lost(self, ranks: list[int], silent: dict[int, float], what: str) -> LostProcess:
        names = ", ".join(f"rank {r} ({self._hosts.get(r, 'host unknown')})" for r in ranks)
        late = max(silent[r] for r in ranks)
        one = len(ranks) == 1
        return LostProcess(f"process {self.rank} of {self.size}",
                           f"lost {names}: no sign of life for {late:.0f} s while waiting for {what}; "
                           f"{'it or its' if one else 'they or their'} machine stopped or is unreachable",
                           f"{TIMEOUT_VARIABLE}={self.timeout:g} s; rerun the same command: what is on disk is "
                           "kept and the run resumes")

    def _store_lost(self, cause: str) -> LostProcess:
        """The store stopped answering: the machine hosting it (machine 0's launcher) is lost."""
        address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        return LostProcess(f"process {self.rank} of {self.size}",
                           f"lost rank 0's machine: the run's store at {address}, which machine 0's launcher hosts, "
                           f"stopped answering ({' '.join(cause.split())[:160]})",
                           f"{TIMEOUT_VARIABLE}={self.timeout:g} s; rerun the same command: what is on disk is "
                           "kept and the run resumes")

    def close(self) -> None:
        """Stop the heartbeat (the others' barriers then see this process as silent: call it after the last
        barrier)."""
        self._stopped = True
        self._wake.set()


_PROCESSES: dict[tuple[int, int], Processes] = {}


def processes(state: Any) -> Processes:
    """The `Processes` of this run for accelerate's `state` (a PartialState or an Accelerator), made once per
    process: every stage in a process shares its barrier count and its heartbeat."""
    rank, size = state.process_index, state.num_processes
    if (rank, size) not in _PROCESSES:
        store = None
        if size > 1:
            from torch.distributed import distributed_c10d

            # the store of the default process group: private in torch, but the one every process already
            # reaches (MASTER_ADDR:MASTER_PORT, hosted by machine 0's launcher), so no second port is needed
            store = distributed_c10d._get_default_store()
        _PROCESSES[rank, size] = Processes(rank, size, store, timeout=lost_timeout())
    return _PROCESSES[rank, size]
