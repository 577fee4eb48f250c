"""Backends without training: records, error messages, the background call, the local server's life cycle."""

from __future__ import annotations

import sys
import time

import pytest

from BackSplitSlicer.backends import (BackendError, BackgroundCall, JobStatus, LocalBackend, ModelInfo,
                                      RemoteBackend, free_port, missing_packages)


def test_job_status_describes_progress_for_the_status_line():
    job = JobStatus.from_json({"id": "j1", "state": "running", "iteration": 30, "total_iterations": 120,
                               "loss": 0.4321, "val_dice": 0.71, "eta_s": 95})
    assert job.fraction == pytest.approx(0.25)
    assert job.describe() == "Running, iteration 30/120, loss 0.432, validation Dice 0.710, about 1 min 35 s left"
    failed = JobStatus.from_json({"id": "j1", "state": "failed", "error": "out of memory"})
    assert failed.finished and failed.describe() == "Training failed: out of memory"


def test_model_info_reads_the_schema_and_describes_itself():
    model = ModelInfo.from_json({"id": "m1", "current": True, "source": "finetune", "metrics": {"val_dice": 0.8},
                                 "schema": {"labels": {"background": 0, "kidney": 1, "lesion": 2},
                                            "target": "lesion"}})
    assert model.schema.auxiliary_names == ["kidney"]
    assert model.describe() == "m1 (current, finetune, validation Dice 0.80, 3 classes)"


def test_pickers_say_when_what_and_how_much_not_only_an_id():
    import time

    from BackSplitSlicer.backends import describe_case

    created = time.mktime((2026, 11, 30, 14, 5, 0, 0, 0, -1))
    model = ModelInfo.from_json({"id": "m2", "current": False, "source": "finetune", "created": created,
                                 "metrics": {"best_val_dice": 0.41}, "cases": ["c1", "c2"], "schema": None})
    assert model.describe() == "m2 (2026-11-30 14:05, finetune, validation Dice 0.41, 2 cases)"
    case = {"id": "0f3c9a2e-1111", "name": "chest_ct", "created": created, "classes": ["background", "lesion", "fat"],
            "target_voxels": 24644, "spacing": [0.63, 0.63, 5.0]}
    assert describe_case(case) == "chest_ct (2026-11-30 14:05; lesion, fat; lesion 48.91 mL)"


def test_unreachable_server_gives_one_sentence_with_what_to_do():
    backend = RemoteBackend(f"http://127.0.0.1:{free_port()}", retries=0, timeout=2)
    with pytest.raises(BackendError) as error:
        backend.list_models()
    assert "listing models failed" in error.value.message
    assert "check that the server runs" in error.value.hint


def test_a_bad_server_address_is_refused():
    with pytest.raises(BackendError, match="not an http"):
        RemoteBackend("ftp://example")


def test_background_call_hands_back_result_and_error():
    ok = BackgroundCall(lambda x: x * 2, 21)
    assert ok.result(5) == 42 and ok.done
    bad = BackgroundCall(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        bad.result(5)


def test_missing_packages_are_checked_in_the_target_python():
    assert missing_packages(sys.executable, requirements=["numpy", "no-such-distribution-backsplit"]) == \
        ["no-such-distribution-backsplit"]
    # The default list is pyproject's runtime requirements (torch, monai, nibabel, fastapi ...): all here.
    assert missing_packages(sys.executable) == []
    # A bare Python (no site-packages) lacks them, but finds the engine package on the engine path.
    bare = missing_packages(sys.executable, requirements=["torch", "nibabel"])
    assert bare == [] or set(bare) <= {"torch", "nibabel"}


def test_local_engine_that_dies_reports_its_log(tmp_path):
    # A Python that cannot run the engine stands in for a Slicer without PyTorch.
    backend = LocalBackend(tmp_path, python=sys.executable, extra_env={"PYTHONPATH": "", "PYTHONNOUSERSITE": "1"})
    backend.command = lambda: [sys.executable, "-c", "import sys; print('No module named torch'); sys.exit(3)"]
    backend.start()
    deadline = time.monotonic() + 20
    with pytest.raises(BackendError, match="exit code 3.*No module named torch"):
        while time.monotonic() < deadline:
            backend.is_ready()
            time.sleep(0.05)
    backend.close()


def test_local_engine_starts_answers_and_stops(tmp_path):
    pytest.importorskip("fastapi")
    backend = LocalBackend(tmp_path / "data")
    backend.start()
    try:
        backend.wait_ready(60)
        assert backend.list_models() == []
        assert "device" in backend.describe()
    finally:
        backend.close()
    assert not backend.running
