"""``backsplit bench server``: what going through the server costs, measured against a real ``backsplit serve``.

- **Prediction**: ``POST /predict`` through :class:`BackSplitClient` vs ``Predictor.predict_file`` in this
  process, same model (trained on the server, downloaded with the client, loaded with
  ``Predictor.from_run``), same volume file in and a mask file out on both sides. The two are interleaved
  per repeat so machine load drifts hit both alike; the reported ratio is the median of the per-repeat
  ratios (target <= 1.2). The first server request (it loads the model) is measured apart, untimed in the
  ratio, as is the in-process warm-up.
- **Upload**: ``POST /cases`` of the volume and its label (uncompressed NIfTI, so gzip does not hide the
  transfer) on loopback, in MB/s (10^6 bytes) of file payload; it includes the server's validation,
  which is what a user waits for.
- **Fine-tune latency**: seconds from ``POST /jobs`` (finetune) to the first ``progress`` event with an
  iteration done, read from the job's event stream as a client sees it; each job is then cancelled.
- **Hostile inputs** (``hostile.py``): every hostile request of issue 9 posted once; how many were
  refused (4xx), stored (2xx) or failed (5xx), the API process's peak resident memory above idle (the
  kernel's VmHWM), and 300 idle sockets held open: does /health answer, when has the server closed them.

The server runs as its own process (``python -m BackSplitLib serve --no-auth`` on 127.0.0.1, a free port),
with its training worker, exactly as in production, and is always stopped at the end. Numbers are printed
and saved (``server_bench.json``, ``server_report.md``); nothing here asserts a target.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BackSplitLib.atomic import write_text_atomic
from BackSplitLib.bench import torch_threads
from BackSplitLib.bench.hostile import measure_hostile
from BackSplitLib.bench.stats import meets
from BackSplitLib.client import TERMINAL_STATES, BackSplitClient, BackSplitClientError
from BackSplitLib.errors import BackSplitError

TARGETS = {"predict_ratio": ("<=", 1.2)}
DEFAULT_SHAPE: tuple[int, int, int] = (64, 128, 128)  # (z, y, x): the 128x128x64 volume
MAX_PATCH = 64  # training / sliding-window patch edge; smaller where the volume is smaller
START_TIMEOUT_S = 180.0  # the server imports torch and starts its worker: slow on two busy cores
STOP_TIMEOUT_S = 40.0


class ServerBenchError(BackSplitError):
    """The server benchmark cannot run (the server does not start, a job fails, a bad option)."""


@dataclass
class ServerBenchSettings:
    """Sizes and repeat counts; the defaults take a few minutes on 2 CPU cores."""

    shape: tuple[int, int, int] = DEFAULT_SHAPE  # phantom (z, y, x)
    repeats: int = 5
    iterations: int = 4  # training budget of the tiny model (and of each timed fine-tune, cancelled early)
    threads: int | None = None  # torch CPU threads here and in the server (None: torch's default)
    seed: int = 0


def parse_shape(text: str) -> tuple[int, int, int]:
    """'z,y,x' -> (z, y, x), each at least 16 voxels (the smallest patch edge)."""
    try:
        shape = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 16:
        raise ServerBenchError(f"cannot use volume shape '{text}'", "give z,y,x with each at least 16, e.g. 64,128,128")
    return shape  # type: ignore[return-value]


def patch_for(shape: tuple[int, int, int]) -> list[int]:
    """The trainer's (x, y, z) patch: up to MAX_PATCH, a multiple of 16 that fits the volume, so windows
    never need padding and the UNet's three stride-2 levels divide it."""
    z, y, x = shape
    return [min(MAX_PATCH, d // 16 * 16) for d in (x, y, z)]


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ the server process
@dataclass
class _Server:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def _server_env(threads: int | None) -> dict[str, str]:
    """The server's environment: the same torch thread count as here, so the comparison is fair."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _wait_healthy(server: _Server, timeout: float) -> dict:
    """Poll GET /health until it answers; fail with the server's log when it exits or never answers."""
    probe = BackSplitClient(server.url, timeout=10, retries=0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerBenchError(f"the benchmark server exited with code {server.process.returncode} while "
                                   f"starting: {server.log_tail()}")
        try:
            return probe.health()
        except BackSplitClientError:
            time.sleep(0.2)
    raise ServerBenchError(f"the benchmark server did not answer /health within {timeout:.0f} s: {server.log_tail()}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (the server stops its workers), then SIGKILL to the server's own process group."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the group is only it and its workers
        except ProcessLookupError:
            pass
        process.wait()


@contextmanager
def running_server(data: Path, threads: int | None = None, timeout: float = START_TIMEOUT_S,
                   extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None
                   ) -> Iterator[tuple[str, dict, int]]:
    """A ``backsplit serve --no-auth`` subprocess on 127.0.0.1 and a free port; yields (url, health, pid).
    ``extra_args``/``env``: more options and environment (e.g. ``--workers 0``, the database URL).
    The process is stopped whatever happens inside the block."""
    port = _free_port()
    log_path = data.parent / f"{data.name}-server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "BackSplitLib", "serve", "--data", str(data), "--host", "127.0.0.1",
             "--port", str(port), "--no-auth", *extra_args],
            stdout=log, stderr=subprocess.STDOUT, env={**_server_env(threads), **(env or {})},
            start_new_session=True)
    server = _Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        health = _wait_healthy(server, timeout)
        yield server.url, health, process.pid
    finally:
        _stop(process)


# ------------------------------------------------------------------------------ measurements
@dataclass
class _Case:
    image: Path
    label: Path

    @property
    def bytes(self) -> int:
        return self.image.stat().st_size + self.label.stat().st_size


def write_volume(folder: Path, shape: tuple[int, int, int], seed: int) -> _Case:
    """The phantom volume and its label as uncompressed NIfTI (gzip would dominate a loopback upload)."""
    from BackSplitLib.phantom import make_phantom

    image, label = make_phantom(seed, shape=shape)
    folder.mkdir(parents=True, exist_ok=True)
    case = _Case(folder / "bench_0000.nii", folder / "bench.nii")
    sitk.WriteImage(image, str(case.image))
    sitk.WriteImage(label, str(case.label))
    return case


def measure_upload(client: BackSplitClient, case: _Case, repeats: int) -> tuple[dict, str]:
    """Time ``repeats`` uploads of the case; keeps the first (for training), deletes the others."""
    from BackSplitLib.phantom import PHANTOM_SCHEMA

    seconds, kept = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        uploaded = client.upload_case(case.image, case.label, PHANTOM_SCHEMA)
        seconds.append(time.perf_counter() - start)
        if kept is None:
            kept = uploaded["id"]
        else:
            client.delete_case(uploaded["id"])
    median_s = _median(seconds)
    return {"bytes": case.bytes, "seconds": seconds, "median_s": median_s,
            "mb_per_s": case.bytes / 1e6 / median_s}, kept


def _job_params(iterations: int, patch: list[int]) -> dict:
    """No validation pass, batch 1, one checkpoint at the end: a tiny model in seconds."""
    return {"iterations": iterations, "val_every": iterations, "batch_size": 1, "patch_size": patch,
            "val_fraction": 0.0}


def train_tiny_model(client: BackSplitClient, case_id: str, iterations: int, patch: list[int]) -> dict:
    """Train the model both sides will predict with; returns the finished job."""
    start = time.perf_counter()
    job = client.create_job("train", cases=[case_id], auto_promote=True, **_job_params(iterations, patch))
    final = client.wait(job["id"])
    if final.get("state") != "succeeded" or not final.get("model_id"):
        raise ServerBenchError(f"training the benchmark model on the server ended '{final.get('state')}': "
                               f"{final.get('error') or 'no reason given'}")
    return {"model_id": final["model_id"], "iterations": iterations, "seconds": time.perf_counter() - start}


def _until_ended(client: BackSplitClient, job_id: str) -> None:
    for event, data in client.events(job_id):
        if event == "state" and data.get("state") in TERMINAL_STATES:
            return


def finetune_latency(client: BackSplitClient, case_id: str, model_id: str, iterations: int,
                     patch: list[int]) -> float:
    """Seconds from POST /jobs (finetune) to the first progress event with an iteration done; the job is
    then cancelled and followed to its end, so the next one does not queue behind it."""
    start = time.perf_counter()
    job = client.create_job("finetune", cases=[case_id], base_model=model_id, auto_promote=False,
                            **_job_params(iterations, patch))
    seconds = None
    for event, data in client.events(job["id"]):
        if event == "progress" and data.get("iteration", 0) >= 1:
            seconds = time.perf_counter() - start
            break
        if event == "state" and data.get("state") in TERMINAL_STATES:
            break
    if seconds is None:
        final = client.get_job(job["id"])
        raise ServerBenchError(f"the fine-tune job ended '{final['state']}' without a progress event: "
                               f"{final.get('error') or 'no reason given'}")
    try:
        client.cancel_job(job["id"])
    except BackSplitClientError as e:
        if e.status != 409:  # 409: the job ended on its own before the cancel reached it
            raise
    _until_ended(client, job["id"])
    return seconds


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _same_mask(a: Path, b: Path) -> bool:
    return bool(np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(a))),
                               sitk.GetArrayFromImage(sitk.ReadImage(str(b)))))


