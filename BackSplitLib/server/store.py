"""The data folder's store: case, job and model rows in the job database plus the files they point to,
and the job queue.

The database is SQLite inside the data folder (one machine, the default) or PostgreSQL (a department: several
API processes and ``backsplit worker`` machines sharing the database and the data folder); ``database.py``
owns the engines, the tables and the migrations. Each operation is one short transaction; no transaction
stays open while a job trains.

The queue: a worker claims the oldest queued job in one transaction (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, the write lock on SQLite) and holds a **lease** on it, which it renews (``heartbeat``) while it
trains. Every write a worker makes for its job names the worker: a worker whose lease expired (killed,
machine gone, network cut) can no longer change the job, which went back to the queue to resume from its
last checkpoint on any worker, within ``MAX_ATTEMPTS``. Lease times are the database's clock, so the
machines' clocks do not matter.

Projects (issue 24): every case, job and model belongs to one project (a lesion task with its own label
schema and its own current model). Every method that reads or changes them takes ``project`` (default: the
``default`` project, which holds everything a store had before projects) and sees only that project's rows:
an id of another project is "does not exist", a job's cases and base model must be its project's, and a
finished job's model joins its job's project. The queue is one for all projects (oldest job first).

Users and their tokens live in ``accounts.py``, the audit log in ``audit.py``: same database, their own
tables (Alembic revision 0004). Rows become the API's dicts in ``store_rows.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy.engine import make_url

from BackSplitLib.errors import BackSplitError
from BackSplitLib.permissions import DEFAULT_PROJECT
from BackSplitLib.projects import project_path
from BackSplitLib.server.database import (DB_NAME, StoreUnavailable, cases, describe_url, jobs, make_engine, models,
                                          now_expression, projects, settings, sqlite_url, unavailable_as_store_error,
                                          upgrade)
from BackSplitLib.server.store_projects import (current_model, in_project, lock_project, no_such_project, project_dict,
                                                set_current_model)
from BackSplitLib.server.store_rows import case_dict, encode_row, job_dict, model_dict
from BackSplitLib.vocabulary import ACTIVE_STATES, DEFAULT_LEASE_S, TERMINAL_STATES

__all__ = ["DB_NAME", "LEASE_S", "MAX_ATTEMPTS", "PROGRESS_KEYS", "TERMINAL_STATES", "Conflict", "LeaseLost",
           "NotFound", "Store", "StoreUnavailable", "new_id", "worker_name"]

# Progress columns that the worker updates and the event stream reports.
PROGRESS_KEYS = ("iteration", "total_iterations", "loss", "val_dice", "eta_s")
MAX_ATTEMPTS = 3  # a job that loses its worker this often is failed rather than retried forever
LEASE_S = DEFAULT_LEASE_S  # a running job's lease; its worker renews it every LEASE_S / 4
STALE_STAGING_S = 3600.0  # shared data folder: another process's upload is never older than this
FOLDER_ID_FILE = "store-id"  # names the database the data folder belongs to (and the database names it back)


def new_id() -> str:
    return str(uuid.uuid4())


def worker_name(pid: int | None = None) -> str:
    """How a worker is named in the jobs it holds: host and process id."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


class NotFound(LookupError):
    """A project, or a case, job or model id that the store does not hold (in the project asked about)."""


class Conflict(RuntimeError):
    """The request contradicts the stored state (deleting a case a queued job needs, ...)."""


class LeaseLost(RuntimeError):
    """This worker no longer holds the job (its lease expired; the job was requeued or taken by another)."""


