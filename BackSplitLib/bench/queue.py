"""``backsplit bench server --database URL``: the job queue on SQLite and on that database, side by side.

- **Claim latency**: one ``claim_next_job`` transaction (settle expired leases, lock and take the oldest
  queued job), timed in this process for ``jobs`` queued jobs; p50 and p99.
- **Job-row read**: one ``get_job``, what every API process's event stream does every ``EVENT_POLL_S`` per
  followed job (the cost of polling, against which LISTEN/NOTIFY would be weighed); p50 and p99.
- **Tiny-job throughput** with 1, 2 and 4 workers: ``backsplit worker --runner probe`` processes (the
  queue probe: claim, heartbeat, progress, result, no training) drain ``jobs`` one-iteration jobs; jobs/s
  from the first claim to the last result.
- **GET /jobs under load**: 20 concurrent clients each list the jobs (the table then holds every job of the
  run) through a real ``backsplit serve --workers 0``; p50 and p99.

Everything runs on this machine (loopback); a database URL names a server that must already run. Numbers are
printed and saved (``queue_bench.json``, ``queue_report.md``); nothing here asserts a target.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from BackSplitLib.atomic import write_text_atomic
from BackSplitLib.vocabulary import DATABASE_ENV

WORKER_COUNTS = (1, 2, 4)
CLIENTS = 20
REQUESTS_PER_CLIENT = 20
SCHEMA = {"labels": {"background": 0, "lesion": 1}, "target": "lesion"}


def _percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"n": len(ordered), "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


def _add_case(store) -> str:
    staged = store.staging_dir()
    for name in ("image.nii.gz", "label.nii.gz"):
        (staged / name).write_bytes(b"probe")
    return store.add_case(staged, {"name": "probe", "image_file": "image.nii.gz", "label_file": "label.nii.gz",
                                   "schema": SCHEMA, "modality": "CT", "size": [1, 1, 1], "spacing": [1, 1, 1],
                                   "classes": ["background", "lesion"], "target_voxels": 0, "bytes": 0})["id"]


def _claims(store, case: str, jobs: int) -> tuple[dict, dict]:
    ids = [store.add_job("train", [case], None, {"iterations": 1, "auto_promote": False})["id"] for _ in range(jobs)]
    claims, reads = [], []
    for n, job_id in enumerate(ids):
        tic = time.perf_counter()
        store.claim_next_job(n, f"bench:{n}")
        claims.append(time.perf_counter() - tic)
        tic = time.perf_counter()
        store.get_job(job_id)
        reads.append(time.perf_counter() - tic)
        store.finish_job(job_id, "cancelled", worker=f"bench:{n}")
    return _percentiles(claims), _percentiles(reads)


def _throughput(store, case: str, data: Path, database: str | None, workers: int, jobs: int) -> dict:
    """Start ``workers`` probe workers, wait until they are ready, queue ``jobs`` and time the drain."""
    env = {key: value for key, value in os.environ.items() if key != DATABASE_ENV}
    if database is not None:
        env[DATABASE_ENV] = database
    log = data.parent / f"workers-{workers}.log"
    shutil.rmtree(data / "logs", ignore_errors=True)  # several workers: each child logs "ready" there

    def ready() -> int:
        logs = [log, *(data / "logs").glob("worker-*.log")]
        return sum(path.read_text(errors="replace").count(" ready (") for path in logs if path.is_file())

    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "BackSplitLib", "worker", "--data", str(data), "--gpus",
                                    "cpu", "--workers", str(workers), "--runner", "probe"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while ready() < workers:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the probe workers did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        ids = {store.add_job("train", [case], None, {"iterations": 1, "auto_promote": False})["id"]
               for _ in range(jobs)}
        tic = time.perf_counter()
        while True:
            done = [j for j in store.list_jobs() if j["id"] in ids and j["state"] == "succeeded"]
            if len(done) == len(ids):
                break
            if time.perf_counter() - tic > 600:
                raise RuntimeError(f"{len(ids) - len(done)} probe jobs did not finish in 10 minutes")
            time.sleep(0.05)
        first = min(j["started"] for j in done)
        last = max(j["finished"] for j in done)
        wall = max(last - first, 1e-6)
        return {"workers": workers, "jobs": jobs, "seconds": wall, "jobs_per_s": jobs / wall,
                "workers_used": len({(store.job_dir(j["id"]) / "executions.log").read_text().split()[0]
                                     for j in done})}
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _list_under_load(data: Path, database: str | None) -> dict:
    import httpx

    from BackSplitLib.bench.server import running_server

    env = {DATABASE_ENV: database} if database else {}
    with running_server(data, extra_args=("--workers", "0"), env=env) as (url, _, _):
        def client(_: int) -> list[float]:
            times = []
            with httpx.Client(base_url=url, timeout=60) as http:
                for _ in range(REQUESTS_PER_CLIENT):
                    tic = time.perf_counter()
                    http.get("/jobs").raise_for_status()
                    times.append(time.perf_counter() - tic)
            return times

        with ThreadPoolExecutor(CLIENTS) as pool:
            times = [t for batch in pool.map(client, range(CLIENTS)) for t in batch]
    return {"clients": CLIENTS, **_percentiles(times)}


def measure_backend(database: str | None, jobs: int, log: Callable[[str], None]) -> dict:
    from BackSplitLib.server.store import Store

    name = "SQLite" if database is None else "PostgreSQL"
    with tempfile.TemporaryDirectory(prefix="backsplit-queue-bench-") as tmp:
        data = Path(tmp) / "data"
        store = Store(data, database)
        try:
            case = _add_case(store)
            log(f"{name}: claim latency and job-row reads ({jobs} jobs)")
            claim, read = _claims(store, case, jobs)
            result = {"backend": name, "database": store.describe(), "claim": claim, "get_job": read,
                      "throughput": []}
            for workers in WORKER_COUNTS:
                log(f"{name}: {jobs} tiny jobs with {workers} worker{'s' if workers > 1 else ''}")
                result["throughput"].append(_throughput(store, case, data, database, workers, jobs))
            log(f"{name}: GET /jobs, {CLIENTS} concurrent clients")
            result["list_jobs"] = {**_list_under_load(data, database), "rows": len(store.list_jobs())}
        finally:
            store.close()
    return result


def run_queue_bench(out: Path, database: str, jobs: int = 100, log: Callable[[str], None] = print) -> dict:
    from BackSplitLib.bench.quality import _write_json, machine
    from BackSplitLib.server.database import check_url

    check_url(database)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {"machine": machine(), "jobs": jobs,
               "backends": [measure_backend(None, jobs, log), measure_backend(database, jobs, log)]}
    results["wall_s"] = time.perf_counter() - started
    _write_json(out / "queue_bench.json", results)
    write_text_atomic(out / "queue_report.md", "\n".join(queue_markdown(results)) + "\n")
    return results


def queue_rows(results: dict) -> list[tuple[str, ...]]:
    """(measurement, SQLite, PostgreSQL) rows for the rich table and queue_report.md."""
    sqlite, other = results["backends"]
    rows = [("claim p50 / p99 (ms)", *(f"{b['claim']['p50_ms']:.1f} / {b['claim']['p99_ms']:.1f}" for b in (sqlite, other))),
            ("job-row read (event poll) p50 / p99 (ms)",
             *(f"{b['get_job']['p50_ms']:.1f} / {b['get_job']['p99_ms']:.1f}" for b in (sqlite, other)))]
    for i, workers in enumerate(WORKER_COUNTS):
        rows.append((f"tiny jobs/s, {workers} worker{'s' if workers > 1 else ''}",
                     *(f"{b['throughput'][i]['jobs_per_s']:.1f} ({b['throughput'][i]['workers_used']} used)"
                       for b in (sqlite, other))))
    rows.append((f"GET /jobs p50 / p99 (ms), {CLIENTS} clients",
                 *(f"{b['list_jobs']['p50_ms']:.0f} / {b['list_jobs']['p99_ms']:.0f} ({b['list_jobs']['rows']} rows)"
                   for b in (sqlite, other))))
    return rows


def queue_markdown(results: dict) -> list[str]:
    lines = [f"# Job queue: SQLite vs {results['backends'][1]['database']}", "",
             f"{results['jobs']} jobs per measurement; {results['wall_s'] / 60:.1f} min.", "",
             "| measurement | SQLite | PostgreSQL |", "|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in queue_rows(results)]
    return lines
