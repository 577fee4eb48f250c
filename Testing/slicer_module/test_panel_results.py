"""Results that tell the truth, through the panel controller against a real `backsplit serve` (issue 21 §1).

A fine-tune whose model the server keeps but does not promote is said as such, with the action that promotes
it; Predict says which model it used and what it found (the numbers match the segment it wrote); promoting
clears the warning and makes the model current. The job asks for no auto-promotion, so the outcome does not
depend on what two training iterations learn.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_harness import ServerProcess  # noqa: E402
from test_panel_server import FAST_TRAINING, connected_panel, run_until  # noqa: E402


pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path, binary_run):
    from BackSplitLib.client import BackSplitClient

    served = ServerProcess(tmp_path / "data", tmp_path / "token").start()
    BackSplitClient(served.url, served.token).upload_model(binary_run, promote=True)
    yield served
    served.stop()


def test_an_unpromoted_model_is_said_with_its_promote_action_and_predict_says_what_it_found(scene, server):
    from BackSplitSlicer.case import LESION_SEGMENT_NAME, prediction_mask
    from BackSplitSlicer.selftest import phantom_scene

    volume, segmentation = phantom_scene(seed=3, scene=scene)
    panel = connected_panel(scene, server, ready=lambda s: s.models,
                            training_options={**FAST_TRAINING, "auto_promote": False})
    base = panel.state().model_id
    panel.add_case()
    run_until(panel, lambda s: s.status.startswith("Case added") and s.cases, 60, "the upload")
    (case_id, text), = panel.state().cases  # the picker: name, date, classes, lesion size
    assert text.startswith("BackSplit_phantom (") and "liver" in text and " mL)" in text
    panel.select_cases([case_id])
    panel.set_training(iterations=2)
    panel.fine_tune()
    run_until(panel, lambda s: s.job is not None, 30, "the job")
    assert panel.backend.client.get_job(panel.state().job["job_id"])["cases"] == [case_id]
    run_until(panel, lambda s: s.unpromoted is not None, 240, "the unpromoted model said")
    state = panel.state()
    new = state.job["model_id"]
    assert state.curve and state.curve[-1][0] == 2  # the training curve ends at the last iteration
    assert state.unpromoted["model_id"] == new != base
    assert state.message.level == "warning" and f"Model {new} kept but not used" in state.message.text
    assert "Use this model" in state.message.hint and state.enabled["promote"]
    assert f"model {new} kept but not used" in state.status

    panel.predict()  # the current model answers, and the panel says which
    run_until(panel, lambda s: s.status.startswith("Prediction done"), 120, "the prediction")
    state = panel.state()
    assert state.status.startswith(f"Prediction done with model {base}: ")
    lesion = prediction_mask(scene.GetNodeByID(state.output_id), LESION_SEGMENT_NAME, volume)
    assert state.prediction["voxels"] == int(lesion.sum()) and state.prediction["model_id"] == base
    spacing = np.prod(volume.GetSpacing())
    assert state.prediction["volume_ml"] == pytest.approx(lesion.sum() * spacing / 1000)
    expected = "no lesion found" if not lesion.any() else f"{state.prediction['volume_ml']:.2f} mL"
    assert expected in state.status and state.prediction["text"] in state.status

    panel.promote()
    run_until(panel, lambda s: s.unpromoted is None and not s.busy, 60, "the promotion")
    assert panel.state().message is None  # the warning went with the promotion
    assert [m for m in panel.backend.list_models() if m.current][0].model_id == new
    run_until(panel, lambda s: s.model_id == new and not s.enabled["promote"], 30, "the new current model")
    panel.stop()


def test_a_prediction_that_finds_no_lesion_says_so_and_what_to_do_next(scene, server):
    import slicer_scenes as scenes

    from BackSplitLib.vocabulary import NO_LESION_FOUND_HINT

    air = np.full(scenes.VOLUME_SHAPE, -1000.0, np.float32)  # nothing to find: air everywhere
    scenes.add_volume(scene, air, name="Air")
    panel = connected_panel(scene, server, ready=lambda s: s.models)
    panel.predict()
    run_until(panel, lambda s: s.prediction is not None, 120, "the prediction")
    state = panel.state()
    assert state.prediction["voxels"] == 0, "the model found a lesion in air: this test needs one that does not"
    assert state.prediction["text"] == "no lesion found" and state.prediction["hint"] == NO_LESION_FOUND_HINT
    assert state.status.endswith(f"no lesion found. What to do: {NO_LESION_FOUND_HINT}.")
    assert state.message is None  # a result, not an error
    panel.stop()
