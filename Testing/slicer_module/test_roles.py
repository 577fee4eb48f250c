"""Segment roles: defaults from names, the BackSplit.Role tag, and surviving a .seg.nrrd round trip."""

from __future__ import annotations

import pytest
import slicer
import slicer_scenes as scenes

from BackSplitLib.errors import LabelError
from BackSplitSlicer.roles import _read_tag, default_role, segment_roles, set_segment_role


@pytest.mark.parametrize("name", ["Lesion", "liver_tumor", "Tumour 3", "renal cyst", "Nodule", "bone metastasis",
                                  "mass", "Lung mass 2", "GGO", "ggo_left", "met", "liver met", "Mets", "tumor"])
def test_lesion_like_names_default_to_target(name):
    assert default_role(name) == "target"


@pytest.mark.parametrize("name", ["Kidney", "Liver", "table", "spleen", "metal", "massive_vessel", "gallbladder"])
def test_other_names_default_to_auxiliary(name):
    assert default_role(name) == "auxiliary"


@pytest.mark.parametrize("name", ["Segment_1", "Segment 12", "segment", "", "BackSplit lesion"])
def test_unnamed_segments_and_predictions_default_to_unused(name):
    # Teaching an unknown segment as background is the unsafe choice.
    assert default_role(name) == "unused"


def test_a_role_shown_by_the_panel_is_written_to_the_tag_and_saved(scene, tmp_path):
    from BackSplitSlicer.panel import MemorySettings, PanelController

    segmentation = scenes.add_segmentation(scene, scenes.standard_blobs()[:3])  # Kidney, Liver, Cyst
    panel = PanelController(scene, MemorySettings())
    new_id = segmentation.GetSegmentation().AddEmptySegment("", "Segment_4")
    shown = {row.name: row.role for row in panel.state().roles}
    assert shown == {"Kidney": "auxiliary", "Liver": "auxiliary", "Cyst": "target", "Segment_4": "unused"}
    segmentation.GetSegmentation().GetSegment(new_id).SetName("tumour")  # tagged already: the role stays
    path = tmp_path / "roles.seg.nrrd"
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(segmentation)
    reread = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(reread)
    storage.ReadData(reread)
    segments = reread.GetSegmentation()
    tags = {segments.GetNthSegment(i).GetName(): _read_tag(segments.GetNthSegment(i)) for i in range(4)}
    assert tags == {"Kidney": "auxiliary", "Liver": "auxiliary", "Cyst": "target", "tumour": "unused"}


def test_roles_default_from_names_until_a_tag_is_set(scene):
    segmentation = scenes.add_segmentation(scene, scenes.standard_blobs()[:3])
    assert segment_roles(segmentation) == {"Kidney": "auxiliary", "Liver": "auxiliary", "Cyst": "target"}
    set_segment_role(segmentation, "Liver", "Ignore")
    assert segment_roles(segmentation)["Liver"] == "ignore"


def test_role_is_stored_in_the_segment_tag(scene):
    segmentation = scenes.add_segmentation(scene, scenes.standard_blobs()[:1])
    set_segment_role(segmentation, "Kidney", "unused")
    segment = segmentation.GetSegmentation().GetSegment(
        segmentation.GetSegmentation().GetSegmentIdBySegmentName("Kidney"))
    assert _read_tag(segment) == "unused"


def test_unknown_role_and_unknown_segment_are_refused_with_the_choices(scene):
    segmentation = scenes.add_segmentation(scene, scenes.standard_blobs()[:2])
    with pytest.raises(LabelError, match="target, auxiliary, ignore, unused"):
        set_segment_role(segmentation, "Kidney", "organ")
    with pytest.raises(LabelError, match="'Kidney', 'Liver'"):
        set_segment_role(segmentation, "Spleen", "target")


def test_roles_survive_writing_and_reading_the_seg_nrrd(scene, tmp_path):
    segmentation = scenes.add_segmentation(scene, scenes.standard_blobs())
    set_segment_role(segmentation, "Table", "ignore")
    set_segment_role(segmentation, "Notes", "unused")
    set_segment_role(segmentation, "Kidney", "target")  # against its name's default
    roles_before = segment_roles(segmentation)

    path = tmp_path / "roles.seg.nrrd"
    writer = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    writer.SetFileName(str(path))
    assert writer.WriteData(segmentation)
    assert path.stat().st_size > 0

    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Loaded")
    reader = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(path))
    assert reader.ReadData(loaded)
    assert segment_roles(loaded) == roles_before
    assert roles_before == {"Kidney": "target", "Liver": "auxiliary", "Cyst": "target", "Tumor 2": "target",
                            "Table": "ignore", "Notes": "unused"}
    assert isinstance(loaded, slicer.vtkMRMLSegmentationNode)
