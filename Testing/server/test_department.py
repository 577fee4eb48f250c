"""A department on one machine: API processes and `backsplit worker` processes sharing one PostgreSQL
database and one data folder, as they would across machines (loopback and one file system here).

The exactly-once and outage tests run the queue probe (``--runner probe``: the queue, leases, progress and
results without training, so 100 jobs take seconds); the kill -9 test trains with the real engine."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from department_harness import WorkerProcess
from postgres_harness import PostgresCluster, postgres_missing
from server_harness import FAST_JOB, ServerProcess, wait_for

from BackSplitLib.vocabulary import DATABASE_ENV

pytestmark = pytest.mark.skipif(postgres_missing() is not None, reason=str(postgres_missing()))


@pytest.fixture
def department(tmp_path, postgres):
    url = postgres.new_database()
    data, token = tmp_path / "data", tmp_path / "token"
    processes = []

    def api() -> ServerProcess:
        processes.append(ServerProcess(data, token, workers=0, env={DATABASE_ENV: url}))
        return processes[-1].start()

    def worker(name: str, **options) -> WorkerProcess:
        processes.append(WorkerProcess(data, url, name, **options))
        return processes[-1].start()

    yield SimpleNamespace(url=url, data=data, api=api, worker=worker)
    for process in reversed(processes):
        process.stop()


def job_rows(url: str) -> dict[str, dict]:
    """The jobs table as the database holds it (the API does not show workers)."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as db:
        return {row["id"]: row for row in db.execute("SELECT id, state, worker, attempts, iteration FROM jobs")}


def test_100_jobs_from_10_clients_through_two_apis_run_exactly_once_and_events_reach_either_api(
        department, phantom_cases):
    first, second = department.api(), department.api()
    workers = [department.worker(f"worker{i}") for i in range(3)]
    case = first.client().upload_case(phantom_cases[0].image, phantom_cases[0].label, phantom_cases[0].schema)["id"]

    # Progress of a job submitted through one API process, followed through the other.
    followed = first.client().create_job("train", [case], iterations=60, auto_promote=False, **FAST_JOB)
    seen = []
    final = second.client().wait(followed["id"], on_event=lambda name, data: seen.append((name, data["iteration"])))
    assert final["state"] == "succeeded" and final["iteration"] == 60
    assert [i for name, i in seen if name == "progress"][-1] == 60 and len(seen) > 3

    def submit(client_number: int) -> list[str]:
        client = (first, second)[client_number % 2].client()
        return [client.create_job("train", [case], iterations=3, auto_promote=False, **FAST_JOB)["id"]
                for _ in range(10)]

    with ThreadPoolExecutor(10) as pool:
        ids = [job for batch in pool.map(submit, range(10)) for job in batch]
    assert len(set(ids)) == 100
    wait_for(lambda: all(j["state"] in ("succeeded", "failed", "cancelled") for j in second.client().list_jobs()),
             timeout=240, every=1.0, what="100 jobs to end")
    jobs = {j["id"]: j for j in first.client().list_jobs()}
    executions = {job: (department.data / "jobs" / job / "executions.log").read_text().splitlines() for job in ids}
    assert {job: len(lines) for job, lines in executions.items()} == {job: 1 for job in ids}  # none twice, none lost
    assert all(jobs[job]["state"] == "succeeded" and jobs[job]["attempts"] == 1 for job in ids)
    assert len({jobs[job]["model_id"] for job in ids}) == 100
    ran_on = {lines[0].split()[0] for lines in executions.values()}
    assert ran_on <= {w.worker_name for w in workers} and len(ran_on) >= 2  # the work was shared


def test_a_killed_workers_job_resumes_elsewhere_from_its_checkpoint_and_matches_an_uninterrupted_run(
        department, phantom_cases):
    from safetensors.numpy import load_file

    api = department.api()
    client = api.client()
    cases = [client.upload_case(c.image, c.label, c.schema)["id"] for c in phantom_cases]
    workers = {w.worker_name: w for w in (department.worker(f"engine{i}", runner="engine") for i in range(2))}
    settings = dict(iterations=12, auto_promote=False, seed=5, **FAST_JOB)
    job = client.create_job("train", cases, **settings)

    def holder_after_a_checkpoint():
        row = job_rows(department.url)[job["id"]]
        assert row["state"] in ("queued", "running"), row
        return row["iteration"] >= 4 and row["worker"]

    victim = workers[wait_for(holder_after_a_checkpoint, timeout=120, every=0.05, what="a checkpoint")]
    victim.kill()
    resumed = wait_for(lambda: (j := client.get_job(job["id"]))["state"] in ("succeeded", "failed") and j,
                       timeout=180, every=0.5, what="the job to finish on the other worker")
    assert (resumed["state"], resumed["attempts"], resumed["iteration"]) == ("succeeded", 2, 12), resumed
    log = (department.data / "jobs" / job["id"] / "worker.log").read_text()
    assert "attempt 2 started (resume=True" in log and victim.worker_name not in log.split("attempt 2")[1]

    reference = client.wait(client.create_job("train", cases, **settings)["id"])  # the same job, uninterrupted
    assert reference["state"] == "succeeded"
    weights = [load_file(department.data / "models" / j["model_id"] / "model.safetensors") for j in (resumed, reference)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:  # resume is exact: every batch comes from (seed, iteration); float tolerance only
        np.testing.assert_allclose(weights[0][name], weights[1][name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_while_postgres_is_down_the_api_answers_503_and_the_running_job_finishes(tmp_path, phantom_cases):
    cluster = PostgresCluster().init().start()
    api = worker = None
    try:
        url = cluster.new_database()
        data = tmp_path / "data"
        api = ServerProcess(data, tmp_path / "token", workers=0, env={DATABASE_ENV: url}).start()
        worker = WorkerProcess(data, url, "worker", lease_s=30).start()
        client = api.client()
        case = client.upload_case(phantom_cases[0].image, phantom_cases[0].label, phantom_cases[0].schema)["id"]
        job = client.create_job("train", [case], iterations=150, auto_promote=False, **FAST_JOB)  # ~3 s
        wait_for(lambda: client.get_job(job["id"])["iteration"] >= 10, timeout=60, what="the job to run")

        cluster.stop()
        down_since = time.monotonic()
        answers = []
        with api.http() as http:
            while time.monotonic() - down_since < 6:  # the job ends meanwhile: its result must wait
                for response in (http.get("/health"), http.get("/jobs"), http.get(f"/jobs/{job['id']}"),
                                 http.post("/jobs", json={"kind": "train", "cases": [case], "iterations": 2})):
                    answers.append((response.status_code, response.json()["detail"],
                                    response.headers.get("retry-after")))
                time.sleep(0.5)
        assert {status for status, _, _ in answers} == {503}, answers
        assert all("job database is not reachable" in detail and after == "5" for _, detail, after in answers)
        cluster.start()

        final = wait_for(lambda: (j := client.get_job(job["id"]))["state"] != "running" and j, timeout=90,
                         every=0.5, what="the job to finish after the database came back")
        assert (final["state"], final["attempts"], final["iteration"]) == ("succeeded", 1, 150), final
        assert client.get_model(final["model_id"])["job_id"] == job["id"]
        log = (data / "jobs" / job["id"] / "worker.log").read_text()
        assert "could not publish the model" in log and "retrying" in log  # waited for the database, then did
        assert len((data / "jobs" / job["id"] / "executions.log").read_text().splitlines()) == 1
        assert httpx.get(f"{api.url}/health", timeout=10).json()["queue_length"] == 0
    finally:
        for process in (worker, api):
            if process is not None:
                process.stop()
        cluster.remove()
