"""Issue 24, people: users with a role per project, tokens stored as hashes, every route's declared action
checked before the body (the role matrix is generated from the routes' own declarations), /me, the audit
log (a row for each audited action and refusal, nothing else), and 429 for an address that guesses tokens.

One API-only server for the module (jobs stay queued, so nothing trains); users are added with the CLI, as
an operator would, on the server's store while it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager

import httpx
import pytest
from server_harness import FAST_JOB, ServerProcess, case_form

from BackSplitLib.client import BackSplitClient
from BackSplitLib.permissions import ACTIONS, DEFAULT_PROJECT, ROLES, least_role, may, role_allows
from BackSplitLib.projects import PROJECT_PARAM
from BackSplitLib.server.access import check_declared, requires, route_table
from BackSplitLib.server.app import create_app
from BackSplitLib.server.state import is_streamed_upload

OTHER_PROJECT = "lung"
LUNG_SCHEMA = {"labels": {"background": 0, "lung": 1, "nodule": 2}, "target": "nodule"}


def backsplit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "BackSplitLib", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def add_user(data, name: str, role: str, project: str = DEFAULT_PROJECT, database: str | None = None) -> str:
    """``backsplit users add``: the token is stdout's only line."""
    extra = ("--database", database) if database else ()
    done = backsplit("users", "add", name, "--role", role, "--project", project, "--data", str(data), *extra)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert len(token) >= 40 and "\n" not in token, done.stdout
    return token


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """The server and a token per role in the default project, plus a trainer of another project only."""
    root = tmp_path_factory.mktemp("people")
    srv = ServerProcess(root / "data", root / "token", workers=0).start()
    BackSplitClient(srv.url, srv.token).create_project(OTHER_PROJECT, LUNG_SCHEMA)  # a role needs its project
    tokens = {"viewer": add_user(srv.data, "viewer-user", "viewer")}  # the CLI once; the others directly (faster)
    with _accounts(srv) as accounts:
        tokens.update({role: accounts.add(f"{role}-user", role) for role in ROLES if role != "viewer"})
        tokens["outsider"] = accounts.add("outsider-user", "trainer", OTHER_PROJECT)
    tokens["operator"] = srv.token
    yield srv, tokens
    srv.stop()


@contextmanager
def _accounts(srv: ServerProcess):
    """The users table of the running server's store, opened beside it (as the CLI does)."""
    from BackSplitLib.server.accounts import Accounts
    from BackSplitLib.server.store import Store

    store = Store(srv.data)
    try:
        yield Accounts(store)
    finally:
        store.close()


def _as(srv: ServerProcess, token: str | None, **transport) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=60,
                        transport=httpx.HTTPTransport(**transport) if transport else None)


def _audit(srv, tokens, after: int) -> list[dict]:
    """The audit rows after row ``after``, read through GET /audit as the operator (that read is recorded
    too, after the rows it returns)."""
    with _as(srv, tokens["operator"]) as http:
        rows = http.get("/audit").json()
    return [r for r in rows if r["id"] > after]


def _last_id(srv) -> int:
    """The newest audit row's id, read from the database file (a GET /audit would add a row)."""
    import sqlite3

    with sqlite3.connect(srv.data / "backsplit.db") as db:
        return db.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0]


# ---------------------------------------------------------------------- the declarations
def test_every_route_declares_its_action_and_an_undeclared_route_stops_the_app(tmp_path):
    from fastapi import FastAPI

    app = create_app(tmp_path / "data", "t" * 32, workers=0)
    assert all(entry.requirement is not None for entry in route_table(app))
    bare = FastAPI()
    bare.add_api_route("/declared", lambda: {}, methods=["GET"], dependencies=[requires("read")])
    bare.add_api_route("/forgotten", lambda: {}, methods=["POST"])
    with pytest.raises(RuntimeError, match="POST /forgotten"):
        check_declared(bare)
    with pytest.raises(ValueError):
        requires("fly")


def _role(who: str, project: str) -> str | None:
    """The role of the fixture's user ``who`` in ``project``."""
    if who in ("admin", "operator"):
        return "admin"
    if who == "outsider":
        return "trainer" if project == OTHER_PROJECT else None
    return who if project == DEFAULT_PROJECT else None


