"""The web app's scene work in-process (no browser): an organ map and CT tissue classes become auxiliary
segments through the panel controller, as in the Slicer module."""

from __future__ import annotations

import os

import pytest
import SimpleITK as sitk

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from BackSplitWeb.app import WebApp, WebSettings

    return WebApp(WebSettings(port=0, work_dir=tmp_path_factory.mktemp("web-scene")))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from BackSplitLib.phantom import make_phantom

    folder = tmp_path_factory.mktemp("scene-phantom")
    image, label = make_phantom(5, shape=(32, 40, 48))
    sitk.WriteImage(label, str(folder / "organs.nii.gz"))
    return image, folder / "organs.nii.gz"


def _segment_roles(app) -> dict:
    return {s["name"]: s["role"] for s in app.panel.describe()["segments"]}


def test_an_organ_map_imports_as_auxiliary_segments(app, phantom, tmp_path):
    image, organs = phantom
    app.open_volume(image, "phantom.nii.gz")
    app.open_organ_map(organs, tmp_path, "organs.nii.gz")
    state = app.panel.controller.state()
    assert state.organ_map_id and state.enabled["import_organ_map"]
    app.panel.controller.set_organ_map(state.organ_map_id, "label_2")
    app.panel.controller.import_organ_map()
    assert app.panel.controller.state().message is None, app.panel.controller.state().message
    roles = _segment_roles(app)
    assert roles.get("label_2") == "auxiliary"


def test_ct_tissue_classes_are_added_as_auxiliary_segments(app, phantom):
    before = set(_segment_roles(app))
    app.panel.controller.add_tissue_classes()
    added = {name: role for name, role in _segment_roles(app).items() if name not in before}
    assert added and set(added.values()) == {"auxiliary"}


def test_the_brush_paints_one_slice_by_default(app):
    from trame_slicer.app.logic.segmentation.brush_effect_logic import BrushEffectLogic

    brushes = [logic for logic in app.segment_editor_logic._effect_logic if isinstance(logic, BrushEffectLogic)]
    assert brushes and not any(logic.data.use_sphere_brush for logic in brushes)  # paint and erase


def test_paint_since_the_last_save_is_unsaved_work_until_downloaded(app, phantom, tmp_path):
    import numpy as np

    from BackSplitSlicer.case import set_segment_mask

    image, _ = phantom
    app.open_volume(image, "phantom.nii.gz")
    assert app.state.bs_unsaved is False  # a fresh open is nothing to lose
    node = app.segmentation_node()
    mask = np.zeros(sitk.GetArrayViewFromImage(image).shape, bool)
    mask[5, 10:20, 10:20] = True
    set_segment_mask(node, "tumour", mask, app.volume_node, (200, 0, 0), True)
    assert app.state.bs_unsaved is True  # the page asks before an open replaces it
    app.panel.export("segmentation", tmp_path)
    assert app.state.bs_unsaved is False


def test_a_ct_window_preset_sets_the_volumes_window_and_level(app, phantom):
    from BackSplitWeb.panel import WINDOW_PRESETS

    image, _ = phantom
    app.open_volume(image, "phantom.nii.gz")
    app.panel.window_preset("Lung")
    display = app.volume_node.GetDisplayNode()
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindow(), display.GetLevel()) == WINDOW_PRESETS["Lung"] == (1400, -500)
