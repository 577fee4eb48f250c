"""SQLite job/case/model store plus the file store beside it. Standard library only.

The API process and the worker process(es) share the database. Each operation opens its own short
connection (cheap in SQLite) so that threads and processes never share a handle; WAL mode lets readers
(event streams, listings) run while the worker writes progress. Writes that belong together run in one
``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from BackSplitLib.vocabulary import TERMINAL_STATES

DB_NAME = "backsplit.db"
# Progress columns that the worker updates and the event stream reports.
PROGRESS_KEYS = ("iteration", "total_iterations", "loss", "val_dice", "eta_s")

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS cases (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    name TEXT NOT NULL,
    image_file TEXT NOT NULL,
    label_file TEXT NOT NULL,
    schema TEXT NOT NULL,
    modality TEXT NOT NULL,
    size TEXT NOT NULL,
    spacing TEXT NOT NULL,
    classes TEXT NOT NULL,
    target_voxels INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    cases TEXT NOT NULL,
    base_model TEXT,
    iteration INTEGER NOT NULL DEFAULT 0,
    total_iterations INTEGER NOT NULL DEFAULT 0,
    loss REAL,
    val_dice REAL,
    eta_s REAL,
    error TEXT,
    model_id TEXT,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    resume INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    parent TEXT,
    job_id TEXT,
    source TEXT NOT NULL,
    schema TEXT NOT NULL,
    metrics TEXT NOT NULL,
    cases TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT);
"""


def new_id() -> str:
    return str(uuid.uuid4())


class NotFound(LookupError):
    """A case, job or model id that the store does not hold."""


class Conflict(RuntimeError):
    """The request contradicts the stored state (deleting a case a queued job needs, ...)."""