def test_the_role_matrix_every_route_times_every_role(people, tmp_path):
    """Generated from the routes' declarations: each non-public route, asked by each role (and by a user with
    a role in another project only), is refused with 403 exactly when the role table says so. A route under
    ``/projects/{project}`` is asked in both projects, so every role of the default project is also checked
    against the other project, where it has none (and the other project's trainer against the default
    project). Ids that do not exist and empty bodies: an allowed request ends in 404/405/422, never in a
    change."""
    srv, tokens = people
    table = route_table(create_app(tmp_path / "data", "t" * 32, workers=0), is_streamed_upload)
    with _as(srv, tokens["operator"]) as http:
        served = http.get("/openapi.json").json()["paths"]
    checked = 0
    clients = {who: _as(srv, token) for who, token in tokens.items()}
    for entry in table:
        for method in sorted(entry.methods):
            need = entry.requirement
            if entry.path.startswith("/docs") or entry.path in ("/redoc", "/openapi.json"):
                assert need.label == "signed_in"
            else:
                assert served[entry.path][method.lower()]["x-backsplit-action"] == need.label  # the served API = table
            if need.public:
                continue
            projects = (DEFAULT_PROJECT, OTHER_PROJECT) if PROJECT_PARAM in _params(entry.path) else (DEFAULT_PROJECT,)
            for project in projects:
                path = entry.path.format(**{name: ("nonexistent" if name != PROJECT_PARAM else project)
                                            for name in _params(entry.path)})
                for who, http in clients.items():
                    allowed = need.action is None or role_allows(_role(who, project), need.action)
                    response = http.request(method, path)
                    assert response.status_code != 401, (who, method, path)
                    assert (response.status_code == 403) == (not allowed), (who, method, path, response.text[:200])
                    if not allowed:
                        assert least_role(need.action) in response.json()["detail"]
                        assert f"project '{project}'" in response.json()["detail"]
                    checked += 1
    for http in clients.values():
        http.close()
    prefix = f"/projects/{{{PROJECT_PARAM}}}"
    today = {(e.path, e.methods): e.requirement for e in table}
    prefixed = [e for e in table if e.path.startswith(prefix + "/")]  # cases, jobs, models, predict: 18 routes
    assert len(prefixed) >= 18 and all(today[e.path[len(prefix):], e.methods] is e.requirement for e in prefixed)
    assert checked >= 40 * len(tokens)


def test_a_viewer_of_one_project_is_refused_in_another_and_sees_only_their_projects(people):
    """Issue 24's isolation: a viewer of the lung project reads and predicts there only; in the default
    project every route is 403 (before an upload's body is read), GET /projects lists only the lung project,
    and each refusal's audit row names the project the request was for."""
    srv, tokens = people
    with _accounts(srv) as accounts:
        token = accounts.add("lung-viewer", "viewer", OTHER_PROJECT)
    before = _last_id(srv)
    with _as(srv, token) as http:
        assert http.get(f"/projects/{OTHER_PROJECT}/cases").status_code == 200
        assert http.get(f"/projects/{OTHER_PROJECT}").json()["target"] == LUNG_SCHEMA["target"]
        assert [p["name"] for p in http.get("/projects").json()] == [OTHER_PROJECT]
        for method, path in (("GET", "/cases"), ("GET", f"/projects/{DEFAULT_PROJECT}/cases"),
                             ("GET", f"/projects/{DEFAULT_PROJECT}"), ("POST", f"/projects/{DEFAULT_PROJECT}/predict"),
                             ("POST", "/predict")):
            refused = http.request(method, path, content=b"x" * 1024,
                                   headers={"content-type": "multipart/form-data; boundary=b"})
            assert refused.status_code == 403, (method, path, refused.text)
            assert f"has no role in project '{DEFAULT_PROJECT}'" in refused.json()["detail"]
        assert http.post("/projects", json={"name": "mine", "schema": LUNG_SCHEMA}).status_code == 403
        assert http.post(f"/projects/{OTHER_PROJECT}/predict").status_code == 415  # allowed there (no form sent)
    with _as(srv, tokens["admin"]) as admin:
        assert {p["name"] for p in admin.get("/projects").json()} >= {DEFAULT_PROJECT, OTHER_PROJECT}
    rows = [r for r in _audit(srv, tokens, before) if r["user"] == "lung-viewer"]
    assert [(r["action"], r["project"], r["outcome"]) for r in rows] == [
        ("read", DEFAULT_PROJECT, 403), ("read", DEFAULT_PROJECT, 403), ("read", DEFAULT_PROJECT, 403),
        ("predict", DEFAULT_PROJECT, 403), ("predict", DEFAULT_PROJECT, 403), ("create_project", DEFAULT_PROJECT, 403),
        ("predict", OTHER_PROJECT, 415)]


