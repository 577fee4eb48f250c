"""Scene -> a real local server -> fine-tune a few iterations -> predict -> the segment in the scene."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("fastapi")

from BackSplitLib.io import Geometry  # noqa: E402
from BackSplitSlicer.backends import LocalBackend  # noqa: E402
from BackSplitSlicer.case import LESION_SEGMENT_NAME, prediction_mask, volume_geometry  # noqa: E402
from BackSplitSlicer.roles import segment_roles  # noqa: E402
from BackSplitSlicer.selftest import phantom_scene, run_end_to_end  # noqa: E402


@pytest.mark.slow
def test_scene_to_local_server_to_lesion_segment(scene, tmp_path):
    volume, segmentation = phantom_scene(seed=3)
    assert segment_roles(segmentation)["lesion"] == "target"
    backend = LocalBackend(tmp_path / "engine")
    backend.start()
    try:
        backend.wait_ready(60)
        result = run_end_to_end(volume, segmentation, backend, iterations=4)
        models = backend.list_models()
    finally:
        backend.close()

    assert result.job.state == "succeeded" and result.job.iteration == 4
    assert [m.model_id for m in models if m.current] == [result.job.model_id]
    # The model learned the case's classes by name, and the prediction carries that schema.
    assert result.prediction.schema.target == "lesion"
    assert set(result.prediction.schema.auxiliary_names) >= {"liver", "kidney_left"}
    # The server answered on the volume's own grid, and the scene holds exactly its lesion voxels.
    assert volume_geometry(volume).mismatch(Geometry.of(result.prediction.mask)) is None
    server_lesion = sitk.GetArrayFromImage(result.prediction.classes) == result.prediction.schema.target_value
    in_scene = prediction_mask(result.output_node, LESION_SEGMENT_NAME, volume)
    assert np.array_equal(in_scene, server_lesion)
    assert np.array_equal(server_lesion, sitk.GetArrayFromImage(result.prediction.mask) > 0)
    display = result.output_node.GetDisplayNode()
    assert display.GetSegmentVisibility(result.segments[LESION_SEGMENT_NAME])
    assert not display.GetSegmentVisibility(result.segments["liver"])