def compare_prediction(client: BackSplitClient, run_dir: Path, image: Path, work: Path, repeats: int) -> dict:
    """Server vs in-process prediction of the same file with the same model, interleaved per repeat."""
    from BackSplitLib.inference import Predictor

    predictor = Predictor.from_run(run_dir, device="auto")  # the server's own choice (its /predict cache)
    remote_out, local_out = work / "remote", work / "local"
    for folder in (remote_out, local_out):
        folder.mkdir(parents=True, exist_ok=True)
    # A folder, so the file keeps the server's name and extension (it may gzip what it sends back).
    first_request_s = _timed(lambda: client.predict(image, remote_out))  # the server loads the model here
    warmup_local_s = _timed(lambda: predictor.predict_file(image, local_out))
    server_s, local_s = [], []
    for _ in range(repeats):
        server_s.append(_timed(lambda: client.predict(image, remote_out)))
        local_s.append(_timed(lambda: predictor.predict_file(image, local_out)))
    remote_file = next(p for p in remote_out.iterdir() if p.is_file())
    local_file = next(p for p in local_out.iterdir() if p.is_file())
    ratios = [s / max(l, 1e-9) for s, l in zip(server_s, local_s)]
    return {"server_s": server_s, "in_process_s": local_s, "server_median_s": _median(server_s),
            "in_process_median_s": _median(local_s), "predict_ratio": _median(ratios),
            "server_first_request_s": first_request_s, "in_process_warmup_s": warmup_local_s,
            "device": str(predictor.device), "masks_identical": _same_mask(remote_file, local_file)}


