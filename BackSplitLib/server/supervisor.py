"""Keeps the training workers of one machine alive and makes sure no job is silently lost.

``backsplit serve`` (and ``backsplit worker`` with several GPUs) starts one worker process per GPU (one on a
CPU-only machine). A monitor thread restarts a worker that died and settles the job it was running at once:
back to the queue to resume from its last checkpoint, or — after ``MAX_ATTEMPTS`` — failed with the reason.
On start, jobs that a previous server left in ``running`` are settled the same way (SQLite: this is the only
server of the data folder). With a shared database, other machines' jobs are theirs: only leases decide, and
a machine that dies without a word loses its jobs when their leases expire.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from BackSplitLib.server.database import DATABASE_ENV, StoreUnavailable
from BackSplitLib.server.lifetime import WINDOWS, force_kill, pid_alive
from BackSplitLib.server.store import LEASE_S, MAX_ATTEMPTS, Store, worker_name

__all__ = ["MAX_ATTEMPTS", "Supervisor", "describe_exit", "settle_interrupted_job"]
STOP_GRACE_S = 20.0  # a worker gets this long to save a checkpoint on shutdown
MONITOR_S = 0.5


@dataclass
class _Slot:
    index: int
    env: dict
    process: subprocess.Popen | None = None
    started: float = 0.0
    quick_deaths: int = 0
    log: Path | None = None
    restarts: list[float] = field(default_factory=list)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed, e.g. out of memory)" if -code == getattr(signal, "SIGKILL", 9) else ""
        return f"it was killed by {name}{hint}"
    return f"it exited with code {code}"


def settle_interrupted_job(store: Store, job: dict, reason: str) -> str | None:
    """A job whose worker is gone: cancelled if that was asked, else resumed, else failed with the reason
    (the store's rule); None when that worker no longer held it."""
    return store.settle_job(job["id"], reason, worker=job.get("worker"))


class Supervisor:
    """Starts, watches and stops the worker processes of one machine.

    ``gpus``: the device of each worker (CUDA_VISIBLE_DEVICES), e.g. ``["0", "1"]``; without it, one worker
    per GPU when there are several. ``runner``/``lease_s`` are passed to every worker. ``owns_folder``: this
    process is the data folder's only server (``backsplit serve`` on SQLite), so every running job is its."""

    def __init__(self, store: Store, workers: int | None = None, device_count: int = 0,
                 gpus: list[str] | None = None, runner: str = "engine", lease_s: float = LEASE_S,
                 owns_folder: bool = True):
        self.store = store
        self.gpus = gpus
        self.count = workers if workers is not None else (len(gpus) if gpus else max(1, device_count))
        self.device_count = device_count
        self.runner = runner
        self.lease_s = lease_s
        self.owns_folder = owns_folder  # the only server of an SQLite data folder (it holds the folder lock)
        self.slots: list[_Slot] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.recover()
        log_dir = self.store.root / "logs"
        log_dir.mkdir(exist_ok=True)
        for i in range(self.count):
            env = dict(os.environ)
            if self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = self.gpus[i % len(self.gpus)]
            elif self.device_count > 1:  # one GPU per worker
                env["CUDA_VISIBLE_DEVICES"] = str(i % self.device_count)
            if self.store.shared:  # the URL may hold a password: the environment, not argv
                env[DATABASE_ENV] = self.store.url
            slot = _Slot(i, env, log=log_dir / f"worker-{i}.log")
            self.slots.append(slot)
            self._spawn(slot)
        if self.count:
            self._thread = threading.Thread(target=self._monitor, name="backsplit-supervisor", daemon=True)
            self._thread.start()

    def recover(self) -> None:
        """Settle jobs a previous server left running; their worker may still be finishing its iteration.
        With a shared database only expired leases are settled: the other running jobs belong to live
        workers elsewhere."""
        if self.store.shared or not self.owns_folder:
            self.store.expire_leases()
            return
        for job in self.store.running_jobs():
            pid = job.get("worker_pid")
            if pid_alive(pid) and pid != os.getpid():
                _terminate(pid)
                job = self.store.get_job(job["id"], job["project"])
                if job["state"] != "running":
                    continue  # the old worker saved its checkpoint and requeued the job itself
            settle_interrupted_job(self.store, job, "the server stopped")

    def stop(self) -> None:
        """SIGTERM every worker (each saves a checkpoint and requeues its job), then wait, then kill."""
        self._stop.set()
        with self._lock:
            processes = [s.process for s in self.slots if s.process and s.process.poll() is None]
        for p in processes:
            if p.stdin is not None:
                p.stdin.close()  # the portable stop: the worker saves, requeues and exits on EOF
            if not WINDOWS:  # on Windows send_signal(SIGTERM) would terminate it before it saves
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in processes:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for slot in self.slots:
            if slot.process is not None:
                self._settle(slot.process.pid, slot.process.returncode)

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [s.process.pid for s in self.slots if s.process and s.process.poll() is None]

    # ---------------------------------------------------------------- internals
    def _spawn(self, slot: _Slot) -> None:
        log = open(slot.log, "ab")  # noqa: SIM115 (the child keeps its copy; ours closes below)
        try:
            slot.process = subprocess.Popen(
                [sys.executable, "-m", "BackSplitLib.server.worker", "--data", str(self.store.root),
                 "--parent-pid", str(os.getpid()), "--lease-s", str(self.lease_s), "--runner", self.runner],
                # Our end of its stdin pipe closes when this process dies, however it dies: the worker exits.
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=slot.env,
                start_new_session=True,
            )
        finally:
            log.close()
        slot.started = time.monotonic()

    def _settle(self, pid: int, code: int | None) -> None:
        """Settle the job a dead worker of ours held; if the database is away, its lease expiry will."""
        name = worker_name(pid)
        try:
            for job in self.store.running_jobs():
                if job.get("worker") == name or (job.get("worker") is None and job.get("worker_pid") == pid):
                    settle_interrupted_job(self.store, job, describe_exit(code))
        except StoreUnavailable as e:
            print(f"backsplit: could not settle the job of worker {name} ({e}); its lease expiry will",
                  file=sys.stderr, flush=True)

    def _monitor(self) -> None:
        while not self._stop.wait(MONITOR_S):
            for slot in self.slots:
                with self._lock:
                    process = slot.process
                    if process is None or process.poll() is None or self._stop.is_set():
                        continue
                self._settle(process.pid, process.returncode)
                # A worker that keeps dying at once (broken install) is restarted with a growing pause.
                now = time.monotonic()
                slot.restarts = [t for t in slot.restarts if now - t < 60] + [now]
                if len(slot.restarts) > 3 and self._stop.wait(min(30.0, 2.0 ** len(slot.restarts))):
                    return
                with self._lock:
                    if not self._stop.is_set():
                        self._spawn(slot)


def _terminate(pid: int, grace_s: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        force_kill(pid)
