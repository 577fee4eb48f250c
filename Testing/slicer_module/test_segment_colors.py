"""Segment colours through the panel controller on real MRML: new segments are distinct, known names take
their terminology colour (also after a rename), and colours chosen on purpose (a case's schema, the user's
pick, a loaded segmentation) are never changed."""

from __future__ import annotations

import numpy as np
import slicer_scenes as scenes

from BackSplitLib.colors import STRUCTURE_COLORS, TARGET_COLOR, distinct_color, structure_color


def _colors(node) -> dict:
    segmentation = node.GetSegmentation()
    return {segmentation.GetNthSegment(i).GetName(): tuple(int(round(255 * c))
                                                            for c in segmentation.GetNthSegment(i).GetColor())
            for i in range(segmentation.GetNumberOfSegments())}


def _panel(scene, node):
    from BackSplitSlicer.panel import MemorySettings, PanelController

    panel = PanelController(scene, MemorySettings())
    panel.set_segmentation(node.GetID())
    return panel


def test_known_names_get_their_terminology_colour_and_lesion_words_win():
    assert structure_color("Liver") == STRUCTURE_COLORS["liver"]
    assert structure_color("kidney_left") == STRUCTURE_COLORS["kidney"]
    assert structure_color("liver tumor") == TARGET_COLOR  # a lesion in the liver is a lesion
    assert structure_color("renal cyst") == STRUCTURE_COLORS["cyst"]
    assert structure_color("small_intestine") == STRUCTURE_COLORS["small intestine"]
    assert structure_color("Segment_1") is None and structure_color("metal") is None


def test_a_distinct_colour_is_far_from_every_colour_in_use():
    used = [(230, 25, 75), (60, 180, 75)]
    chosen = distinct_color(used)
    assert chosen not in used and min(np.linalg.norm(np.subtract(chosen, u)) for u in used) > 150


def test_new_segments_added_by_the_user_get_distinct_colours(scene):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    _panel(scene, node)
    same = [0.5, 0.5, 0.5]  # what a random colour could be, twice
    for name in ("Segment_1", "Segment_2", "Segment_3"):
        node.GetSegmentation().AddEmptySegment("", name, same)
    colors = list(_colors(node).values())
    assert len(set(colors)) == 3
    assert min(np.linalg.norm(np.subtract(a, b)) for i, a in enumerate(colors) for b in colors[i + 1:]) > 100


def test_a_new_segment_renamed_to_an_organ_takes_the_organ_colour(scene):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    _panel(scene, node)
    segment_id = node.GetSegmentation().AddEmptySegment("", "Segment_1", [0.5, 0.5, 0.5])
    node.GetSegmentation().AddEmptySegment("", "tumour", [0.5, 0.5, 0.5])
    assert _colors(node)["tumour"] == TARGET_COLOR
    node.GetSegmentation().GetSegment(segment_id).SetName("Liver")
    assert _colors(node)["Liver"] == STRUCTURE_COLORS["liver"]


def test_a_colour_the_user_picked_stays_after_a_rename(scene):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    _panel(scene, node)
    segment = node.GetSegmentation().GetSegment(node.GetSegmentation().AddEmptySegment("", "Segment_1"))
    segment.SetColor(0.0, 0.0, 1.0)
    segment.SetName("spleen")
    assert _colors(node)["spleen"] == (0, 0, 255)


def test_segments_with_content_and_schema_colours_keep_theirs(scene):
    from BackSplitLib.schema import LabelSchema
    from BackSplitSlicer.case import import_prediction

    volume = scenes.add_volume(scene)
    node = scenes.add_segmentation(scene, scenes.standard_blobs()[:2])  # painted, coloured by the file
    before = _colors(node)
    _panel(scene, node)
    assert _colors(node) == before
    schema = LabelSchema.from_names("lesion", ["liver"], colors={"liver": (1, 2, 3)})
    classes = np.zeros(scenes.VOLUME_SHAPE, np.uint8)
    classes[4:8, 5:9, 6:10] = 1
    classes[8:12, 5:9, 6:10] = 2
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Prediction")
    _panel(scene, output)  # watching while the segments are created (empty at first)
    import_prediction(classes, volume, output, schema=schema)
    assert _colors(output)["liver"] == (1, 2, 3)