def test_a_role_in_a_project_that_does_not_exist_is_refused_with_the_projects_listed(people):
    srv, _ = people
    for command in (("add", "newcomer"), ("grant", "viewer-user")):
        done = backsplit("users", *command, "--role", "viewer", "--project", "liverr", "--data", str(srv.data))
        assert done.returncode != 0
        assert "project 'liverr' does not exist" in done.stderr and f"{DEFAULT_PROJECT}, {OTHER_PROJECT}" in done.stderr
    with _accounts(srv) as accounts:
        users = {u["name"]: u for u in accounts.list()}
    assert "newcomer" not in users and users["viewer-user"]["projects"] == {DEFAULT_PROJECT: "viewer"}


def _params(template: str) -> list[str]:
    import string

    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def test_me_says_who_and_what_and_may_reads_it(people):
    srv, tokens = people
    for role in ROLES:
        with _as(srv, tokens[role]) as http:
            me = http.get("/me").json()
        assert me["user"] == f"{role}-user" and me["admin"] == (role == "admin")
        assert me["projects"] == ({} if role == "admin" else {DEFAULT_PROJECT: role})
        assert may(me, DEFAULT_PROJECT, "start_job") == role_allows(role, "start_job")
    with _as(srv, tokens["outsider"]) as http:
        me = http.get("/me").json()
    assert me["projects"] == {OTHER_PROJECT: "trainer"} and "start_job" in me["actions"][OTHER_PROJECT]
    assert not may(me, DEFAULT_PROJECT, "read") and may(me, OTHER_PROJECT, "start_job")
    with _as(srv, tokens["operator"]) as http:
        assert http.get("/me").json() == {"user": "operator", "admin": True, "projects": {},
                                          "actions": {"*": sorted(ACTIONS)}}


# ---------------------------------------------------------------------- audit
def test_each_audited_action_and_each_refusal_writes_one_row_and_reads_write_none(people, phantom_cases):
    srv, tokens = people
    before = _last_id(srv)
    expected = []  # (user, action, outcome, object or None when checked separately)
    with _as(srv, tokens["annotator"]) as ann, _as(srv, tokens["trainer"]) as trainer, \
            _as(srv, tokens["viewer"]) as viewer, _as(srv, tokens["admin"]) as admin:
        case = ann.post("/cases", files=case_form(phantom_cases[0])[0], data=case_form(phantom_cases[0])[1])
        assert case.status_code == 201, case.text
        case_id = case.json()["id"]
        expected.append(("annotator-user", "upload_case", 201, case_id))
        assert viewer.get("/cases").status_code == 200 and viewer.get(f"/cases/{case_id}").status_code == 200
        assert ann.get(f"/cases/{case_id}/image").status_code == 200
        expected.append(("annotator-user", "read_case_files", 200, case_id))
        job = trainer.post("/jobs", json={"kind": "train", "cases": [case_id], "iterations": 2, **FAST_JOB})
        assert job.status_code == 202, job.text
        expected.append(("trainer-user", "start_job", 202, job.json()["id"]))
        assert trainer.get("/jobs").status_code == 200
        assert trainer.delete(f"/jobs/{job.json()['id']}").status_code == 200
        expected.append(("trainer-user", "cancel_job", 200, job.json()["id"]))
        assert viewer.delete(f"/cases/{case_id}").status_code == 403
        expected.append(("viewer-user", "delete_case", 403, case_id))
        assert ann.delete(f"/cases/{case_id}").status_code == 204
        expected.append(("annotator-user", "delete_case", 204, case_id))
        assert viewer.post("/predict").status_code >= 400
        expected.append(("viewer-user", "predict", None, None))
        for method, path, action in (("POST", "/models/nonexistent/promote", "promote_model"),
                                     ("GET", "/models/nonexistent/download", "download_model"),
                                     ("DELETE", "/models/nonexistent", "delete_model")):
            assert admin.request(method, path).status_code == 404
            expected.append(("admin-user", action, 404, "nonexistent"))
        assert admin.get("/models").status_code == 200 and admin.get("/me").status_code == 200
    with _as(srv, None) as nobody, _as(srv, "not-a-token-" + "z" * 30) as guesser:
        assert nobody.post("/jobs", json={}).status_code == 401
        assert guesser.get("/cases").status_code == 401
    expected += [("unknown", "start_job", 401, None), ("unknown", "read", 401, None)]

    rows = _audit(srv, tokens, before)  # the operator's GET /audit is recorded after its own answer's rows
    assert [(r["user"], r["action"]) for r in rows] == [(u, a) for u, a, _, _ in expected]
    for row, (_, _, outcome, obj) in zip(rows, expected):
        assert row["address"] == "127.0.0.1" and row["project"] == DEFAULT_PROJECT
        if outcome is not None:
            assert row["outcome"] == outcome and row["object"] == obj, row
    assert not (srv.data / "cases" / case_id).exists()  # deleting a case removes its files


