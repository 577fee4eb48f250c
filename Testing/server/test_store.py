"""The store and its job queue, one suite run on both backends (SQLite and PostgreSQL): rows, conflicts,
claims under concurrency, leases (renew, expire, resume, attempt limit), cancel from another process, and a
worker that lost its lease being unable to touch the job."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect

from BackSplitLib.server.database import metadata
from BackSplitLib.server.store import MAX_ATTEMPTS, Conflict, LeaseLost, NotFound, Store

SCHEMA = {"labels": {"background": 0, "liver": 1, "lesion": 2}, "target": "lesion"}


@pytest.fixture
def store(tmp_path, database_url) -> Store:
    store = Store(tmp_path / "data", database_url)
    yield store
    store.close()


def add_case(store: Store, name: str = "case1") -> str:
    staged = store.staging_dir()
    (staged / "image.nii.gz").write_bytes(b"image")
    (staged / "label.nii.gz").write_bytes(b"label")
    return store.add_case(staged, {"name": name, "image_file": "image.nii.gz", "label_file": "label.nii.gz",
                                   "schema": SCHEMA, "modality": "CT", "size": [4, 4, 4], "spacing": [1.0, 1.0, 1.0],
                                   "classes": ["background", "lesion"], "target_voxels": 3, "bytes": 2**33})["id"]


def run_folder(tmp_path: Path, name: str = "run") -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "model.json").write_text("{}")
    return run


def test_the_migrated_schema_is_the_schema_the_code_queries(store):
    with store.engine.connect() as db:
        found = {t: {c["name"] for c in inspect(db).get_columns(t)} for t in metadata.tables}
    assert found == {name: {c.name for c in table.columns} for name, table in metadata.tables.items()}


def test_cases_jobs_and_models_round_trip(store, tmp_path):
    case = add_case(store)
    assert store.get_case(case)["bytes"] == 2**33 and store.get_case(case)["schema"] == SCHEMA
    job = store.add_job("train", [case], None, {"iterations": 4, "seed": 1})
    assert (job["state"], job["total_iterations"], job["params"]) == ("queued", 4, {"iterations": 4, "seed": 1})
    assert store.queue_length() == 1
    claimed = store.claim_next_job(123, "host-a:123")
    assert (claimed["id"], claimed["state"], claimed["attempts"], claimed["worker"]) == (job["id"], "running", 1, "host-a:123")
    assert store.claim_next_job(124, "host-b:124") is None
    assert store.update_progress(job["id"], "host-a:123", iteration=2, loss=0.5, val_dice=None)
    model = store.register_model(run_folder(tmp_path), schema=SCHEMA, metrics={"best_val_dice": 0.4}, parent=None,
                                 case_ids=[case], source="train", job_id=job["id"], worker="host-a:123")
    done = store.get_job(job["id"])
    assert (done["state"], done["model_id"], done["iteration"], done["worker"]) == ("succeeded", model["id"], 2, None)
    assert model["current"] and store.get_model("current")["id"] == model["id"]
    assert (store.model_dir(model["id"]) / "model.json").is_file()
    second = store.register_model(run_folder(tmp_path, "run2"), schema=SCHEMA, metrics={}, parent=model["id"],
                                  case_ids=[case], source="upload")
    assert not second["current"] and store.promote_model(second["id"])["current"]
    assert [m["current"] for m in store.list_models()] == [False, True]
    with pytest.raises(Conflict, match="current model"):
        store.delete_model(second["id"])
    store.delete_model(model["id"])
    with pytest.raises(NotFound):
        store.get_model(model["id"])


def test_a_case_or_model_in_use_by_an_unfinished_job_cannot_be_deleted(store, tmp_path):
    case = add_case(store)
    base = store.register_model(run_folder(tmp_path), schema=SCHEMA, metrics={}, parent=None, case_ids=[case],
                                source="upload")
    store.promote_model(store.register_model(run_folder(tmp_path, "r2"), schema=SCHEMA, metrics={}, parent=None,
                                             case_ids=[case], source="upload")["id"])
    job = store.add_job("finetune", [case], base["id"], {})
    with pytest.raises(Conflict, match=f"job {job['id']}"):
        store.delete_case(case)
    with pytest.raises(Conflict, match=f"job {job['id']}"):
        store.delete_model(base["id"])
    assert store.request_cancel(job["id"])["state"] == "cancelled"
    store.delete_case(case)
    assert not store.case_dir(case).exists()
    with pytest.raises(NotFound):
        store.add_job("train", [case], None, {})


def test_concurrent_workers_claim_every_job_exactly_once(store):
    case = add_case(store)
    expected = {store.add_job("train", [case], None, {})["id"] for _ in range(24)}
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        while (job := store.claim_next_job(n, f"host:{n}")) is not None:
            with lock:
                claimed.append((job["id"], f"host:{n}"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j for j, _ in claimed) == sorted(expected)  # each once: no job twice, none lost
    assert {j["worker"] for j in store.running_jobs()} == {w for _, w in claimed} - {None}
    assert all(j["attempts"] == 1 for j in store.list_jobs())


def test_a_heartbeat_keeps_the_lease_and_an_expired_lease_requeues_the_job_to_resume(store):
    job = store.add_job("train", [add_case(store)], None, {})
    store.claim_next_job(1, "a:1", lease_s=0.6)
    time.sleep(0.4)
    assert store.heartbeat(job["id"], "a:1", lease_s=0.6) == "held"
    time.sleep(0.4)
    assert store.expire_leases() == {}  # renewed 0.4 s ago for 0.6 s
    time.sleep(0.4)
    assert store.expire_leases() == {job["id"]: "requeued"}
    requeued = store.get_job(job["id"])
    assert (requeued["state"], requeued["resume"], requeued["worker"]) == ("queued", True, None)
    assert store.heartbeat(job["id"], "a:1") == "lost"
    again = store.claim_next_job(2, "b:2")
    assert (again["id"], again["attempts"], again["resume"]) == (job["id"], 2, True)


def test_a_worker_that_lost_its_lease_cannot_change_the_job(store, tmp_path):
    job = store.add_job("train", [add_case(store)], None, {})
    store.claim_next_job(1, "a:1", lease_s=0.1)
    time.sleep(0.2)
    assert store.claim_next_job(2, "b:2")["worker"] == "b:2"  # the claim settles the expired lease first
    assert not store.update_progress(job["id"], "a:1", iteration=9)
    assert not store.finish_job(job["id"], "failed", "late", worker="a:1")
    assert not store.requeue_job(job["id"], resume=True, worker="a:1")
    run = run_folder(tmp_path)
    with pytest.raises(LeaseLost):
        store.register_model(run, schema=SCHEMA, metrics={}, parent=None, case_ids=[], source="train",
                             job_id=job["id"], worker="a:1")
    assert (run / "model.json").is_file() and store.list_models() == []  # nothing published, folder back
    now = store.get_job(job["id"])
    assert (now["state"], now["worker"], now["iteration"], now["error"]) == ("running", "b:2", 0, None)


def test_a_job_whose_worker_keeps_dying_fails_after_the_attempt_limit_with_the_reason(store):
    job = store.add_job("train", [add_case(store)], None, {})
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert store.claim_next_job(attempt, f"w:{attempt}", lease_s=-1)["attempts"] == attempt
    assert store.expire_leases() == {job["id"]: "failed"}
    failed = store.get_job(job["id"])
    assert failed["state"] == "failed" and f"stopped {MAX_ATTEMPTS} times" in failed["error"]
    assert "stopped renewing its lease" in failed["error"]


def test_cancel_from_another_api_process_reaches_the_worker_and_an_expired_cancelled_job_ends(store, tmp_path,
                                                                                               database_url):
    job = store.add_job("train", [add_case(store)], None, {})
    store.claim_next_job(1, "a:1")
    other_api = Store(tmp_path / "data", database_url)  # a second process on the same database and folder
    try:
        assert other_api.request_cancel(job["id"])["cancel_requested"]
    finally:
        other_api.close()
    assert store.heartbeat(job["id"], "a:1") == "cancel"
    assert store.settle_job(job["id"], "it was killed", worker="someone-else:9") is None  # not that worker's job
    assert store.settle_job(job["id"], "it was killed", worker="a:1") == "cancelled"
    with pytest.raises(Conflict, match="been cancelled"):
        store.request_cancel(job["id"])


def test_a_data_folder_from_another_database_is_refused(tmp_path, database_url):
    if database_url is None:
        pytest.skip("an SQLite database lives inside its data folder")
    Store(tmp_path / "data", database_url).close()
    from BackSplitLib.errors import BackSplitError

    with pytest.raises(BackSplitError, match="does not belong to the database"):
        Store(tmp_path / "other", database_url)
