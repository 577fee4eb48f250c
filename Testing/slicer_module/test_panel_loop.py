"""The clinician's loop in the panel controller, on real MRML (issue 21): annotated slices only, fill between
slices, what a prediction found, its auxiliary segments shown on demand, the prediction turned into a label,
messages that clear, and the fine-tune budget from the one recipe. No server here (test_panel_server.py
has the server-backed part: an unpromoted model said as such); each test runs in under a second, but the
fill between slices, which loads ITK's Python wrapping.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.metrics import describe_findings, lesion_findings
from BackSplitLib.vocabulary import DEFAULT_FINETUNE_ITERATIONS, DEFAULT_ITERATIONS
from BackSplitSlicer.case import (LESION_SEGMENT_NAME, export_case, import_prediction, prediction_mask,
                                  prediction_node, set_segment_mask)
from BackSplitSlicer.panel import SETTINGS, MemorySettings, PanelController
from BackSplitSlicer.panel_state import PanelState, Work, enabled_actions
from BackSplitSlicer.prediction import ACCEPTED_SEGMENT_NAME, lesion_color
from BackSplitSlicer.roles import AUXILIARY, TARGET, segment_role

SHAPE = (12, 40, 40)  # slice, row, column
SPACING = (0.8, 0.8, 5.0)  # x, y, z: thick slices, as in the chest CT of the issue


def add_volume(scene, values=None):
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    node.SetSpacing(*SPACING)
    slicer.util.updateVolumeFromArray(node, np.full(SHAPE, -50.0, np.float32) if values is None else values)
    return node


def painted_scene(scene, target_slices=(3, 6, 8), auxiliary_slices=()):
    """A volume, and a segmentation with a wide lesion painted on ``target_slices`` only."""
    volume = add_volume(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segments")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    lesion = np.zeros(SHAPE, bool)
    for k in target_slices:
        lesion[k, 10:30, 10:30] = True  # 16 mm across: a lesion as wide spans several 5 mm slices
    set_segment_mask(segmentation, "tumour", lesion, volume, (200, 40, 40), True)
    if auxiliary_slices:
        organ = np.zeros(SHAPE, bool)
        for k in auxiliary_slices:
            organ[k, 0:8, 0:8] = True
        set_segment_mask(segmentation, "liver", organ, volume, (180, 120, 80), True)
    return volume, segmentation, lesion


# ----------------------------------------------------------------------------- annotated slices only
def test_a_sparsely_painted_lesion_turns_annotated_slices_only_on_and_says_so(scene):
    volume, segmentation, lesion = painted_scene(scene, target_slices=(3, 6), auxiliary_slices=(4,))
    case = export_case(volume, segmentation, annotated_slices_only=None)
    ignore = case.schema.ignore_value
    assert case.annotation.used and case.annotation.automatic
    assert (case.annotation.painted, case.annotation.annotated, case.annotation.total) == (2, 3, SHAPE[0])
    for k in range(SHAPE[0]):
        if k in (3, 4, 6):  # painted in some hand-made segment: kept as painted, the rest background
            assert ignore not in case.label[k]
        else:
            assert (case.label[k] == ignore).all(), k
    assert (case.label[lesion] == case.schema.target_value).all()
    assert "3 of 12 slices kept" in case.annotation.describe() and "extent suggests" in case.annotation.describe()


def test_a_lesion_painted_on_every_slice_of_its_extent_keeps_the_whole_volume(scene):
    volume, segmentation, _ = painted_scene(scene, target_slices=(3, 4, 5, 6))
    case = export_case(volume, segmentation, annotated_slices_only=None)
    assert not case.annotation.used and case.annotation.describe() == ""
    assert case.schema.ignore_value is None or case.schema.ignore_value not in case.label


def test_the_users_choice_wins_over_the_automatic_rule(scene):
    volume, segmentation, _ = painted_scene(scene, target_slices=(3, 6))
    off = export_case(volume, segmentation, annotated_slices_only=False)
    assert off.annotation is None and off.schema.ignore_value is None
    volume, segmentation, _ = painted_scene(scene, target_slices=(3, 4, 5, 6))
    on = export_case(volume, segmentation, annotated_slices_only=True)
    assert on.annotation.used and not on.annotation.automatic
    assert (on.label[0] == on.schema.ignore_value).all() and (on.label[7:] == on.schema.ignore_value).all()


def test_automatic_auxiliary_classes_never_overwrite_ignore(scene):
    from BackSplitSlicer.auxiliary_segments import add_ct_tissue_segments

    volume, segmentation, _ = painted_scene(scene, target_slices=(3, 6))
    names = add_ct_tissue_segments(volume, segmentation)  # soft tissue (-50 HU) on every slice
    case = export_case(volume, segmentation, annotated_slices_only=None)
    assert case.annotation.annotated == 2  # automatic segments are not annotation
    tissue_values = {case.schema.labels[n] for n in names if n in case.schema.labels}
    assert tissue_values and not np.isin(case.label[[0, 1, 2, 4, 5, 7]], list(tissue_values)).any()
    assert np.isin(case.label[3], list(tissue_values)).any()  # on annotated slices they stay


# ----------------------------------------------------------------------------- fill between slices
@pytest.mark.slow  # the filter's ITK wrapping loads in 15 s on an idle core (60 s on two loaded ones)
def test_fill_between_slices_fills_the_target_between_its_painted_slices(scene):
    pytest.importorskip("itk", reason="itk-morphologicalcontourinterpolation is in the web extra")
    volume, segmentation, _ = painted_scene(scene, target_slices=(3, 7))
    panel = PanelController(scene, MemorySettings())
    panel.fill_between_slices()
    state = panel.state()
    assert state.message is None, state.message
    assert state.status == "Filled between slices of 'tumour': painted on 2 slice(s), now 5."
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("tumour")
    from BackSplitSlicer.case import export_segment_mask

    filled = export_segment_mask(segmentation, segment_id, volume)
    assert [int(filled[k].sum()) for k in range(3, 8)] == [400, 400, 400, 400, 400]
    assert not filled[:3].any() and not filled[8:].any()


# ----------------------------------------------------------------------------- what a prediction found
def test_findings_say_no_lesion_or_volume_components_and_diameter():
    mask = np.zeros((10, 20, 20), np.uint8)
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing((0.5, 0.5, 2.0))
    assert describe_findings(lesion_findings(image)) == "no lesion found"
    mask[2:5, 2:12, 2:4] = 1  # 60 voxels of 0.5 mm3
    mask[8, 15, 15] = 1
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing((0.5, 0.5, 2.0))
    findings = lesion_findings(image)
    assert findings["voxels"] == 61 and findings["components"] == 2
    assert findings["volume_ml"] == pytest.approx(61 * 0.5 / 1000)
    assert findings["largest_diameter_mm"] == pytest.approx(np.sqrt(4.5 ** 2 + 4.0 ** 2 + 0.5 ** 2), rel=1e-3)
    assert describe_findings(findings) == "lesion 0.03 mL in 2 components, the largest 6.0 mm across"


def test_the_lesion_colour_is_never_one_of_the_auxiliary_colours():
    fat = (230, 220, 70)
    assert lesion_color([]) == (255, 255, 0)
    assert lesion_color([fat]) != (255, 255, 0)
    assert lesion_color([fat, (255, 0, 255)]) not in ((255, 255, 0), (255, 0, 255))


def test_hidden_auxiliary_segments_are_reachable_and_a_prediction_becomes_a_target_label(scene):
    from BackSplitLib.schema import LabelSchema

    volume, segmentation, lesion = painted_scene(scene, target_slices=(3,))
    schema = LabelSchema.from_names("lesion", ["liver"])
    classes = np.zeros(SHAPE, np.uint8)
    classes[:, 0:5, 0:5] = schema.labels["liver"]
    classes[5, 20:25, 20:25] = schema.target_value
    panel = PanelController(scene, MemorySettings())
    output = prediction_node(volume)
    created = import_prediction(classes, volume, output, schema=schema, show_3d=False)
    panel._auxiliary_segment_ids, panel._auxiliary_node_id = [created["liver"]], output.GetID()  # as _on_prediction
    panel._set(output_id=output.GetID(), auxiliary_segments=1,
               prediction={**lesion_findings(sitk.GetImageFromArray((classes == 2).astype(np.uint8))), "text": ""})
    display = output.GetDisplayNode()
    assert not display.GetSegmentVisibility(created["liver"])
    assert panel.state().enabled["show_auxiliary"]
    panel.show_auxiliary()
    assert display.GetSegmentVisibility(created["liver"]) and panel.state().auxiliary_shown
    panel.show_auxiliary()
    assert not display.GetSegmentVisibility(created["liver"])

    # Correct and send back: the predicted lesion becomes an editable Target segment.
    assert panel.state().enabled["accept_prediction"]
    panel.accept_prediction()
    assert panel.state().message is None and "Add case" in panel.state().status
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName(ACCEPTED_SEGMENT_NAME)
    assert segment_role(segmentation.GetSegmentation().GetSegment(segment_id)) == TARGET
    accepted = prediction_mask(segmentation, ACCEPTED_SEGMENT_NAME, volume)
    assert np.array_equal(accepted, prediction_mask(output, LESION_SEGMENT_NAME, volume))
    case = export_case(volume, segmentation)
    assert (case.label[accepted] == case.schema.target_value).all()


# ----------------------------------------------------------------------------- messages and settings
def test_an_error_is_cleared_when_the_same_action_later_succeeds(scene):
    panel = PanelController(scene, MemorySettings())
    panel.add_tissue_classes()  # no volume yet
    message = panel.state().message
    assert message.level == "error" and message.hint == "use the Inputs section"
    assert panel.state().status == "Adding CT tissue classes failed."  # the reason once: in the message
    volume, segmentation, _ = painted_scene(scene, target_slices=(3,))
    panel.set_volume(volume.GetID())
    panel.set_segmentation(segmentation.GetID())
    panel.set_role("nonexistent", AUXILIARY)  # another action's error stays until that action works
    assert panel.state().message.action == "set_role"
    panel.add_tissue_classes()
    assert panel.state().message.action == "set_role"
    panel.add_tissue_classes()
    assert panel.state().status.startswith("Added auxiliary segments")
    panel.set_role(segmentation.GetSegmentation().GetSegmentIdBySegmentName("tumour"), TARGET)
    assert panel.state().message is None and panel.state().status == "'tumour' is Target."


def test_the_fine_tune_budget_is_the_recipes_default_until_the_user_sets_one(scene):
    settings = MemorySettings()
    panel = PanelController(scene, settings)
    state = panel.state()
    assert state.iterations is None and state.iterations_default == DEFAULT_ITERATIONS  # no model: a new one
    from BackSplitSlicer.backends import ModelInfo

    panel._on_models([ModelInfo("m1", None, current=True)])
    assert panel.state().iterations_default == DEFAULT_FINETUNE_ITERATIONS
    panel.set_training(train_new=True)
    assert panel.state().iterations_default == DEFAULT_ITERATIONS
    panel.set_training(iterations=40)
    assert panel.state().iterations == 40 and settings.get(SETTINGS["iterations"]) == 40
    assert PanelController(scene, settings).state().iterations == 40
    panel.set_training(iterations=0)  # back to the recipe
    assert panel.state().iterations is None and PanelController(scene, settings).state().iterations is None


def test_pending_work_is_compared_by_identity_not_by_its_words():
    state = PanelState(volume_id="v", segmentation_id="s", connection="connected",
                       me={"user": "ann", "admin": False, "projects": {"default": "annotator"}})
    assert enabled_actions(state, True, False, set())["add_case"]
    assert not enabled_actions(state, True, False, {Work.upload_case})["add_case"]
    assert enabled_actions(state, True, False, {Work.upload_case})["predict"]
    assert not enabled_actions(state, True, False, {Work.predict})["predict"]


def test_local_mode_uses_the_vocabularys_loopback_host(tmp_path):
    from BackSplitLib.vocabulary import DEFAULT_HOST
    from BackSplitSlicer.backends import LocalBackend

    backend = LocalBackend(tmp_path)
    assert backend.url.startswith(f"http://{DEFAULT_HOST}:")
    assert backend.command()[backend.command().index("--host") + 1] == DEFAULT_HOST


def test_after_a_promoted_training_predict_uses_the_new_model(scene):
    from BackSplitSlicer.backends import JobStatus, ModelInfo

    panel = PanelController(scene, MemorySettings())
    panel._on_models([ModelInfo("old", None, current=True)])
    assert panel.state().model_id == "old"
    panel._show_job(JobStatus("j1", "succeeded", model_id="new"))
    panel._on_models([ModelInfo("new", None, current=True), ModelInfo("old", None)])
    assert panel.state().model_id == "new" and panel.state().unpromoted is None
    panel.select_model("old")  # the user's later choice is kept on the next refresh
    panel._on_models([ModelInfo("new", None, current=True), ModelInfo("old", None)])
    assert panel.state().model_id == "old"


def test_a_prediction_with_classes_builds_a_3d_surface_for_the_lesion_only(scene):
    from BackSplitLib.io import image_from_array
    from BackSplitLib.schema import LabelSchema
    from BackSplitSlicer.backends import PredictionResult
    from BackSplitSlicer.case import volume_geometry
    from BackSplitSlicer.prediction import AUXILIARY_NODE_NAME, show_prediction

    volume, segmentation, _ = painted_scene(scene, target_slices=(3,))
    schema = LabelSchema.from_names("lesion", ["liver"], colors={"liver": (230, 220, 70)})
    classes = np.zeros(SHAPE, np.uint8)
    classes[:, 0:10, 0:10] = schema.labels["liver"]
    classes[5, 20:25, 20:25] = schema.target_value
    geometry = volume_geometry(volume)
    result = PredictionResult(mask=image_from_array((classes == schema.target_value).astype(np.uint8), geometry),
                              classes=image_from_array(classes, geometry), schema=schema)
    output, holder, ids = show_prediction(result, volume, None, True, segmentation)
    lesion = output.GetSegmentation().GetSegment(output.GetSegmentation().GetSegmentIdBySegmentName(
        LESION_SEGMENT_NAME))
    assert lesion.GetRepresentation("Closed surface") is not None
    assert tuple(round(255 * c) for c in lesion.GetColor()) != (255, 255, 0)  # yellow is too close to liver's
    assert holder.GetName() == AUXILIARY_NODE_NAME and output.GetSegmentation().GetNumberOfSegments() == 1
    liver = holder.GetSegmentation().GetSegment(ids[0])
    assert liver.GetName() == "liver" and liver.GetRepresentation("Closed surface") is None
    assert not holder.GetDisplayNode().GetSegmentVisibility(ids[0])
    again = show_prediction(result, volume, output, True, segmentation)  # predicting again reuses both nodes
    assert again[0] is output and again[1] is holder and holder.GetSegmentation().GetNumberOfSegments() == 1