class Store:
    """The data folder and its database. ``database``: a SQLAlchemy URL (default: SQLite in the folder)."""

    def __init__(self, root: str | Path, database: str | None = None):
        self.root = Path(root)
        self.url = database or sqlite_url(self.root)
        # Several processes on several machines share the folder and the database (PostgreSQL): nothing may
        # assume that it is the only server (start-up clean-up, the folder lock).
        self.shared = make_url(self.url).get_backend_name() != "sqlite"
        # Cases are patient images: the data folder is private to the server's user when we create it.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("cases", "models", "jobs", "tmp", "exports"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        with unavailable_as_store_error(self.url):
            self.engine = make_engine(self.url)
            upgrade(self.engine)
        self._bind_data_folder()

    def describe(self) -> str:
        return f"SQLite ({DB_NAME} in the data folder)" if not self.shared else describe_url(self.url)

    def close(self) -> None:
        self.engine.dispose()

    def without_paths(self, text: str) -> str:
        """``text`` with the data folder's absolute path removed, for messages clients see: they name ids
        and names relative to the data folder, never where the server keeps its files."""
        for prefix in sorted({str(self.root.resolve()), str(self.root.absolute()), str(self.root)}, key=len,
                             reverse=True):
            text = text.replace(prefix + "/", "").replace(prefix, "the data folder")
        return text

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with unavailable_as_store_error(self.url), self.engine.connect() as db:
            db.execution_options(backsplit_readonly=True)
            yield db

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE, so two writers never deadlock)."""
        with unavailable_as_store_error(self.url), self.engine.begin() as db:
            yield db

    # The store's own tables go through its methods; the people and audit tables (``accounts``, ``audit``)
    # use these transactions directly.
    read, write = _read, _write

    def _bind_data_folder(self) -> None:
        """The data folder and the database name each other: a worker or API process started with another
        machine's folder, or a folder from another database, stops with the reason instead of losing files."""
        marker = self.root / FOLDER_ID_FILE

        def in_folder() -> str | None:
            return marker.read_text().strip() if marker.is_file() else None

        found, created = in_folder(), False
        with self._write() as db:
            key = settings.c.key == "data_folder_id"
            in_database = db.execute(select(settings.c.value).where(key)).scalar()
            if in_database is None and (found is None or not self.shared):
                _set_setting(db, "data_folder_id", found or secrets.token_hex(16), replace=False)
                in_database = db.execute(select(settings.c.value).where(key)).scalar()
                created = found is None
        if found is None and (created or not self.shared):
            from BackSplitLib.atomic import write_text_atomic

            write_text_atomic(marker, in_database + "\n")
            return
        deadline = time.monotonic() + 5  # another process may be binding a new folder this moment
        while found is None and time.monotonic() < deadline:
            time.sleep(0.2)
            found = in_folder()
        if found != in_database:
            raise BackSplitError(
                f"the data folder {self.root} does not belong to the database {self.describe()} "
                f"({FOLDER_ID_FILE} in the folder: {found or 'missing'}; the database's: {in_database or 'none'})",
                "give every API process and worker the same shared folder and the same database")

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
        """Remove leftovers of uploads and registrations that a crash interrupted (rows are the truth).

        In a shared folder other processes are uploading and publishing right now: only leftovers older than
        ``STALE_STAGING_S`` go (a folder is renamed into place a moment before its row is inserted)."""
        min_age = STALE_STAGING_S if self.shared else 0.0
        now = time.time()

        def stale(path: Path) -> bool:
            try:
                return now - path.lstat().st_mtime >= min_age
            except FileNotFoundError:
                return False

        for path in list((self.root / "tmp").iterdir()):
            if stale(path):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        with self._read() as db:
            known_cases = set(db.execute(select(cases.c.id)).scalars())
            known_models = set(db.execute(select(models.c.id)).scalars())
        for folder, known in (("cases", known_cases), ("models", known_models)):
            for path in (self.root / folder).iterdir():
                if path.name not in known and stale(path):
                    shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------ projects
    def add_project(self, name: str, schema: dict) -> dict:
        """A new project with its label schema (the caller has checked the name and the schema)."""
        with self._write() as db:  # two creating at once: one row, the other is told (no unique-key error)
            if db.execute(_dialect_insert(db)(projects).values(name=name, created=time.time(), schema=json.dumps(schema))
                          .on_conflict_do_nothing(index_elements=[projects.c.name]).returning(projects.c.name)
                          ).first() is None:
                raise Conflict(f"project '{name}' exists already; pick another name")
        return self.get_project(name)

    def list_projects(self) -> list[dict]:
        with self._read() as db:
            counts = {table.name: dict(db.execute(select(table.c.project, func.count()).group_by(table.c.project)).all())
                      for table in (cases, jobs, models)}
            rows = db.execute(select(projects).order_by(projects.c.created, projects.c.name)).mappings().all()
        return [project_dict(row, counts) for row in rows]

    def get_project(self, name: str, counts: bool = True) -> dict:
        """A project's row (its schema and current model) and, with ``counts``, how many cases, jobs and
        models it holds; NotFound when there is no such project."""
        with self._read() as db:
            row = db.execute(select(projects).where(projects.c.name == name)).mappings().first()
            if row is None:
                raise NotFound(no_such_project(name))
            numbers = {table.name: dict(db.execute(select(table.c.project, func.count()).where(table.c.project == name)
                                                   .group_by(table.c.project)).all())
                       for table in (cases, jobs, models)} if counts else {}
        return project_dict(row, numbers)

    # ------------------------------------------------------------------ cases
    def add_case(self, staged: Path, record: dict[str, Any], project: str = DEFAULT_PROJECT) -> dict:
        """Publish a validated staged folder as a case of ``project``: rename it into place, insert the row."""
        case_id = new_id()
        target = self.case_dir(case_id)
        os.replace(staged, target)
        row = {"id": case_id, "created": time.time(), **record, "project": project}
        try:
            with self._write() as db:
                _locked_project(db, project)
                db.execute(insert(cases).values(encode_row(row, ("schema", "size", "spacing", "classes"))))
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return self.get_case(case_id, project)

    def list_cases(self, project: str = DEFAULT_PROJECT) -> list[dict]:
        with self._read() as db:
            return [case_dict(r) for r in db.execute(select(cases).where(cases.c.project == project)
                                                 .order_by(cases.c.created, cases.c.id)).mappings()]

    def get_case(self, case_id: str, project: str = DEFAULT_PROJECT) -> dict:
        with self._read() as db:
            row = db.execute(select(cases).where(cases.c.id == case_id, cases.c.project == project)).mappings().first()
        if row is None:
            raise NotFound(f"case {case_id} does not exist{in_project(project)}")
        return case_dict(row)

    def delete_case(self, case_id: str, project: str = DEFAULT_PROJECT) -> None:
        with self._write() as db:
            # The row lock orders this against a job being queued on the case (add_job's FOR SHARE).
            if db.execute(select(cases.c.id).where(cases.c.id == case_id, cases.c.project == project)
                          .with_for_update()).first() is None:
                raise NotFound(f"case {case_id} does not exist{in_project(project)}")
            for job_id, job_cases in db.execute(select(jobs.c.id, jobs.c.cases).where(jobs.c.state.in_(ACTIVE_STATES))):
                if case_id in json.loads(job_cases):
                    raise Conflict(f"case {case_id} is used by job {job_id}, which has not finished; "
                                   "cancel the job or wait for it before deleting the case")
            db.execute(delete(cases).where(cases.c.id == case_id))
        shutil.rmtree(self.case_dir(case_id), ignore_errors=True)

    def case_ids(self, project: str = DEFAULT_PROJECT) -> list[str]:
        with self._read() as db:
            return list(db.execute(select(cases.c.id).where(cases.c.project == project)
                                   .order_by(cases.c.created, cases.c.id)).scalars())

    # ------------------------------------------------------------------ jobs
    def add_job(self, kind: str, case_ids: list[str], base_model: str | None, params: dict,
                project: str = DEFAULT_PROJECT) -> dict:
        """Queue a job of ``project`` on its cases (and, for a fine-tune, its model): never another project's."""
        job_id = new_id()
        with self._write() as db:
            _locked_project(db, project)
            for case_id in case_ids:  # checked and share-locked inside the transaction: no concurrent delete
                if db.execute(select(cases.c.id).where(cases.c.id == case_id, cases.c.project == project)
                              .with_for_update(read=True)).first() is None:
                    raise NotFound(f"case {case_id} does not exist{in_project(project)}")
            if base_model and db.execute(select(models.c.id).where(models.c.id == base_model, models.c.project == project)
                                         .with_for_update(read=True)).first() is None:
                raise NotFound(f"model {base_model} does not exist{in_project(project)}")
            db.execute(insert(jobs).values(
                id=job_id, created=time.time(), kind=kind, state="queued", params=json.dumps(params),
                cases=json.dumps(case_ids), base_model=base_model, total_iterations=int(params.get("iterations", 0)),
                project=project))
        return self.get_job(job_id, project)

    def list_jobs(self, project: str = DEFAULT_PROJECT) -> list[dict]:
        with self._read() as db:
            return [job_dict(r) for r in db.execute(select(jobs).where(jobs.c.project == project)
                                                .order_by(jobs.c.created, jobs.c.id)).mappings()]

    def get_job(self, job_id: str, project: str = DEFAULT_PROJECT) -> dict:
        with self._read() as db:
            row = db.execute(select(jobs).where(jobs.c.id == job_id, jobs.c.project == project)).mappings().first()
        if row is None:
            raise NotFound(f"job {job_id} does not exist{in_project(project)}")
        return job_dict(row)

    def queue_length(self) -> int:
        """Jobs waiting or running: what a new job has to wait for."""
        with self._read() as db:
            return db.execute(select(func.count()).select_from(jobs).where(jobs.c.state.in_(ACTIVE_STATES))).scalar()

    def claim_next_job(self, worker_pid: int, worker: str | None = None, lease_s: float = LEASE_S) -> dict | None:
        """In one short transaction: settle jobs whose lease expired, then move the oldest queued job to running
        for this worker with a lease of ``lease_s`` seconds (None when the queue is empty)."""
        worker = worker or worker_name(worker_pid)
        with self._write() as db:
            self._expire_leases(db)
            job_id = db.execute(select(jobs.c.id).where(jobs.c.state == "queued").order_by(jobs.c.created, jobs.c.id)
                                .limit(1).with_for_update(skip_locked=True)).scalar()
            if job_id is None:
                return None
            db.execute(update(jobs).where(jobs.c.id == job_id).values(
                state="running", worker_pid=worker_pid, worker=worker, lease_expires=now_expression(db) + lease_s,
                attempts=jobs.c.attempts + 1, started=func.coalesce(jobs.c.started, time.time())))
            return job_dict(db.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one())

    def heartbeat(self, job_id: str, worker: str, lease_s: float = LEASE_S) -> str:
        """Renew the worker's lease on its job: 'held', 'cancel' (held, and a cancel was asked) or 'lost'."""
        with self._write() as db:
            renewed = db.execute(update(jobs).where(*_held_by(job_id, worker))
                                 .values(lease_expires=now_expression(db) + lease_s)).rowcount
            if not renewed:
                return "lost"
            cancel = db.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar()
        return "cancel" if cancel else "held"

    def expire_leases(self) -> dict[str, str]:
        """Settle every running job whose lease expired: {job id: 'requeued' | 'cancelled' | 'failed'}."""
        with self._write() as db:
            return self._expire_leases(db)

    def _expire_leases(self, db: Connection) -> dict[str, str]:
        expired = db.execute(select(jobs).where(
            jobs.c.state == "running",
            or_(jobs.c.lease_expires.is_(None), jobs.c.lease_expires < now_expression(db)))
            .with_for_update(skip_locked=True)).mappings().all()
        return {row["id"]: _settle(db, job_dict(row), f"its worker {row['worker'] or ''} stopped renewing its lease "
                                                  "(process killed, machine down or network cut)".replace("  ", " "))
                for row in expired}

    def settle_job(self, job_id: str, reason: str, worker: str | None = None) -> str | None:
        """A running job whose worker is gone (``worker``: only if that worker still holds it): cancelled if
        that was asked, else back to the queue to resume, else failed with the reason. None if not running."""
        with self._write() as db:
            row = db.execute(select(jobs).where(jobs.c.id == job_id, jobs.c.state == "running").with_for_update()
                             ).mappings().first()
            if row is None or (worker is not None and row["worker"] != worker):
                return None
            return _settle(db, job_dict(row), reason)

    def update_progress(self, job_id: str, worker: str | None = None, **values: Any) -> bool:
        """Write progress columns; with ``worker``, only while that worker holds the job (False otherwise)."""
        values = {k: v for k, v in values.items() if k in PROGRESS_KEYS}
        if not values:
            return True
        with self._write() as db:
            return bool(db.execute(update(jobs).where(*_held_by(job_id, worker)).values(**values)).rowcount)

    def finish_job(self, job_id: str, state: str, error: str | None = None, worker: str | None = None) -> bool:
        """Move a job to a terminal state (failed / cancelled); succeeded goes through ``register_model``.
        With ``worker``, only while that worker holds it (False when its lease was lost)."""
        assert state in TERMINAL_STATES
        condition = _held_by(job_id, worker) if worker is not None else (jobs.c.id == job_id,)
        with self._write() as db:
            return bool(db.execute(update(jobs).where(*condition).values(
                state=state, error=error, finished=time.time(), worker_pid=None, worker=None, lease_expires=None,
                eta_s=None)).rowcount)

    def requeue_job(self, job_id: str, resume: bool, worker: str | None = None) -> bool:
        """Put a running job back in the queue (worker shutdown); it resumes from its checkpoint."""
        with self._write() as db:
            return bool(db.execute(update(jobs).where(*_held_by(job_id, worker)).values(
                state="queued", worker_pid=None, worker=None, lease_expires=None, resume=int(resume),
                eta_s=None)).rowcount)

    def request_cancel(self, job_id: str, project: str = DEFAULT_PROJECT) -> dict:
        """Cancel: a queued job ends now; a running one is flagged and stops at its worker's next check."""
        with self._write() as db:
            state = db.execute(select(jobs.c.state).where(jobs.c.id == job_id, jobs.c.project == project)
                               .with_for_update()).scalar()
            if state is None:
                raise NotFound(f"job {job_id} does not exist{in_project(project)}")
            if state == "queued":
                db.execute(update(jobs).where(jobs.c.id == job_id).values(
                    state="cancelled", finished=time.time(), cancel_requested=1))
            elif state == "running":
                db.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested=1))
            else:
                raise Conflict(f"job {job_id} has already {_ended_verb(state)}; there is nothing to cancel")
        return self.get_job(job_id, project)

    def cancel_requested(self, job_id: str) -> bool:
        with self._read() as db:
            return bool(db.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar())

    def running_jobs(self) -> list[dict]:
        with self._read() as db:
            return [job_dict(r) for r in db.execute(select(jobs).where(jobs.c.state == "running")).mappings()]

    # ------------------------------------------------------------------ models
    def register_model(self, run_dir: Path, *, schema: dict, metrics: dict, parent: str | None,
                       case_ids: list[str], source: str, job_id: str | None = None, worker: str | None = None,
                       promote: bool = False, first_becomes_current: bool = True,
                       progress: dict | None = None, note: str | None = None,
                       project: str = DEFAULT_PROJECT) -> dict:
        """Publish a finished run folder as a model version, in one transaction with the job's success.

        The model belongs to its job's project (``project`` for a model without a job: an upload). Any model
        registered with ``promote`` becomes its project's current model; so does the project's first model,
        unless ``first_becomes_current`` is False (a model whose validation never found the lesion). With
        ``worker``, the job must still be held by that worker: otherwise nothing is published and LeaseLost is
        raised. ``progress``: the job's last progress values, written with its success (they may not have
        reached the database while it was away). ``note`` goes into the succeeded job's ``error`` field: why
        its model was not promoted (``vocabulary.JOB_NOT_PROMOTED_NO_LESION``).
        """
        final = {k: v for k, v in (progress or {}).items() if k in PROGRESS_KEYS and k != "eta_s"}
        model_id = new_id()
        target = self.model_dir(model_id)
        os.replace(run_dir, target)
        try:
            with self._write() as db:
                if job_id is not None:
                    condition = _held_by(job_id, worker) if worker is not None else (jobs.c.id == job_id,)
                    project = db.execute(select(jobs.c.project).where(jobs.c.id == job_id)).scalar() or project
                    if not db.execute(update(jobs).where(*condition).values(
                            state="succeeded", model_id=model_id, finished=time.time(), worker_pid=None, worker=None,
                            lease_expires=None, eta_s=0, error=note, **final)).rowcount:
                        raise LeaseLost(f"job {job_id} is no longer held by worker {worker}")
                current = _locked_project(db, project, for_update=True)
                db.execute(insert(models).values(
                    id=model_id, created=time.time(), parent=parent, job_id=job_id, source=source,
                    schema=json.dumps(schema), metrics=json.dumps(metrics), cases=json.dumps(case_ids),
                    project=project))
                if promote or (first_becomes_current and current is None):
                    set_current_model(db, project, model_id)
        except BaseException:
            os.replace(target, run_dir)
            raise
        return self.get_model(model_id, project)

    def current_model_id(self, project: str = DEFAULT_PROJECT) -> str | None:
        with self._read() as db:
            return current_model(db, project)

    def list_models(self, project: str = DEFAULT_PROJECT) -> list[dict]:
        with self._read() as db:
            current = current_model(db, project)
            return [model_dict(r, current) for r in db.execute(select(models).where(models.c.project == project)
                                                           .order_by(models.c.created, models.c.id)).mappings()]

    def get_model(self, model_id: str, project: str = DEFAULT_PROJECT) -> dict:
        """A model of ``project`` by id; ``current`` names the project's current model."""
        with self._read() as db:
            current = current_model(db, project)
            if model_id == "current":
                model_id = current
            row = None if model_id is None else db.execute(
                select(models).where(models.c.id == model_id, models.c.project == project)).mappings().first()
        if model_id is None:
            raise NotFound(self._no_current_model(project))
        if row is None:
            raise NotFound(f"model {model_id} does not exist{in_project(project)}")
        return model_dict(row, current)

    def _no_current_model(self, project: str) -> str:
        """Why there is no current model: none yet, or the latest was kept but not promoted (say which)."""
        with self._read() as db:
            latest = db.execute(select(models.c.id, models.c.metrics).where(models.c.project == project)
                                .order_by(models.c.created.desc(), models.c.id.desc()).limit(1)).mappings().first()
        if latest is None:
            return f"there is no current model{in_project(project)} yet; train one or upload a run folder first"
        dice = json.loads(latest["metrics"] or "{}").get("best_val_dice")
        why = f" (its best validation lesion Dice was {dice:.2f})" if isinstance(dice, (int, float)) else ""
        promote = project_path(project, f"/models/{latest['id']}/promote")
        return (f"there is no current model{in_project(project)}: model {latest['id']} was kept but not promoted{why}; "
                f"train longer, or promote it (POST {promote}) to use it anyway")

    def promote_model(self, model_id: str, project: str = DEFAULT_PROJECT) -> dict:
        """Make a model its project's current model (promoting an older one is the rollback)."""
        with self._write() as db:
            _locked_project(db, project, for_update=True)  # the project first, everywhere: no lock-order deadlock
            if db.execute(select(models.c.id).where(models.c.id == model_id, models.c.project == project)
                          .with_for_update(read=True)).first() is None:
                raise NotFound(f"model {model_id} does not exist{in_project(project)}")
            set_current_model(db, project, model_id)
        return self.get_model(model_id, project)

    def delete_model(self, model_id: str, project: str = DEFAULT_PROJECT) -> None:
        with self._write() as db:
            current = _locked_project(db, project, for_update=True)  # the project first, everywhere
            if db.execute(select(models.c.id).where(models.c.id == model_id, models.c.project == project)
                          .with_for_update()).first() is None:
                raise NotFound(f"model {model_id} does not exist{in_project(project)}")
            if current == model_id:
                raise Conflict(f"model {model_id} is the current model{in_project(project)}; promote another model before "
                               "deleting it")
            busy = db.execute(select(jobs.c.id).where(jobs.c.base_model == model_id,
                                                      jobs.c.state.in_(ACTIVE_STATES))).scalar()
            if busy is not None:
                raise Conflict(f"model {model_id} is the base of job {busy}, which has not finished")
            db.execute(delete(models).where(models.c.id == model_id))
        shutil.rmtree(self.model_dir(model_id), ignore_errors=True)
        (self.root / "exports" / f"{model_id}.zip").unlink(missing_ok=True)