# ------------------------------------------------------------------------------ everything
def run_server_bench(out: Path, settings: ServerBenchSettings | None = None,
                     log: Callable[[str], None] = print) -> dict:
    """Start a server, run every measurement, write ``server_bench.json`` and ``server_report.md``."""
    settings = settings or ServerBenchSettings()
    with torch_threads(settings.threads):
        return _run(out, settings, log)


def _run(out: Path, settings: ServerBenchSettings, log: Callable[[str], None]) -> dict:
    from BackSplitLib.bench.quality import _write_json, machine

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    patch = patch_for(settings.shape)
    results: dict = {"settings": {**asdict(settings), "patch_size_xyz": patch}, "machine": machine(),
                     "targets": TARGETS}
    with tempfile.TemporaryDirectory(prefix="backsplit-server-bench-") as tmp:
        work = Path(tmp)
        case = write_volume(work / "volume", settings.shape, settings.seed)
        log(f"starting a server (loopback, --no-auth); volume {'x'.join(map(str, settings.shape[::-1]))} "
            f"(x, y, z), patch {patch}")
        with running_server(work / "data", settings.threads) as (url, health, pid):
            client = BackSplitClient(url, timeout=600)
            results["server"] = {"version": health.get("version"), "device": health.get("device"),
                                 "workers": health.get("workers")}
            log("hostile inputs: refused, stored, peak API memory, idle sockets held")
            results["hostile"] = measure_hostile(url, pid, case.image.read_bytes(), case.label.read_bytes())
            log("upload throughput")
            results["upload"], case_id = measure_upload(client, case, settings.repeats)
            log(f"training the tiny model ({settings.iterations} iterations)")
            results["train"] = train_tiny_model(client, case_id, settings.iterations, patch)
            log("fine-tune: seconds to the first progress event")
            latencies = [finetune_latency(client, case_id, results["train"]["model_id"], settings.iterations, patch)
                         for _ in range(settings.repeats)]
            results["finetune"] = {"seconds_to_first_progress": latencies, "median_s": _median(latencies)}
            log("prediction: server vs in-process")
            run_dir = client.download_model(results["train"]["model_id"], work / "model")
            results["predict"] = compare_prediction(client, run_dir, case.image, work / "predict", settings.repeats)
    results["wall_s"] = time.perf_counter() - started
    _write_json(out / "server_bench.json", results)
    write_text_atomic(out / "server_report.md", "\n".join(server_markdown(results)) + "\n")
    return results



