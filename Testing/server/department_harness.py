"""Processes of a department set-up on one machine: `backsplit worker` processes beside `backsplit serve`
processes (server_harness), all on one PostgreSQL database (postgres_harness) and one data folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from BackSplitLib.vocabulary import DATABASE_ENV
from server_harness import stop_process


@dataclass
class WorkerProcess:
    """A `backsplit worker --gpus cpu` process (one worker, in that process); ``start`` waits until it is ready."""

    data: Path
    database: str
    name: str
    lease_s: float = 3.0
    runner: str = "probe"
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.data.parent / f"{self.name}.log"

    def start(self, timeout: float = 90.0) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "BackSplitLib", "worker", "--data", str(self.data), "--gpus", "cpu",
             "--lease", str(self.lease_s), "--runner", self.runner],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, DATABASE_ENV: self.database})
        log.close()
        deadline = time.monotonic() + timeout
        while "ready" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not start: {self.log()}")
            time.sleep(0.1)
        return self

    @property
    def worker_name(self) -> str:
        import socket

        return f"{socket.gethostname()}:{self.process.pid}"

    def kill(self) -> None:
        """kill -9: no checkpoint, no requeue, no last word; only its lease can tell."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        stop_process(self.process, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""
