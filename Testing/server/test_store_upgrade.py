"""A data folder written by main's SQLite store (before Alembic; ``fixtures/store-main-4dd7c99``) opens with
today's store: it is upgraded in place to the newest revision and every row survives, field by field, in the
``default`` project, which takes over the store's current model."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from BackSplitLib.permissions import DEFAULT_PROJECT
from BackSplitLib.server.database import head_revision
from BackSplitLib.server.store import Store

FIXTURE = Path(__file__).parent / "fixtures" / "store-main-4dd7c99"


def rows(path: Path) -> dict[str, list[dict]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return {table: [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY id")]
                for table in ("cases", "jobs", "models")}


def old_current_model(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT value FROM settings WHERE key = 'current_model'").fetchone()[0]


def test_an_old_store_is_upgraded_in_place_with_nothing_lost(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(FIXTURE / "backsplit.db", data / "backsplit.db")
    ids = json.loads((FIXTURE / "ids.json").read_text())
    before = rows(data / "backsplit.db")
    current = old_current_model(data / "backsplit.db")
    with sqlite3.connect(data / "backsplit.db") as db:
        assert "alembic_version" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}

    store = Store(data)
    after = rows(data / "backsplit.db")
    for table, old_rows in before.items():  # every old column of every row unchanged; new columns empty
        assert [{k: r[k] for k in old} for r, old in zip(after[table], old_rows, strict=True)] == old_rows
    assert all(j["worker"] is None and j["lease_expires"] is None for j in after["jobs"])
    assert {r["project"] for rows_ in after.values() for r in rows_} == {DEFAULT_PROJECT}
    assert [(p["name"], p["current_model"], p["schema"]) for p in store.list_projects()] == [
        (DEFAULT_PROJECT, current, None)]  # the old current model is the default project's; any target, as before
    assert len(store.list_cases()) == len(before["cases"]) and len(store.list_models()) == len(before["models"])
    with sqlite3.connect(data / "backsplit.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]

    assert store.current_model_id() == ids["model"] == current
    assert store.get_job(ids["failed"])["error"] == "training stopped: example reason"
    # The job the old server left running has no lease: the first claim sends it back to resume, oldest first.
    resumed = store.claim_next_job(1, "new:1")
    assert (resumed["id"], resumed["attempts"], resumed["resume"]) == (ids["running"], 2, True)
    assert store.claim_next_job(2, "new:2")["id"] == ids["queued"]
    store.close()
    Store(data).close()  # opening again is a no-op
    assert rows(data / "backsplit.db")["models"] == after["models"]
