"""Projects (issue 24): one lesion task each, with its own schema, cases, jobs, models and current model.

The store's rules on both backends (SQLite and PostgreSQL), a store of the previous revision upgraded into
the ``default`` project, and over real HTTP on the shared server: a job in project A trains on A's cases only
(its recorded case ids and the run's own list of what it trained on), predict in B never uses A's model,
a case with another target than its project's is 422, an unknown project is 404, and today's routes are the
default project's.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from alembic import command
from server_harness import FAST_JOB, case_form
from sqlalchemy import column, insert, table, text

from BackSplitLib.client import BackSplitClient, BackSplitClientError
from BackSplitLib.permissions import DEFAULT_PROJECT, PROJECT_ENV
from BackSplitLib.server.database import make_engine, migrations_config, sqlite_url
from BackSplitLib.server.store import Conflict, NotFound, Store

SCHEMA = {"labels": {"background": 0, "liver": 1, "lesion": 2}, "target": "lesion"}
CYST = {"labels": {"background": 0, "kidney": 1, "cyst": 2}, "target": "cyst"}


# ---------------------------------------------------------------------- the store, both backends
@pytest.fixture
def store(tmp_path, database_url) -> Store:
    store = Store(tmp_path / "data", database_url)
    yield store
    store.close()


def add_case(store: Store, project: str = DEFAULT_PROJECT, schema: dict = SCHEMA) -> str:
    staged = store.staging_dir()
    (staged / "image.nii.gz").write_bytes(b"image")
    (staged / "label.nii.gz").write_bytes(b"label")
    return store.add_case(staged, {"name": "case", "image_file": "image.nii.gz", "label_file": "label.nii.gz",
                                   "schema": schema, "modality": "CT", "size": [4, 4, 4], "spacing": [1.0, 1.0, 1.0],
                                   "classes": list(schema["labels"]), "target_voxels": 3, "bytes": 10}, project)["id"]


def run_folder(tmp_path: Path, name: str) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "model.json").write_text("{}")
    return run


def test_the_store_keeps_each_projects_cases_jobs_models_and_current_model_apart(store, tmp_path):
    store.add_project("kidney", CYST)
    with pytest.raises(Conflict, match="exists already"):
        store.add_project("kidney", CYST)
    mine, theirs = add_case(store, "kidney", CYST), add_case(store)
    assert [c["id"] for c in store.list_cases("kidney")] == [mine] and store.case_ids() == [theirs]
    with pytest.raises(NotFound, match="in project 'kidney'"):
        store.get_case(theirs, "kidney")
    with pytest.raises(NotFound, match="in project 'kidney'"):
        store.add_job("train", [mine, theirs], None, {}, "kidney")  # another project's case: never in the job
    default_model = store.register_model(run_folder(tmp_path, "d"), schema=SCHEMA, metrics={}, parent=None,
                                         case_ids=[theirs], source="upload")
    with pytest.raises(NotFound, match="in project 'kidney'"):
        store.add_job("finetune", [mine], default_model["id"], {}, "kidney")  # nor another project's model
    job = store.add_job("train", [mine], None, {}, "kidney")
    assert job["project"] == "kidney" and [j["id"] for j in store.list_jobs("kidney")] == [job["id"]]
    assert store.list_jobs() == [] and store.claim_next_job(1, "w:1")["id"] == job["id"]  # one queue for all
    model = store.register_model(run_folder(tmp_path, "k"), schema=CYST, metrics={}, parent=None, case_ids=[mine],
                                 source="train", job_id=job["id"], worker="w:1")
    assert model["project"] == "kidney" and model["current"]  # the job's project's first model is its current
    assert store.current_model_id("kidney") == model["id"] and store.current_model_id() == default_model["id"]
    with pytest.raises(NotFound):
        store.promote_model(model["id"])  # promote / roll back stays inside a project
    store.add_project("empty", CYST)
    with pytest.raises(NotFound, match="no current model in project 'empty'"):
        store.get_model("current", "empty")
    projects = {p["name"]: p for p in store.list_projects()}
    assert (projects["kidney"]["target"], projects["kidney"]["cases"], projects["kidney"]["models"]) == ("cyst", 1, 1)
    assert (projects[DEFAULT_PROJECT]["schema"], projects[DEFAULT_PROJECT]["current_model"]) == (None, default_model["id"])
    with pytest.raises(NotFound, match="project 'nowhere' does not exist"):
        add_case(store, "nowhere")
    from BackSplitLib.server.worker import build_dataset

    with pytest.raises(NotFound, match="in project 'kidney'"):  # the worker reads through the same scoped lookups
        build_dataset(store, [theirs], tmp_path / "dataset", project="kidney")


def test_two_clients_creating_one_project_at_once_get_one_project_and_one_conflict(store):
    from concurrent.futures import ThreadPoolExecutor

    def create(_):
        try:
            return store.add_project("lung", SCHEMA)["name"]
        except Conflict as e:
            return str(e)

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(create, range(4)))
    assert outcomes == ["lung"] + ["project 'lung' exists already; pick another name"] * 3


def test_a_store_of_the_previous_revision_moves_into_the_default_project_with_nothing_lost(tmp_path, database_url):
    data = tmp_path / "data"
    data.mkdir()
    url = database_url or sqlite_url(data)
    engine = make_engine(url)
    with engine.begin() as db:  # the store as revision 0002 (issue 23's store) wrote it
        command.upgrade(migrations_config(db), "0002")
        row = {"created": 1.0, "schema": json.dumps(SCHEMA), "cases": json.dumps(["c1"])}
        db.execute(insert(table("cases", *map(column, ("id", "created", "name", "image_file", "label_file", "schema",
                                                        "modality", "size", "spacing", "classes", "target_voxels",
                                                        "bytes")))).values(
            id="c1", created=1.0, name="n", image_file="i.nii.gz", label_file="l.nii.gz", schema=row["schema"],
            modality="CT", size="[4, 4, 4]", spacing="[1, 1, 1]", classes='["lesion"]', target_voxels=3, bytes=9))
        db.execute(insert(table("jobs", *map(column, ("id", "created", "kind", "state", "params", "cases")))).values(
            id="j1", created=2.0, kind="train", state="queued", params="{}", cases=row["cases"]))
        db.execute(insert(table("models", *map(column, ("id", "created", "source", "schema", "metrics", "cases")))).values(
            id="m1", created=3.0, source="upload", schema=row["schema"], metrics="{}", cases=row["cases"]))
        db.execute(text("INSERT INTO settings (key, value) VALUES ('current_model', 'm1')"))
    engine.dispose()

    store = Store(data, database_url)
    try:
        assert [(p["name"], p["schema"], p["current_model"]) for p in store.list_projects()] == [
            (DEFAULT_PROJECT, None, "m1")]
        assert store.get_case("c1")["project"] == DEFAULT_PROJECT and store.get_case("c1")["schema"] == SCHEMA
        assert store.get_job("j1")["cases"] == ["c1"] and store.get_model("current")["id"] == "m1"
        with store.engine.connect() as db:  # the setting moved into the project: one current model, not two
            assert db.execute(text("SELECT count(*) FROM settings WHERE key = 'current_model'")).scalar() == 0
    finally:
        store.close()


# ---------------------------------------------------------------------- over HTTP, on the shared server
@pytest.fixture(scope="module")
def two_projects(server) -> tuple[str, str]:
    """Two fresh projects with the phantom's schema (unique names: the server is shared with other modules)."""
    from BackSplitLib.phantom import PHANTOM_SCHEMA

    suffix = uuid.uuid4().hex[:6]
    client = server.client()
    names = (f"a-{suffix}", f"b-{suffix}")
    for name in names:
        assert client.create_project(name, PHANTOM_SCHEMA)["target"] == PHANTOM_SCHEMA.target
    return names


