"""Helpers for the server tests: tiny phantom cases on disk and real `backsplit serve` processes.

The server runs as its own process (uvicorn on 127.0.0.1, a free port) with its training worker, exactly
as in production; tests talk to it over real HTTP through the standard-library client or httpx.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import SimpleITK as sitk

from BackSplitLib.bench.hostile import multipart, raw_exchange  # noqa: F401 (the tests' raw HTTP builders)
from BackSplitLib.client import BackSplitClient
from BackSplitLib.dataset import CaseFiles
from BackSplitLib.schema import LabelSchema

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # keep torch on the CPU in the server and its worker
SHAPE = (24, 40, 48)  # (z, y, x): tiny, so a few iterations take seconds on two cores
# Small enough that the engine trains in seconds on two busy cores (no validation pass, batch 1); passed
# through POST /jobs to TrainConfig. Checkpoints still happen every ``val_every`` iterations. Not smaller
# patches: prediction slides the training patch over the volume, and 16^3 windows make it ~30x slower.
FAST_JOB = {"val_every": 2, "batch_size": 1, "patch_size": [32, 32, 16], "val_fraction": 0.0}
STRICT_MAX_IMAGE = "64M"  # the strict server's --max-image-size: bombs are refused well below 1 GiB
STRICT_DECODE_BUDGET = "128M"  # one case at the image limit (64 MiB float32 + a 16 MiB label) at a time
STRICT_MAX_JOB_WORK = "2000000000"  # iterations x batch x patch voxels: 1000 x 2 x 64^3 fits
MAX_UPLOAD = "24M"  # phantom cases are ~100 KiB, a tiny model zip ~17 MiB; the oversize test sends more


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM (the server or worker saves a checkpoint and requeues its job), then SIGKILL after ``timeout``."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class ServerProcess:
    """A `backsplit serve` subprocess; ``start`` waits until /health answers."""

    data: Path
    token_file: Path
    workers: int = 1
    max_upload: str = MAX_UPLOAD
    port: int = 0
    process: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()  # more `backsplit serve` options (limits, timeouts)
    env: dict[str, str] | None = None  # extra environment variables (e.g. BACKSPLIT_TOKEN)
    open_files: tuple[int, int] | None = None  # (soft, hard) RLIMIT_NOFILE the server starts with

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.port = free_port()
        log = open(self.data.parent / f"{self.data.name}-server.log", "ab")  # noqa: SIM115
        limits = self.open_files

        def preexec() -> None:
            if limits is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, limits)

        self.process = subprocess.Popen(
            [sys.executable, "-m", "BackSplitLib", "serve", "--data", str(self.data), "--port", str(self.port),
             "--token-file", str(self.token_file), "--workers", str(self.workers), "--max-upload", self.max_upload,
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(self.env or {})},
            preexec_fn=preexec if limits is not None else None)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=30).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()  # never leave a server running behind a failed fixture
        raise RuntimeError(f"server did not start in {timeout} s: {self.log()}")

    def stop(self) -> None:
        stop_process(self.process, timeout=40)

    def memory_kib(self, field: str = "VmRSS") -> int:
        """The server process's resident memory (VmRSS) or its peak (VmHWM), as the kernel reports it."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.process.pid}/status")

    def reset_peak_memory(self) -> None:
        """Start a new VmHWM measurement (Linux: writing 5 to clear_refs resets the peak resident size)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def log(self) -> str:
        path = self.data.parent / f"{self.data.name}-server.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def client(self) -> BackSplitClient:
        return BackSplitClient(self.url, self.token, timeout=60)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)


# ---------------------------------------------------------------------- cases on disk
def _subset_schema_label(label: np.ndarray, full: LabelSchema, keep: list[str]) -> tuple[np.ndarray, LabelSchema]:
    """The label as a partially labelled case would have it: only ``keep`` auxiliary classes."""
    sub = LabelSchema.from_names(full.target, keep)
    return sub.relabel(label, full, drop_missing=True), sub


def write_case(folder: Path, seed: int, keep: list[str] | None = None, ext: str = ".nii.gz") -> CaseFiles:
    """A phantom case; ``keep`` limits the auxiliary classes (None: all of PHANTOM_SCHEMA)."""
    from BackSplitLib.phantom import PHANTOM_SCHEMA, make_phantom

    image, label = make_phantom(seed, shape=SHAPE)
    schema = PHANTOM_SCHEMA
    if keep is not None:
        values, schema = _subset_schema_label(sitk.GetArrayFromImage(label), PHANTOM_SCHEMA, keep)
        sub = sitk.GetImageFromArray(values)
        sub.CopyInformation(label)
        label = sub
    folder.mkdir(parents=True, exist_ok=True)
    paths = CaseFiles.with_schema(f"case{seed}", folder / f"case{seed}_0000{ext}", folder / f"case{seed}{ext}", schema)
    sitk.WriteImage(image, str(paths.image), True)
    sitk.WriteImage(label, str(paths.label), True)
    return paths


def stored(server: ServerProcess) -> tuple[int, set[str], list[str]]:
    """What the server holds: case rows, case folders, staging leftovers."""
    with server.http() as http:
        rows = len(http.get("/cases").json())
    return rows, {p.name for p in (server.data / "cases").iterdir()}, [p.name for p in (server.data / "tmp").iterdir()]


def case_form(case: CaseFiles, image: Path | None = None, label: Path | None = None, schema: str | None = None) -> tuple:
    """(files, data) of a POST /cases for ``case``, with the image, label or schema replaced when given."""
    image, label = image or case.image, label or case.label
    files = {"image": (image.name, image.read_bytes()), "label": (label.name, label.read_bytes())}
    return files, {"schema": schema if schema is not None else json.dumps(case.schema.to_dict())}


def wait_for(predicate, timeout: float = 60.0, every: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
