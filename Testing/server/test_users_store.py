"""Issue 24 on both stores: users, roles and the append-only audit log behave the same on SQLite and on
PostgreSQL (one parametrised suite), and a revoked token is refused at once by every API process sharing
one PostgreSQL database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from alembic import command
from sqlalchemy import delete, inspect, text, update
from sqlalchemy.exc import DBAPIError

from BackSplitLib.errors import BackSplitError
from BackSplitLib.server.accounts import Accounts, hash_token
from BackSplitLib.server.audit import AuditLog, AuditRow
from BackSplitLib.server.database import (audit, current_revision, head_revision, make_engine, migrations_config,
                                          sqlite_url)
from BackSplitLib.server.store import Store
from BackSplitLib.vocabulary import DATABASE_ENV
from server_harness import ServerProcess


@pytest.fixture
def store(tmp_path, database_url):
    opened = Store(tmp_path / "data", database_url)
    yield opened
    opened.close()


SCHEMA = {"labels": {"background": 0, "organ": 1, "lesion": 2}, "target": "lesion"}


def test_users_roles_revoke_and_rotate(store):
    for project in ("liver", "lung"):
        store.add_project(project, SCHEMA)
    accounts = Accounts(store)
    token = accounts.add("ana", "annotator", "liver")
    accounts.grant("ana", "viewer", "lung")
    me = accounts.identify(token)
    assert (me.name, me.admin, me.projects) == ("ana", False, {"liver": "annotator", "lung": "viewer"})
    assert me.may("liver", "upload_case") and not me.may("lung", "upload_case") and not me.may("kidney", "read")
    with pytest.raises(BackSplitError, match="exists already"):
        accounts.add("ana", "viewer")
    with pytest.raises(BackSplitError, match="not one of"):
        accounts.add("bob", "root")
    with pytest.raises(BackSplitError, match=r"project 'kidney' does not exist on this server \(its projects: "
                                             r"default, liver, lung\)"):
        accounts.add("bob", "viewer", "kidney")
    with pytest.raises(BackSplitError, match="project 'kidney' does not exist"):
        accounts.grant("ana", "trainer", "kidney")
    assert [u["name"] for u in accounts.list()] == ["ana"] and accounts.identify(token).projects["liver"] == "annotator"
    accounts.revoke("ana")
    assert accounts.identify(token) is None
    new, was_revoked = accounts.rotate("ana")
    assert was_revoked and accounts.identify(new).name == "ana" and accounts.identify(token) is None
    boss = accounts.add("boss", "admin")
    assert accounts.identify(boss).admin and accounts.identify(boss).may("any-project", "manage_users")
    assert [u["name"] for u in accounts.list()] == ["ana", "boss"]
    with store.read() as db:  # only hashes
        hashes = set(db.execute(text("SELECT token_hash FROM users")).scalars())
    assert hashes == {hash_token(new), hash_token(boss)}


def test_a_store_with_projects_from_before_people_gains_users_and_audit_with_its_projects_kept(tmp_path, database_url):
    """Revision 0003 (projects, no people yet) upgrades to 0004: its projects stay, and roles go to them."""
    data = tmp_path / "data"
    data.mkdir()
    engine = make_engine(database_url or sqlite_url(data))
    with engine.begin() as db:
        command.upgrade(migrations_config(db), "0003")
        db.execute(text("INSERT INTO projects (name, created, schema) VALUES ('lung', 1.0, :schema)"),
                   {"schema": json.dumps(SCHEMA)})
        assert "users" not in inspect(db).get_table_names()
    engine.dispose()

    upgraded = Store(data, database_url)
    try:
        assert sorted(p["name"] for p in upgraded.list_projects()) == ["default", "lung"]
        assert upgraded.get_project("lung")["schema"] == SCHEMA
        with upgraded.read() as db:
            assert current_revision(db) == head_revision() == "0004"
        token = Accounts(upgraded).add("ana", "viewer", "lung")
        assert Accounts(upgraded).identify(token).projects == {"lung": "viewer"}
        AuditLog(upgraded).record(AuditRow("ana", "10.0.0.1", "predict", "lung", None, "POST /projects/{project}/predict",
                                           200))
        assert [r["project"] for r in AuditLog(upgraded).rows(user="ana")] == ["lung"]
    finally:
        upgraded.close()


def test_the_audit_log_filters_and_refuses_changes(store):
    log = AuditLog(store)
    log.record(AuditRow("ana", "10.0.0.1", "upload_case", "liver", "c1", "POST /cases", 201))
    log.record(AuditRow("unknown", "10.0.0.9", "read", "default", None, "GET /cases", 401))
    assert [r["object"] for r in log.rows(user="ana")] == ["c1"]
    assert [r["outcome"] for r in log.rows(project="default")] == [401]
    assert log.rows(since=log.rows()[-1]["time"] + 1) == []
    for change in (update(audit).values(user="someone else"), delete(audit)):
        with pytest.raises(DBAPIError, match="append-only"), store.write() as db:
            db.execute(change)
    assert len(log.rows()) == 2


def test_revocation_reaches_every_api_process_at_once(tmp_path, postgres):
    """Two `backsplit serve` processes on one PostgreSQL: `backsplit users revoke` on the store, and the very
    next request to either process is refused."""
    url = postgres.new_database()
    data, token_file = tmp_path / "data", tmp_path / "token"
    apis = [ServerProcess(data, token_file, workers=0, env={DATABASE_ENV: url}) for _ in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:  # the two start side by side
            list(pool.map(ServerProcess.start, apis))
        store = Store(data, url)
        token = Accounts(store).add("ana", "trainer")
        store.close()
        for api in apis:
            assert httpx.get(f"{api.url}/me", headers={"Authorization": f"Bearer {token}"}).json()["user"] == "ana"
        done = subprocess.run([sys.executable, "-m", "BackSplitLib", "users", "revoke", "ana", "--data", str(data)],
                              capture_output=True, text=True, timeout=120, env={**os.environ, DATABASE_ENV: url})
        assert done.returncode == 0, done.stderr
        for api in apis:
            assert httpx.get(f"{api.url}/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        store = Store(data, url)
        rows = AuditLog(store).rows(user="unknown")
        store.close()
        assert sorted(r["outcome"] for r in rows) == [401, 401]
    finally:
        for api in apis:
            api.stop()