# ---------------------------------------------------------------------- rules
def _locked_project(db: Connection, project: str, for_update: bool = False) -> str | None:
    """``project`` locked until the transaction ends (see ``lock_project``); its current model id."""
    row = lock_project(db, project, for_update)
    if row is None:
        raise NotFound(no_such_project(project))
    return row.current_model



def _held_by(job_id: str, worker: str | None) -> tuple:
    """The WHERE clause of a write a worker makes for its job: still running, still this worker's."""
    condition = (jobs.c.id == job_id, jobs.c.state == "running")
    return condition if worker is None else (*condition, jobs.c.worker == worker)


def _settle(db: Connection, job: dict, reason: str) -> str:
    """A running job whose worker is gone: cancelled, requeued to resume, or failed after MAX_ATTEMPTS."""
    where = update(jobs).where(jobs.c.id == job["id"], jobs.c.state == "running")
    released = {"worker_pid": None, "worker": None, "lease_expires": None, "eta_s": None}
    if job["cancel_requested"]:
        db.execute(where.values(state="cancelled", finished=time.time(), **released))
        return "cancelled"
    if job["attempts"] < MAX_ATTEMPTS:
        db.execute(where.values(state="queued", resume=1, **released))
        return "requeued"
    db.execute(where.values(state="failed", finished=time.time(), error=(
        f"the training worker stopped {job['attempts']} times while running this job (last time {reason}); "
        "it was not retried again"), **released))
    return "failed"


def _dialect_insert(db: Connection):
    """The dialect's INSERT, which has ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
    if db.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert


def _set_setting(db: Connection, key: str, value: str | None, replace: bool = True) -> None:
    """Insert or replace a setting (``replace=False``: keep a value another process wrote first)."""
    statement = _dialect_insert(db)(settings).values(key=key, value=value)
    db.execute(statement.on_conflict_do_update(index_elements=[settings.c.key], set_={"value": value}) if replace
               else statement.on_conflict_do_nothing(index_elements=[settings.c.key]))


def _ended_verb(state: str) -> str:
    return {"succeeded": "succeeded", "failed": "failed", "cancelled": "been cancelled"}.get(state, state)