def server_rows(results: dict) -> list[tuple[str, str, str]]:
    """(measurement, value, ratio or rate) rows shared by the rich table and server_report.md."""
    p, u, f = results["predict"], results["upload"], results["finetune"]
    z, y, x = results["settings"]["shape"]
    return [
        (f"predict {x}x{y}x{z}: server / in-process",
         f"{p['server_median_s']:.2f} s / {p['in_process_median_s']:.2f} s", meets(TARGETS, "predict_ratio", p["predict_ratio"])),
        ("predict: server's first request (loads the model)", f"{p['server_first_request_s']:.2f} s",
         "masks identical" if p["masks_identical"] else "masks DIFFER"),
        ("upload image + label (uncompressed NIfTI)", f"{u['bytes'] / 1e6:.1f} MB in {u['median_s']:.3f} s",
         f"{u['mb_per_s']:.1f} MB/s"),
        ("fine-tune -> first progress event", f"{f['median_s']:.2f} s", ""),
        *hostile_rows(results.get("hostile")),
    ]


def hostile_rows(h: dict | None) -> list[tuple[str, str, str]]:
    if not h:
        return []
    s = h["idle_sockets"]
    peak = "n/a" if h["peak_rss_above_idle_mib"] is None else f"{h['peak_rss_above_idle_mib']:.0f} MiB"
    return [(f"hostile inputs: tried / refused (4xx) / stored / 5xx",
             f"{h['tried']} / {h['refused']} / {h['stored']} / {h['server_errors']}",
             f"peak API memory above idle {peak} (< 1024 MiB)"),
            (f"idle sockets held ({s['held']})",
             f"/health {'answered' if s['health_ok_while_held'] else 'FAILED'} in {s['health_s_while_held']:.2f} s",
             f"all closed by the server after {s['closed_after_s']:.1f} s" if s["all_closed_by_server"]
             else "NOT all closed")]


def server_markdown(results: dict) -> list[str]:
    m, s = results["machine"], results["settings"]
    lines = ["# BackSplit benchmark: server", "",
             f"Machine: {m['processor']}, {m['cpu_count']} CPUs{', ' + m['cuda'] if m.get('cuda') else ' (no GPU)'}, "
             f"torch {m['torch']} with {m['torch_threads']} threads, load average at start "
             f"{m.get('load_average_at_start')}. Server {results['server']['version']} on 127.0.0.1 "
             f"(device {results['server']['device']}). Medians of {s['repeats']} repeats; the prediction ratio "
             f"is the median of per-repeat ratios (server and in-process interleaved). Tiny model: "
             f"{s['iterations']} iterations, patch {s['patch_size_xyz']}. Wall time {results['wall_s'] / 60:.1f} min.",
             "", "| measurement | value | ratio / rate (target) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in server_rows(results)]
    return lines
