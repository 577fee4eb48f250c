"""The web app's slice views in-process (no browser): view names and edge letters in the page state, the value
under the pointer, and left-drag window/level while no editor tool is active (the brush keeps its drag).

Mouse events go to the slice view's real VTK interactor, as trame's remote-controlled area sends them."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from BackSplitLib.phantom import make_phantom
    from BackSplitWeb.app import WebApp, WebSettings

    app = WebApp(WebSettings(port=0, work_dir=tmp_path_factory.mktemp("web-views")))
    image, _ = make_phantom(5, shape=(32, 40, 48))
    app.open_volume(sitk.Cast(image, sitk.sitkInt16), "ct.nii.gz")
    return app


def _axial(app):
    return next(v for v in app.slicer_app.view_manager.get_slice_views()
                if v.get_view_node().GetOrientation() == "Axial")


def _mouse(view, event: str, x: int, y: int) -> None:
    import vtk

    interactor = view.interactor()
    interactor.SetEventInformation(x, y, 0, 0, "\0", 0)
    interactor.InvokeEvent(getattr(vtk.vtkCommand, event))


def _drag(view, steps: int = 6) -> None:
    w, h = view.render_window().GetSize()
    _mouse(view, "LeftButtonPressEvent", w // 2, h // 2)
    for i in range(1, steps + 1):
        _mouse(view, "MouseMoveEvent", w // 2 + 8 * i, h // 2 + 4 * i)
    _mouse(view, "LeftButtonReleaseEvent", w // 2 + 8 * steps, h // 2 + 4 * steps)


def test_every_slice_view_has_its_name_and_edge_letters(app):
    views = app.state.bs_views
    axial = views[_axial(app).name]
    assert axial["title"].startswith("Axial") and (axial["left"], axial["right"], axial["top"], axial["bottom"]) == (
        "R", "L", "A", "P")
    assert {v["title"].split()[0] for v in views.values()} == {"Axial", "Sagittal", "Coronal"}


def test_the_value_under_the_pointer_is_in_the_page_state(app):
    from BackSplitSlicer.slice_views import probe

    view = _axial(app)
    w, h = view.render_window().GetSize()
    _mouse(view, "MouseMoveEvent", w // 2, h // 2)
    shown = app.state.bs_probe
    assert shown and shown["view"] == view.name and "HU at voxel" in shown["text"]
    i, j, k = shown["ijk"]
    assert shown["value"] == _voxels(app)[k, j, i]
    ras = [0.0, 0.0, 0.0]
    import slicer

    slicer.vtkMRMLCrosshairDisplayableManager().FindCrosshairNode(app.slicer_app.scene).GetCursorPositionRAS(ras)
    assert probe(app.volume_node, ras).text == shown["text"]


def _voxels(app) -> np.ndarray:
    """The open volume's voxels as a (k, j, i) array."""
    from vtk.util import numpy_support

    data = app.volume_node.GetImageData()
    return numpy_support.vtk_to_numpy(data.GetPointData().GetScalars()).reshape(data.GetDimensions()[::-1])


def test_a_left_drag_without_a_tool_changes_window_and_level(app):
    display = app.volume_node.GetDisplayNode()
    app.slicer_app.segmentation_editor.deactivate_effect()
    before = (display.GetWindow(), display.GetLevel())
    _drag(_axial(app))
    after = (display.GetWindow(), display.GetLevel())
    assert after != before and not display.GetAutoWindowLevel()


def test_a_left_drag_with_the_brush_paints_and_keeps_window_and_level(app):
    from trame_slicer.segmentation import SegmentationEffectPaint

    editor = app.slicer_app.segmentation_editor
    node = app.segmentation_node() or editor.create_empty_segmentation_node()
    if app.segmentation_node() is None:
        editor.set_active_segmentation(node, app.volume_node)
    segment_id = editor.add_empty_segment(segment_name="lesion")
    editor.set_active_effect_type(SegmentationEffectPaint)
    display = app.volume_node.GetDisplayNode()
    before = (display.GetWindow(), display.GetLevel())
    _drag(_axial(app))
    assert (display.GetWindow(), display.GetLevel()) == before
    painted = {s["id"]: s["voxels"] for s in app.panel.describe()["segments"]}
    assert painted[segment_id] > 0
    editor.deactivate_effect()
