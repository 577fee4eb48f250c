"""No silent failure (issue 20, A.3): a lesion channel that has not started is detected and reported."""

import json

import pytest

from BackSplitLib.lesion_watch import START_BY_SHARE, LesionWatch, lesion_found
from BackSplitLib.vocabulary import LESION_NEVER_PREDICTED


def test_a_lesion_never_predicted_warns_once_when_it_should_have_started_and_is_recorded():
    watch = LesionWatch(iterations=400)
    early = int(START_BY_SHARE * 400) - 40
    assert watch.observe(early, predicted_voxels=0, truth_voxels=900) is None  # too early to say
    warning = watch.observe(int(START_BY_SHARE * 400), 0, 900)
    assert warning is not None and "has not started" in warning and "--iterations" in warning
    assert watch.observe(400, 0, 900) is None  # once per run
    record = watch.record()
    assert record["found"] is False and record["started_at"] is None
    assert record["message"].startswith(LESION_NEVER_PREDICTED) and record["hint"]
    assert lesion_found({"lesion": record, "best_val_dice": 0.0}) is False


def test_the_first_validation_with_a_predicted_lesion_voxel_is_where_the_lesion_started():
    watch = LesionWatch(iterations=300)
    for iteration, predicted in ((30, 0), (60, 0), (90, 12), (120, 0), (150, 400)):
        assert watch.observe(iteration, predicted, 500) is None
    assert watch.record()["found"] is True and watch.started_at == 90 and watch.record()["message"] is None


def test_without_lesion_voxels_in_validation_nothing_is_claimed():
    watch = LesionWatch(iterations=10)
    assert watch.observe(10, 0, 0) is None
    assert watch.found is None and watch.record()["message"] is None
    assert lesion_found({"best_val_dice": None}) is True  # no validation: as before, counts as found


def test_a_resumed_run_rebuilds_its_watch_from_the_history():
    history = [{"iteration": 50, "val_lesion_voxels": 0, "val_truth_voxels": 10},
               {"iteration": 100, "val_lesion_voxels": 0, "val_truth_voxels": 10, "warning": "..."},
               {"iteration": 150, "val_lesion_voxels": 7, "val_truth_voxels": 10}]
    watch = LesionWatch.from_history(200, history)
    assert watch.warned and watch.started_at == 150


def test_training_records_the_watch_in_model_json_and_the_log(phantom_dataset, tmp_path):
    """A real (tiny) run whose lesion never starts: the warning is raised and logged, model.json says so."""
    from BackSplitLib.training import LesionNotStartedWarning, TrainConfig, train

    config = TrainConfig(mode="backsplit", iterations=2, val_every=1, batch_size=1, seed=0, patch_size=(32, 32, 16),
                         device="cpu")
    with pytest.warns(LesionNotStartedWarning, match="has not started"):
        run = train(phantom_dataset, tmp_path / "run", config)
    meta = json.loads((run / "model.json").read_text())
    assert meta["lesion"]["found"] is False and meta["lesion"]["message"].startswith(LESION_NEVER_PREDICTED)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["val_lesion_voxels"] == 0 and r["val_truth_voxels"] > 0 for r in records if "val_dice" in r)
    assert sum("warning" in r for r in records) == 1
