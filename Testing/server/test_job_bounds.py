"""Issue 9, job bounds: every job field has a range (shown in the OpenAPI schema); the patch size is
checked by the engine's own configuration rule; iterations are bounded by --max-iterations; a job whose
best validation Dice is 0 or below is not auto-promoted."""

from __future__ import annotations

import pytest

from BackSplitLib.server.store import Store
from BackSplitLib.server.worker import Worker, should_promote
from server_harness import case_form


@pytest.fixture(scope="module")
def strict_case(strict_server, phantom_cases) -> str:
    with strict_server.http() as http:
        files, data = case_form(phantom_cases[0])
        case = http.post("/cases", files=files, data=data)
        assert case.status_code == 201, case.text
        yield case.json()["id"]
        for job in http.get("/jobs").json():
            if job["state"] == "queued":
                http.delete(f"/jobs/{job['id']}")
        http.delete(f"/cases/{case.json()['id']}")


BAD_JOBS = {
    "patch [0,0,0]": {"patch_size": [0, 0, 0]},
    "negative patch": {"patch_size": [-16, 32, 32]},
    "patch not a multiple of the divisor": {"patch_size": [20, 32, 32]},
    "patch over 512": {"patch_size": [1024, 32, 32]},
    "two patch sides": {"patch_size": [32, 32]},
    "seed 2**70": {"seed": 2**70},
    "negative seed": {"seed": -1},
    "unknown arch": {"arch": "transformer9000"},
    "iterations over --max-iterations": {"iterations": 1001},
    "zero iterations": {"iterations": 0},
    "NUL in a case id": {"cases": ["abc\x00def"]},
    "bidi override in the base model": {"kind": "finetune", "base_model": "m\u202eodel"},
    # issue 19: each field in range, the combination not (memory: batch x patch x classes; time: x iterations)
    "batch 1024 x patch 512^3": {"batch_size": 1024, "patch_size": [512, 512, 512], "iterations": 1000},
    "1000 iterations x batch 64 x patch 64^3": {"batch_size": 64, "patch_size": [64, 64, 64], "iterations": 1000},
}


@pytest.mark.parametrize("problem", list(BAD_JOBS))
def test_out_of_range_job_fields_get_422_and_no_job(strict_server, strict_case, problem):
    with strict_server.http() as http:
        before = len(http.get("/jobs").json())
        response = http.post("/jobs", json={"kind": "train", "cases": [strict_case], **BAD_JOBS[problem]})
        assert "\x00" not in response.text and "\u202e" not in response.json()["detail"]
        assert response.status_code == 422, response.text
        assert isinstance(response.json()["detail"], str)
        assert len(http.get("/jobs").json()) == before


def test_a_job_within_every_bound_is_queued(strict_server, strict_case):
    with strict_server.http() as http:
        response = http.post("/jobs", json={"kind": "train", "cases": [strict_case], "iterations": 1000,
                                            "patch_size": [32, 32, 16], "seed": 2**32 - 1, "arch": "unet"})
    assert response.status_code == 202, response.text


def test_the_openapi_schema_shows_the_ranges(strict_server):
    with strict_server.http() as http:  # the API description needs the token (issue 19)
        fields = http.get("/openapi.json").json()["components"]["schemas"]["JobRequest"]["properties"]
    seed = next(s for s in fields["seed"]["anyOf"] if s.get("type") == "integer")
    assert seed["minimum"] == 0 and seed["maximum"] == 2**32 - 1
    patch = next(s for s in fields["patch_size"]["anyOf"] if s.get("type") == "array")
    assert patch["items"]["minimum"] == 1 and patch["items"]["maximum"] == 512


@pytest.mark.parametrize("best, promoted", [(None, True), (0.4, True), (0.0, False), (-1.0, False)])
def test_auto_promotion_needs_a_positive_best_validation_dice(best, promoted):
    assert should_promote({"auto_promote": True}, {"best_val_dice": best}) is promoted
    assert should_promote({"auto_promote": False}, {"best_val_dice": 0.9}) is False


def test_a_worker_job_with_zero_dice_creates_a_model_that_is_not_current(tmp_path, phantom_cases):
    """The real worker and store; only the engine call is replaced by one that reports Dice 0."""
    from BackSplitLib.bench.cost import _preprocessing, make_run
    from BackSplitLib.phantom import PHANTOM_SCHEMA
    from BackSplitLib.run_folder import read_model_json, write_model_json

    store = Store(tmp_path / "data")
    run = make_run(tmp_path / "run", "unet", PHANTOM_SCHEMA, _preprocessing((1, 1, 1), (32, 32, 32)))
    write_model_json(run, {**read_model_json(run), "best_val_dice": 0.0})
    job = store.add_job("train", [], None, {"auto_promote": True})
    worker = Worker(store, run_job=lambda *args: (run, {"best_val_dice": 0.0}))
    worker.run(store.claim_next_job(0))
    model = store.get_job(job["id"])["model_id"]
    assert model is not None and not store.get_model(model)["current"]
    # issue 20: the job succeeds and says why its model was not promoted
    from BackSplitLib.vocabulary import JOB_NOT_PROMOTED_NO_LESION

    finished = store.get_job(job["id"])
    assert finished["state"] == "succeeded" and finished["error"] == JOB_NOT_PROMOTED_NO_LESION
    assert JOB_NOT_PROMOTED_NO_LESION == "succeeded, not promoted: the lesion was never predicted"


def test_the_lesion_watch_record_of_a_run_decides_promotion():
    from BackSplitLib.run_folder import run_metrics

    never = run_metrics({"best_val_dice": 0.2, "lesion": {"found": False, "started_at": None, "message": "m"}})
    assert never["lesion_found"] is False and should_promote({"auto_promote": True}, never) is False
    found = run_metrics({"best_val_dice": 0.2, "lesion": {"found": True, "started_at": 40, "message": None}})
    assert found["lesion_started_at"] == 40 and should_promote({"auto_promote": True}, found) is True