def test_an_unknown_project_is_404_with_a_clear_message_on_every_kind_of_route(server):
    with server.http() as http:
        for method, path in (("GET", "/projects/nowhere"), ("GET", "/projects/nowhere/cases"),
                             ("POST", "/projects/nowhere/jobs"), ("GET", "/projects/nowhere/models/current"),
                             ("POST", "/projects/nowhere/predict"), ("GET", "/projects/Bad%20Name/jobs")):
            response = http.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 404, (path, response.text)
            assert "project" in response.json()["detail"] and "GET /projects" in response.json()["detail"]


def test_creating_a_project_checks_its_name_and_schema(server, two_projects):
    with server.http() as http:
        bad_name = http.post("/projects", json={"name": "Liver Mets", "schema": SCHEMA})
        assert bad_name.status_code == 422 and "lower-case" in bad_name.json()["detail"]
        bad_schema = http.post("/projects", json={"name": "x-schema", "schema": {"labels": {"background": 0}}})
        assert bad_schema.status_code == 422 and "target" in bad_schema.json()["detail"]
        again = http.post("/projects", json={"name": two_projects[0], "schema": SCHEMA})
        assert again.status_code == 409
        assert {two_projects[0], two_projects[1], DEFAULT_PROJECT} <= {p["name"] for p in http.get("/projects").json()}