class Store:
    """The data folder: SQLite rows plus the files they point to."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.db_path = self.root / DB_NAME
        # Cases are patient images: the data folder is private to the server's user when we create it.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("cases", "models", "jobs", "tmp", "exports"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA_SQL)

    def without_paths(self, text: str) -> str:
        """``text`` with the data folder's absolute path removed, for messages clients see: they name ids
        and names relative to the data folder, never where the server keeps its files."""
        for prefix in sorted({str(self.root.resolve()), str(self.root.absolute()), str(self.root)}, key=len,
                             reverse=True):
            text = text.replace(prefix + "/", "").replace(prefix, "the data folder")
        return text

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=30000")
        return db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front so two writers never deadlock."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.close()

    # ------------------------------------------------------------------ folders
    def case_dir(self, case_id: str) -> Path:
        return self.root / "cases" / case_id

    def model_dir(self, model_id: str) -> Path:
        return self.root / "models" / model_id

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def staging_dir(self) -> Path:
        """A fresh folder for an upload in progress (on the same file system, so a rename publishes it)."""
        path = self.root / "tmp" / new_id()
        path.mkdir(parents=True)
        return path

    def clean_staging(self) -> None:
        """Remove leftovers of uploads and registrations that a crash interrupted (rows are the truth)."""
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        with self._read() as db:
            cases = {r["id"] for r in db.execute("SELECT id FROM cases")}
            models = {r["id"] for r in db.execute("SELECT id FROM models")}
        for folder, known in (("cases", cases), ("models", models)):
            for path in (self.root / folder).iterdir():
                if path.name not in known:
                    shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------ cases
    def add_case(self, staged: Path, record: dict[str, Any]) -> dict:
        """Publish a validated staged folder as a case: rename it into place, then insert the row."""
        case_id = new_id()
        target = self.case_dir(case_id)
        os.replace(staged, target)
        row = {"id": case_id, "created": time.time(), **record}
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO cases (id, created, name, image_file, label_file, schema, modality, size, spacing,"
                    " classes, target_voxels, bytes) VALUES (:id, :created, :name, :image_file, :label_file,"
                    " :schema, :modality, :size, :spacing, :classes, :target_voxels, :bytes)",
                    _encode(row, ("schema", "size", "spacing", "classes")),
                )
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return self.get_case(case_id)

    def list_cases(self) -> list[dict]:
        with self._read() as db:
            return [_case(r) for r in db.execute("SELECT * FROM cases ORDER BY created, id")]

    def get_case(self, case_id: str) -> dict:
        with self._read() as db:
            row = db.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone()
        if row is None:
            raise NotFound(f"case {case_id} does not exist")
        return _case(row)

    def delete_case(self, case_id: str) -> None:
        with self._write() as db:
            if db.execute("SELECT 1 FROM cases WHERE id = ?", (case_id,)).fetchone() is None:
                raise NotFound(f"case {case_id} does not exist")
            for job in db.execute("SELECT id, cases FROM jobs WHERE state IN ('queued', 'running')"):
                if case_id in json.loads(job["cases"]):
                    raise Conflict(f"case {case_id} is used by job {job['id']}, which has not finished; "
                                   "cancel the job or wait for it before deleting the case")
            db.execute("DELETE FROM cases WHERE id = ?", (case_id,))
        shutil.rmtree(self.case_dir(case_id), ignore_errors=True)

    def case_ids(self) -> list[str]:
        with self._read() as db:
            return [r["id"] for r in db.execute("SELECT id FROM cases ORDER BY created, id")]

    # ------------------------------------------------------------------ jobs
    def add_job(self, kind: str, case_ids: list[str], base_model: str | None, params: dict) -> dict:
        job_id = new_id()
        with self._write() as db:
            for case_id in case_ids:  # checked inside the transaction: a concurrent delete cannot slip in
                if db.execute("SELECT 1 FROM cases WHERE id = ?", (case_id,)).fetchone() is None:
                    raise NotFound(f"case {case_id} does not exist")
            if base_model and db.execute("SELECT 1 FROM models WHERE id = ?", (base_model,)).fetchone() is None:
                raise NotFound(f"model {base_model} does not exist")
            db.execute(
                "INSERT INTO jobs (id, created, kind, state, params, cases, base_model, total_iterations)"
                " VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
                (job_id, time.time(), kind, json.dumps(params), json.dumps(case_ids), base_model,
                 int(params.get("iterations", 0))),
            )
        return self.get_job(job_id)

    def list_jobs(self) -> list[dict]:
        with self._read() as db:
            return [_job(r) for r in db.execute("SELECT * FROM jobs ORDER BY created, id")]

    def get_job(self, job_id: str) -> dict:
        with self._read() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        return _job(row)

    def queue_length(self) -> int:
        """Jobs waiting or running: what a new job has to wait for."""
        with self._read() as db:
            return db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')").fetchone()[0]

    def claim_next_job(self, worker_pid: int) -> dict | None:
        """Atomically move the oldest queued job to running for this worker (None when the queue is empty)."""
        with self._write() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created, id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', worker_pid = ?, attempts = attempts + 1,"
                " started = COALESCE(started, ?) WHERE id = ?",
                (worker_pid, time.time(), row["id"]),
            )
        return self.get_job(row["id"])

    def update_progress(self, job_id: str, **values: Any) -> None:
        values = {k: v for k, v in values.items() if k in PROGRESS_KEYS}
        if not values:
            return
        sets = ", ".join(f"{k} = :{k}" for k in values)
        with self._write() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id = :id AND state = 'running'", {**values, "id": job_id})

    def finish_job(self, job_id: str, state: str, error: str | None = None) -> None:
        """Move a job to a terminal state (failed / cancelled); succeeded goes through ``register_job_model``."""
        assert state in TERMINAL_STATES
        with self._write() as db:
            db.execute("UPDATE jobs SET state = ?, error = ?, finished = ?, worker_pid = NULL,"
                       " eta_s = NULL WHERE id = ?", (state, error, time.time(), job_id))

    def requeue_job(self, job_id: str, resume: bool) -> None:
        """Put a running job back in the queue (worker shutdown or crash); resume from its checkpoint."""
        with self._write() as db:
            db.execute("UPDATE jobs SET state = 'queued', worker_pid = NULL, resume = ?, eta_s = NULL"
                       " WHERE id = ? AND state = 'running'", (int(resume), job_id))

    def request_cancel(self, job_id: str) -> dict:
        """Cancel: a queued job ends now; a running one is flagged and stops at the worker's next iteration."""
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"job {job_id} does not exist")
            if row["state"] == "queued":
                db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, cancel_requested = 1 WHERE id = ?",
                           (time.time(), job_id))
            elif row["state"] == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            else:
                raise Conflict(f"job {job_id} has already {_ended_verb(row['state'])}; there is nothing to cancel")
        return self.get_job(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        with self._read() as db:
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def running_jobs(self) -> list[dict]:
        with self._read() as db:
            return [_job(r) for r in db.execute("SELECT * FROM jobs WHERE state = 'running'")]

    # ------------------------------------------------------------------ models
    def register_model(self, run_dir: Path, *, schema: dict, metrics: dict, parent: str | None,
                       case_ids: list[str], source: str, job_id: str | None = None,
                       promote: bool = False, first_becomes_current: bool = True, note: str | None = None) -> dict:
        """Publish a finished run folder as a model version, in one transaction with the job's success.

        Any model registered with ``promote`` becomes current; so does the first model ever, unless
        ``first_becomes_current`` is False (a model whose validation never found the lesion). ``note`` goes
        into the succeeded job's ``error`` field: why its model was not promoted
        (``vocabulary.JOB_NOT_PROMOTED_NO_LESION``).
        """
        model_id = new_id()
        target = self.model_dir(model_id)
        os.replace(run_dir, target)
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO models (id, created, parent, job_id, source, schema, metrics, cases)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (model_id, time.time(), parent, job_id, source, json.dumps(schema), json.dumps(metrics),
                     json.dumps(case_ids)),
                )
                current = db.execute("SELECT value FROM settings WHERE key = 'current_model'").fetchone()
                if promote or (first_becomes_current and (current is None or current["value"] is None)):
                    db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('current_model', ?)", (model_id,))
                if job_id is not None:
                    db.execute("UPDATE jobs SET state = 'succeeded', model_id = ?, finished = ?, worker_pid = NULL,"
                               " eta_s = 0, error = ? WHERE id = ?", (model_id, time.time(), note, job_id))
        except BaseException:
            os.replace(target, run_dir)
            raise
        return self.get_model(model_id)

    def current_model_id(self) -> str | None:
        with self._read() as db:
            row = db.execute("SELECT value FROM settings WHERE key = 'current_model'").fetchone()
        return row["value"] if row else None

    def list_models(self) -> list[dict]:
        current = self.current_model_id()
        with self._read() as db:
            return [_model(r, current) for r in db.execute("SELECT * FROM models ORDER BY created, id")]

    def get_model(self, model_id: str) -> dict:
        """A model by id; ``current`` names the current model."""
        current = self.current_model_id()
        if model_id == "current":
            if current is None:
                raise NotFound("there is no current model yet; train one or upload a run folder first")
            model_id = current
        with self._read() as db:
            row = db.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        if row is None:
            raise NotFound(f"model {model_id} does not exist")
        return _model(row, current)

    def promote_model(self, model_id: str) -> dict:
        with self._write() as db:
            if db.execute("SELECT 1 FROM models WHERE id = ?", (model_id,)).fetchone() is None:
                raise NotFound(f"model {model_id} does not exist")
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('current_model', ?)", (model_id,))
        return self.get_model(model_id)

    def delete_model(self, model_id: str) -> None:
        with self._write() as db:
            if db.execute("SELECT 1 FROM models WHERE id = ?", (model_id,)).fetchone() is None:
                raise NotFound(f"model {model_id} does not exist")
            current = db.execute("SELECT value FROM settings WHERE key = 'current_model'").fetchone()
            if current is not None and current["value"] == model_id:
                raise Conflict(f"model {model_id} is the current model; promote another model before deleting it")
            busy = db.execute("SELECT id FROM jobs WHERE base_model = ? AND state IN ('queued', 'running')",
                              (model_id,)).fetchone()
            if busy is not None:
                raise Conflict(f"model {model_id} is the base of job {busy['id']}, which has not finished")
            db.execute("DELETE FROM models WHERE id = ?", (model_id,))
        shutil.rmtree(self.model_dir(model_id), ignore_errors=True)
        (self.root / "exports" / f"{model_id}.zip").unlink(missing_ok=True)


# ---------------------------------------------------------------------- row -> dict
def _encode(row: dict, json_keys: tuple[str, ...]) -> dict:
    return {k: json.dumps(v) if k in json_keys else v for k, v in row.items()}


def _case(row: sqlite3.Row) -> dict:
    d = dict(row)
    for key in ("schema", "size", "spacing", "classes"):
        d[key] = json.loads(d[key])
    return d


def _job(row: sqlite3.Row) -> dict:
    d = dict(row)
    params = json.loads(d.pop("params"))
    d["cases"] = json.loads(d["cases"])
    d["params"] = params
    d["cancel_requested"] = bool(d["cancel_requested"])
    d["resume"] = bool(d["resume"])
    return d


def _model(row: sqlite3.Row, current: str | None) -> dict:
    d = dict(row)
    for key in ("schema", "metrics", "cases"):
        d[key] = json.loads(d[key])
    d["current"] = d["id"] == current
    return d


def _ended_verb(state: str) -> str:
    return {"succeeded": "succeeded", "failed": "failed", "cancelled": "been cancelled"}.get(state, state)