def test_the_audit_filters_and_the_cli_agree(people):
    srv, tokens = people
    with _as(srv, tokens["admin"]) as admin:
        mine = admin.get("/audit", params={"user": "annotator-user", "action": "delete_case"}).json()
        assert {(r["user"], r["action"]) for r in mine} == {("annotator-user", "delete_case")}
        assert 204 in {r["outcome"] for r in mine}  # and the role matrix's 404 on a case that does not exist
        assert admin.get("/audit", params={"since": "2999-01-01T00:00:00"}).json() == []
        assert {r["project"] for r in admin.get("/audit", params={"project": OTHER_PROJECT}).json()} <= {OTHER_PROJECT}
        assert admin.get("/audit", params={"project": "kidney"}).json() == []
    with _as(srv, tokens["trainer"]) as trainer:
        assert trainer.get("/audit").status_code == 403
    client = BackSplitClient(srv.url, tokens["admin"])  # the standard-library client Slicer and the CLI use
    assert client.me()["user"] == "admin-user"
    assert [r["id"] for r in client.audit(user="annotator-user", action="delete_case")] == [r["id"] for r in mine]
    done = backsplit("audit", "--data", str(srv.data), "--user", "annotator-user", "--action", "delete_case", "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [r["id"] for r in mine]


def test_tokens_are_stored_only_as_hashes_and_never_audited(people):
    srv, tokens = people
    stored = b"".join(p.read_bytes() for p in srv.data.glob("backsplit.db*"))
    for who, token in tokens.items():
        if who != "operator":  # the operator's token is in the token file the operator asked for, only there
            assert token.encode() not in stored, who
            from BackSplitLib.server.accounts import hash_token

            assert hash_token(token).encode() in stored
    assert tokens["operator"].encode() not in stored
    assert b"not-a-token-" not in stored  # a wrong guess is not recorded either


def test_the_audit_table_refuses_changes(people):
    import sqlite3

    srv, _ = people
    with sqlite3.connect(srv.data / "backsplit.db") as db, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit")


def test_revoke_and_rotate_take_effect_at_once(people):
    srv, tokens = people
    with _accounts(srv) as accounts:
        old = accounts.add("leaver", "viewer")
    with _as(srv, old) as http:
        assert http.get("/me").status_code == 200
        assert backsplit("users", "revoke", "leaver", "--data", str(srv.data)).returncode == 0
        assert http.get("/me").status_code == 401
    rotated = backsplit("users", "rotate", "leaver", "--data", str(srv.data))
    assert rotated.returncode == 0 and "reinstates" in rotated.stderr
    with _as(srv, rotated.stdout.strip()) as http:
        assert http.get("/me").json()["user"] == "leaver"
    with _as(srv, old) as http:
        assert http.get("/me").status_code == 401
    with _accounts(srv) as accounts:
        listed = {u["name"]: u for u in accounts.list()}
    assert listed["leaver"]["revoked"] is None and listed["viewer-user"]["projects"] == {DEFAULT_PROJECT: "viewer"}
    assert all("hash" not in key for user in listed.values() for key in user)


# ---------------------------------------------------------------------- guessing
def test_an_address_that_guesses_tokens_gets_429_and_others_do_not(people):
    """From 127.0.0.2 (a second loopback address): ten wrong tokens, then 429 with Retry-After even for a good
    token from there; the good tokens from 127.0.0.1 and a wrong one from 127.0.0.3 are answered as usual."""
    srv, tokens = people
    before = _last_id(srv)
    with _as(srv, "guess-" + "g" * 37, local_address="127.0.0.2") as attacker:
        statuses = [attacker.get("/cases").status_code for _ in range(10)]
        throttled = attacker.get("/cases")
    assert statuses == [401] * 10
    assert throttled.status_code == 429 and 1 <= int(throttled.headers["retry-after"]) <= 60
    with _as(srv, tokens["viewer"], local_address="127.0.0.2") as same_address:
        assert same_address.get("/cases").status_code == 429
    with _as(srv, tokens["viewer"]) as other_address:
        assert other_address.get("/cases").status_code == 200
    with _as(srv, "typo-" + "t" * 38, local_address="127.0.0.3") as neighbour:
        assert neighbour.get("/cases").status_code == 401
    rows = _audit(srv, tokens, before)
    assert [(r["address"], r["outcome"]) for r in rows] == \
        [("127.0.0.2", 401)] * 10 + [("127.0.0.2", 429)] * 2 + [("127.0.0.3", 401)]
    assert all(r["user"] == "unknown" for r in rows)