def test_a_case_with_another_target_than_its_projects_is_422_saying_which_it_expects(server, phantom_cases):
    name = f"cysts-{uuid.uuid4().hex[:6]}"
    client = server.client()
    client.create_project(name, CYST)
    files, data = case_form(phantom_cases[0])  # its target is 'lesion'
    with server.http() as http:
        response = http.post(f"/projects/{name}/cases", files=files, data=data)
    assert response.status_code == 422
    assert "expects the target class 'cyst'" in response.json()["detail"] and "'lesion'" in response.json()["detail"]
    assert client.in_project(name).list_cases() == []


def test_the_default_projects_routes_are_todays_routes(server, phantom_cases):
    with server.http() as http:
        files, data = case_form(phantom_cases[1])
        uploaded = http.post(f"/projects/{DEFAULT_PROJECT}/cases", files=files, data=data).json()
        assert uploaded["project"] == DEFAULT_PROJECT
        for path in ("/cases", "/models", "/models/current", f"/cases/{uploaded['id']}"):
            old, new = http.get(path), http.get(f"/projects/{DEFAULT_PROJECT}{path}")
            assert (old.status_code, old.json()) == (new.status_code, new.json()), path
        jobs = [[j["id"] for j in http.get(path).json()] for path in ("/jobs", f"/projects/{DEFAULT_PROJECT}/jobs")]
        assert jobs[0] == jobs[1]  # (ids: a job of another module may be making progress meanwhile)
        assert http.delete(f"/cases/{uploaded['id']}").status_code == 204
        assert http.get(f"/projects/{DEFAULT_PROJECT}/cases/{uploaded['id']}").status_code == 404


