"""Training through the server with the real engine: upload -> train -> fine-tune -> events -> models ->
predict; cancel; a killed worker; a restart with a queued job."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import zipfile

import httpx
import pytest
import SimpleITK as sitk
from server_harness import FAST_JOB, wait_for

from BackSplitLib.client import BackSplitClientError
from BackSplitLib.io import check_same_geometry
from BackSplitLib.phantom import PHANTOM_SCHEMA


@pytest.fixture(scope="module")
def uploaded(server, phantom_cases) -> list[str]:
    client = server.client()
    return [client.upload_case(c.image, c.label, c.schema)["id"] for c in phantom_cases]


def _sse_events(server, job_id: str) -> list[tuple[str, dict]]:
    """Read the raw event stream with httpx: checks the wire format, not just our client's parser."""
    events, name = [], None
    with server.http() as http, http.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
    return events


def _worker_pid(server, job_id: str) -> int | None:
    with sqlite3.connect(server.data / "backsplit.db") as db:
        row = db.execute("SELECT worker_pid FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return row[0] if row else None


def test_upload_train_finetune_follow_events_and_predict(server, uploaded, phantom_cases, tmp_path):
    client = server.client()
    job = client.create_job("train", uploaded, iterations=2, **FAST_JOB)
    assert job["state"] == "queued" and job["total_iterations"] == 2
    events = _sse_events(server, job["id"])
    states = [e["state"] for name, e in events if name == "state"]
    assert states[-1] == "succeeded", client.get_job(job["id"])
    assert "running" in states or states[0] == "succeeded"
    progress = [e["iteration"] for name, e in events if name == "progress"]
    assert progress == sorted(progress) and progress[-1] == 2
    first = client.get_model(client.get_job(job["id"])["model_id"])
    assert first["current"] and first["parent"] is None and sorted(first["cases"]) == sorted(uploaded)
    # The union of three schemas by class name: the full phantom schema (binary and liver-only cases are partial).
    assert first["schema"]["labels"] == dict(PHANTOM_SCHEMA.labels)

    job = client.create_job("finetune", "all", iterations=2, **FAST_JOB)
    seen = []
    final = client.wait(job["id"], on_event=lambda name, data: seen.append((name, data["state"], data["iteration"])))
    assert final["state"] == "succeeded" and final["iteration"] == 2 and final["error"] is None
    assert seen[-1][:2] == ("state", "succeeded") and any(name == "progress" for name, _, _ in seen)
    second = client.get_model("current")
    assert second["id"] == final["model_id"] and second["parent"] == first["id"]
    assert {m["id"] for m in client.list_models()} >= {first["id"], second["id"]}

    for case in (phantom_cases[0], phantom_cases[1]):  # NIfTI in -> NIfTI out, NRRD in -> NRRD out
        mask_path = client.predict(case.image, tmp_path)
        assert mask_path.name.endswith(".nrrd" if case.image.name.endswith(".nrrd") else ".nii.gz")
        mask = sitk.ReadImage(str(mask_path))
        check_same_geometry(sitk.ReadImage(str(case.image)), mask, "input", "mask")
        assert set(sitk.GetArrayViewFromImage(mask).ravel().tolist()) <= {0, 1}

    bundle = client.predict(phantom_cases[0].image, tmp_path / "classes.zip", model=first["id"], classes=True)
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        assert json.loads(zf.read("schema.json"))["target"] == "lesion"
    assert any("_lesion" in n for n in names) and any("_classes" in n for n in names)

    # Rollback, download, re-upload, delete.
    assert client.promote_model(first["id"])["current"]
    assert client.get_model("current")["id"] == first["id"]
    archive = client.download_model(second["id"], tmp_path / "second.zip")
    with zipfile.ZipFile(archive) as zf:
        assert {"model.json", "model.safetensors"} <= set(zf.namelist())
        texts = {n: zf.read(n).decode() for n in zf.namelist() if n.endswith((".json", ".jsonl", ".log"))}
    for root in {str(server.data), str(server.data.resolve())}:  # issue 19: no server path in a downloaded model
        assert not [n for n, text in texts.items() if root in text]
    assert json.loads(texts["model.json"])["training"]["dataset"].startswith("jobs/")
    again = client.upload_model(archive)
    assert again["source"] == "upload" and not again["current"] and again["schema"] == second["schema"]
    with pytest.raises(BackSplitClientError) as error:
        client.delete_model(first["id"])
    assert error.value.status == 409  # the current model cannot be deleted
    client.delete_model(again["id"])
    assert again["id"] not in {m["id"] for m in client.list_models()}


def test_cancel_ends_a_queued_job_at_once_and_a_running_one_without_a_model_while_the_api_answers(server, uploaded):
    client = server.client()
    models_before = len(client.list_models())
    running = client.create_job("train", uploaded, iterations=100_000, auto_promote=False, **FAST_JOB)
    waiting = client.create_job("train", uploaded, iterations=3, auto_promote=False, **FAST_JOB)
    assert client.cancel_job(waiting["id"])["state"] == "cancelled"
    wait_for(lambda: client.get_job(running["id"])["iteration"] >= 1, what="the job to start training")
    for _ in range(3):  # the API process answers while the worker process trains
        response = httpx.get(f"{server.url}/health", timeout=5)
        assert response.status_code == 200 and response.json()["queue_length"] == 1
    assert client.cancel_job(running["id"])["cancel_requested"]
    final = wait_for(lambda: (j := client.get_job(running["id"]))["state"] in ("cancelled", "failed", "succeeded") and j,
                     timeout=30, what="the cancel")
    assert final["state"] == "cancelled" and final["model_id"] is None and final["error"] is None
    assert client.get_job(waiting["id"])["state"] == "cancelled" and client.get_job(waiting["id"])["started"] is None
    assert len(client.list_models()) == models_before
    with pytest.raises(BackSplitClientError) as error:
        client.cancel_job(running["id"])
    assert error.value.status == 409


def test_killing_the_worker_mid_training_resumes_the_job_and_the_api_stays_up(server, uploaded):
    client = server.client()
    # Enough iterations that the job is still running when the test reads the worker's pid (a fast
    # machine finished a 6-iteration job before the pid was read).
    iterations = 40
    job = client.create_job("train", uploaded, iterations=iterations, auto_promote=False, **FAST_JOB)

    def running_pid_after_a_checkpoint():
        state = client.get_job(job["id"])
        assert state["state"] in ("queued", "running"), state
        return state["iteration"] >= 2 and _worker_pid(server, job["id"])

    pid = wait_for(running_pid_after_a_checkpoint, every=0.05, what="a checkpoint (every 2 iterations)")
    os.kill(pid, signal.SIGKILL)
    assert client.health()["status"] == "ok"  # the API process is not the worker
    final = wait_for(lambda: (j := client.get_job(job["id"]))["state"] in ("succeeded", "failed") and j,
                     timeout=90, every=0.3, what="the job to finish after the worker was killed")
    assert final["attempts"] == 2
    if final["state"] == "failed":  # allowed by the contract, but only with a reason
        assert final["error"]
    else:
        assert final["model_id"] and final["iteration"] == iterations
    log = (server.data / "jobs" / job["id"] / "worker.log").read_text()
    assert "attempt 2 started (resume=True" in log


def test_remote_cli_reports_lists_and_predicts(server, uploaded, phantom_cases, tmp_path, monkeypatch, capsys):
    from BackSplitLib.cli import main

    token_file = tmp_path / "token"
    token_file.write_text(server.token)
    common = ["--server", server.url, "--token-file", str(token_file)]
    assert main(["remote", "health", "--server", server.url]) == 0
    out = tmp_path / "mask.nii.gz"
    assert main(["remote", "predict", str(phantom_cases[0].image), "--out", str(out), *common]) == 0
    assert out.is_file()
    monkeypatch.setenv("BACKSPLIT_TOKEN", server.token)
    for command in (["cases"], ["jobs"], ["models", "--json"]):
        assert main(["remote", *command, "--server", server.url]) == 0
    capsys.readouterr()
    monkeypatch.setenv("BACKSPLIT_TOKEN", "wrong")
    assert main(["remote", "models", "--server", server.url]) == 2
    assert "token is not valid" in capsys.readouterr().err


def test_server_refuses_no_auth_on_a_public_host(tmp_path):
    from BackSplitLib.errors import BackSplitError
    from BackSplitLib.server.serve import serve

    with pytest.raises(BackSplitError, match="loopback"):
        serve(tmp_path / "data", host="0.0.0.0", no_auth=True)


def test_after_a_restart_the_interrupted_job_resumes_and_the_queued_job_runs(server, uploaded, monkeypatch,
                                                                             capsys):
    """Runs last: it restarts the shared server."""
    client = server.client()
    # Enough iterations that the job is still running when the server stops (a fast machine finishes 4 first).
    interrupted = client.create_job("train", uploaded, iterations=40, auto_promote=False, **FAST_JOB)
    queued = client.create_job("train", uploaded, iterations=2, auto_promote=False, **FAST_JOB)
    wait_for(lambda: client.get_job(interrupted["id"])["state"] == "running", what="the first job to run")
    server.stop()  # SIGTERM: the worker saves a checkpoint and puts its job back in the queue
    with sqlite3.connect(server.data / "backsplit.db") as db:
        rows = dict(db.execute("SELECT id, state || '/' || resume FROM jobs WHERE id IN (?, ?)",
                               (interrupted["id"], queued["id"])).fetchall())
    assert rows == {interrupted["id"]: "queued/1", queued["id"]: "queued/0"}
    server.start()
    client = server.client()
    assert client.wait(interrupted["id"])["state"] == "succeeded"
    assert client.get_job(interrupted["id"])["attempts"] == 2
    # The CLI follows the queued job with its progress bar until it ends.
    from BackSplitLib.cli import main

    monkeypatch.setenv("BACKSPLIT_TOKEN", server.token)
    assert main(["remote", "status", queued["id"], "--follow", "--server", server.url]) == 0
    assert client.get_job(queued["id"])["state"] == "succeeded"
    assert "succeeded: model" in capsys.readouterr().err


def test_remote_train_says_a_model_kept_but_not_made_current_and_exits_non_zero(server, uploaded, tmp_path, capsys):
    """Issue 21: a training whose validation never found the lesion is not "succeeded": the last line names the
    kept model, says predictions still use the previous one, and how to use it anyway."""
    from BackSplitLib.cli import main

    token_file = tmp_path / "token"
    token_file.write_text(server.token)
    before = server.client().get_model()["id"] if any(m["current"] for m in server.client().list_models()) else None
    code = main(["remote", "train", "--cases", ",".join(uploaded), "--iterations", "2", "--val-every", "1",
                 "--batch-size", "1", "--patch-size", "32,32,16", "--val-fraction", "0.3",
                 "--server", server.url, "--token-file", str(token_file)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err  # the CLI's exit status for an error the user must act on
    assert "did not make it current" in err and "the lesion was never predicted" in err
    assert "backsplit remote promote" in err
    current = [m["id"] for m in server.client().list_models() if m["current"]]
    assert current == ([before] if before else [])  # the previous model is still the one predictions use
