"""``backsplit worker``: training workers on a GPU machine that sees the job database and the shared data
folder, with no API process there.

The shared folder (NFS, SMB, a cluster file system) must give what the store relies on, and the start-up
checks them before any job is claimed: the folder is the one the database belongs to (``store-id``);
files and folders can be created there; a rename within one folder replaces atomically and is seen at once;
a folder renames across the store's subfolders (a staged upload becomes a case, a finished run becomes a
model), so they must be one file system. It relies on nothing else: no file locks, no shared clock (leases
use the database's clock).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from BackSplitLib.errors import BackSplitError
from BackSplitLib.server.store import LEASE_S, Store, worker_name

STORE_FOLDERS = ("tmp", "cases", "models", "jobs", "exports")


def check_shared_folder(root: Path) -> None:
    """The guarantees of the module docstring, on ``root``; a BackSplitError names the one that failed."""
    hint = "mount the shared data folder at this path on every machine (one file system, read-write)"
    devices = {name: (root / name).stat().st_dev for name in STORE_FOLDERS if (root / name).is_dir()}
    if len(set(devices.values())) > 1:
        raise BackSplitError(f"the data folder {root} spans several file systems ({', '.join(sorted(devices))}): "
                             "renames between them would not be atomic", hint)
    probe = root / "tmp" / f"probe-{worker_name().replace(':', '-')}-{uuid.uuid4().hex[:8]}"
    step = "create a folder"
    try:
        probe.mkdir(parents=True)
        step = "write a file"
        first, second = probe / "first", probe / "second"
        for path, text in ((first, "new"), (second, "old")):
            with open(path, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        step = "rename a file over another within one folder"
        os.replace(first, second)
        if first.exists() or second.read_text() != "new":
            raise BackSplitError(f"the data folder {root} does not rename atomically: after replacing a file, the "
                                 "old name or the old content is still visible", hint)
        step = "rename a folder between the store's subfolders"
        moved = root / "models" / f".{probe.name}"
        os.replace(probe, moved)
        probe = moved
        if not (moved / "second").is_file():
            raise BackSplitError(f"the data folder {root} lost a folder's content when renaming it", hint)
    except OSError as e:
        raise BackSplitError(f"the data folder {root} failed a start-up check: could not {step} ({e.strerror or e})",
                             hint) from None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def parse_gpus(gpus: str | None) -> list[str] | None:
    """``0,1`` -> ["0", "1"]; ``cpu`` -> [] (CPU workers); None -> every GPU torch sees ([] without one)."""
    if gpus is None:
        try:
            import torch

            return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
        except ImportError:
            return []
    if gpus.strip().lower() == "cpu":
        return []
    names = [g.strip() for g in gpus.split(",") if g.strip()]
    if not names or not all(g.isdigit() for g in names) or len(set(names)) != len(names):
        raise BackSplitError(f"--gpus {gpus!r} is not a list of GPU numbers", "e.g. --gpus 0,1, or --gpus cpu")
    return names


def run_workers(data: Path, database: str | None, gpus: str | None = None, workers: int | None = None,
                lease_s: float = LEASE_S, runner: str = "engine", echo: Callable[[str], None] = print) -> None:
    """Check the folder, then run one worker per GPU (or ``workers`` CPU workers) until SIGTERM / Ctrl-C.

    One worker runs in this process (a kill of this process is a kill of the worker: its lease expires);
    several run as child processes under a Supervisor, which restarts one that dies."""
    from BackSplitLib.server.supervisor import Supervisor
    from BackSplitLib.server.worker import RUNNERS, Worker, serve

    data = Path(data)
    if not (data / "cases").is_dir():
        raise BackSplitError(f"{data} is not a BackSplit data folder (no cases/ in it)",
                             "start 'backsplit serve' with this folder once, and mount it on this machine")
    os.umask(0o077)
    store = Store(data, database)
    check_shared_folder(store.root)
    devices = parse_gpus(gpus)
    count = len(devices) if devices else (workers or 1)
    where = f"GPUs {','.join(devices)}" if devices else "CPU"
    echo(f"backsplit worker: {count} worker{'s' if count > 1 else ''} on {where}; data {data}, jobs in "
         f"{store.describe()}; shared-folder checks passed")
    if count == 1:
        if devices:
            os.environ["CUDA_VISIBLE_DEVICES"] = devices[0]
        serve(Worker(store, run_job=RUNNERS[runner](), lease_s=lease_s), watch_parent=False,
              preload=runner == "engine")
        return
    supervisor = Supervisor(store, workers=count, gpus=devices or None, runner=runner, lease_s=lease_s,
                            owns_folder=False)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    supervisor.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        supervisor.stop()