def test_a_job_in_a_project_trains_on_its_cases_only_and_predict_in_another_never_uses_its_model(
        server, two_projects, phantom_cases, tmp_path):
    a, b = (server.client().in_project(name) for name in two_projects)
    mine = [a.upload_case(c.image, c.label, c.schema)["id"] for c in phantom_cases[:2]]
    theirs = b.upload_case(phantom_cases[2].image, phantom_cases[2].label, phantom_cases[2].schema)["id"]
    with pytest.raises(BackSplitClientError) as refused:
        a.create_job("train", [mine[0], theirs], iterations=2, **FAST_JOB)
    assert refused.value.status == 422 and f"project '{a.project}'" in refused.value.detail
    with pytest.raises(BackSplitClientError) as none_yet:
        b.predict(phantom_cases[0].image, tmp_path)
    assert none_yet.value.status == 404 and f"no current model in project '{b.project}'" in none_yet.value.detail

    job = a.create_job("train", "all", iterations=2, **FAST_JOB)
    assert sorted(job["cases"]) == sorted(mine) and job["project"] == a.project
    final = a.wait(job["id"])
    assert final["state"] == "succeeded", final
    trained = json.loads((server.data / "models" / final["model_id"] / "model.json").read_text())["training"]
    assert sorted(trained["train_cases"] + trained["val_cases"]) == sorted(mine)  # what the run itself read
    model_a = a.get_model("current")
    assert model_a["id"] == final["model_id"] and model_a["project"] == a.project
    assert [m["id"] for m in b.list_models()] == [] and b.get_project()["current_model"] is None

    with pytest.raises(BackSplitClientError) as other:  # A's model by id, asked in B: not there
        b.predict(phantom_cases[0].image, tmp_path, model=model_a["id"])
    assert other.value.status == 404
    with pytest.raises(BackSplitClientError) as finetune:
        b.create_job("finetune", "all", base_model=model_a["id"], iterations=2, **FAST_JOB)
    assert finetune.value.status == 422

    # B's own copy of the model, with its own id (a ~17 MiB zip: a project's upload route gets --max-upload too)
    model_b = b.upload_model(a.download_model(model_a["id"], tmp_path / "a.zip"))
    assert model_b["current"] and model_b["id"] != model_a["id"] and model_b["project"] == b.project
    with server.http() as http:
        for name, expected in ((b.project, model_b["id"]), (a.project, model_a["id"])):
            response = http.post(f"/projects/{name}/predict", files={
                "image": (phantom_cases[0].image.name, phantom_cases[0].image.read_bytes())})
            assert response.status_code == 200 and response.headers["X-BackSplit-Model"] == expected
    b.promote_model(model_b["id"])
    assert a.get_model("current")["id"] == model_a["id"]  # promote / rollback in B leaves A alone
    with pytest.raises(BackSplitClientError):
        a.promote_model(model_b["id"])


def test_the_cli_creates_lists_and_works_in_a_project(server, phantom_cases, tmp_path, monkeypatch, capsys):
    from BackSplitLib.cli import main

    name = f"cli-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("BACKSPLIT_TOKEN", server.token)
    common = ["--server", server.url]
    assert main(["remote", "projects", "--create", name, "--target", "lesion", "--auxiliary", "liver,kidney",
                 *common]) == 0
    assert f"--project {name}" in capsys.readouterr().err
    case = phantom_cases[0]
    assert main(["remote", "upload", str(case.image), str(case.label), "--schema", json.dumps(case.schema.to_dict()),
                 "--project", name, *common]) == 0
    capsys.readouterr()
    monkeypatch.setenv(PROJECT_ENV, name)  # the environment picks the project when --project is not given
    assert main(["remote", "cases", "--json", *common]) == 0
    assert [c["project"] for c in json.loads(capsys.readouterr().out)] == [name]
    assert main(["remote", "projects", "--json", *common]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert listed[name]["schema"]["labels"] == {"background": 0, "liver": 1, "kidney": 2, "lesion": 3}
    assert main(["remote", "jobs", "--project", "nowhere", *common]) == 2
    assert "project 'nowhere' does not exist" in capsys.readouterr().err
    assert main(["remote", "jobs", "--project", "Not Valid", *common]) == 2
    assert "not valid" in capsys.readouterr().err


def test_the_client_takes_its_project_from_the_environment(monkeypatch):
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    assert BackSplitClient("http://127.0.0.1:1").project == DEFAULT_PROJECT
    monkeypatch.setenv(PROJECT_ENV, "lung")
    client = BackSplitClient("http://127.0.0.1:1")
    assert (client.project, client.in_project("liver").project, client.project) == ("lung", "liver", "lung")
    with pytest.raises(BackSplitClientError, match="not valid"):
        client.project = "../cases"
