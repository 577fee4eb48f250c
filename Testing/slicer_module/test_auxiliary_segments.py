"""Auxiliary structures without drawing: CT tissue classes and organ maps become Auxiliary segments."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from BackSplitLib.auxiliary import ct_tissue_classes
from BackSplitLib.errors import LabelError
from BackSplitSlicer.auxiliary_segments import add_ct_tissue_segments, import_organ_segments, volume_to_sitk
from BackSplitSlicer.case import export_case, prediction_mask
from BackSplitSlicer.roles import segment_roles
from BackSplitSlicer.selftest import phantom_scene


@pytest.fixture
def phantom(scene):
    return phantom_scene(seed=1, shape=(20, 32, 40))


def test_ct_tissue_classes_become_auxiliary_segments_with_the_engines_voxels(phantom):
    volume, segmentation = phantom
    names = add_ct_tissue_segments(volume, segmentation)
    expected = ct_tissue_classes(volume_to_sitk(volume))
    assert names == list(expected.classes)
    roles = segment_roles(segmentation)
    for name, value in expected.classes.items():
        assert roles[name] == "auxiliary"
        assert np.array_equal(prediction_mask(segmentation, name, volume), expected.array() == value)


def test_adding_tissue_classes_twice_replaces_them(phantom):
    volume, segmentation = phantom
    add_ct_tissue_segments(volume, segmentation)
    count = segmentation.GetSegmentation().GetNumberOfSegments()
    add_ct_tissue_segments(volume, segmentation)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == count


def test_organ_map_structures_are_imported_by_name_and_group(phantom, scene):
    volume, organ_map = phantom
    target = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Work")
    target.CreateDefaultDisplayNodes()
    added = import_organ_segments(organ_map, volume, target, "Liver, kidneys")
    assert added == ["liver", "kidney_left", "kidney_right"]
    for name in added:
        assert np.array_equal(prediction_mask(target, name, volume), prediction_mask(organ_map, name, volume))
    assert set(segment_roles(target).values()) == {"auxiliary"}


def test_a_labelmap_organ_map_is_imported_by_its_colour_table_names(phantom, scene):
    volume, organ_map = phantom
    case = export_case(volume, organ_map)
    liver_value = case.schema.labels["liver"]
    # A labelmap node (value 7) whose colour table names the value "Liver".
    labels = sitk.Cast(case.label_sitk() == liver_value, sitk.sitkUInt8) * 7
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "OrganColors")
    colors.SetTypeToUser()
    colors.SetNumberOfColors(8)
    colors.SetColor(7, "Liver", 0.8, 0.4, 0.3, 1.0)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "Organ map")
    labelmap.SetIJKToRASMatrix(volume_ijk_to_ras(volume))
    slicer.util.updateVolumeFromArray(labelmap, sitk.GetArrayFromImage(labels))
    labelmap.CreateDefaultDisplayNodes()
    labelmap.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
    target = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Work")
    target.CreateDefaultDisplayNodes()
    assert import_organ_segments(labelmap, volume, target, "liver") == ["Liver"]
    assert np.array_equal(prediction_mask(target, "Liver", volume), case.label == liver_value)


def test_unknown_structures_are_refused_with_close_matches(phantom, scene):
    volume, organ_map = phantom
    target = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Work")
    with pytest.raises(LabelError, match="livr.*liver"):
        import_organ_segments(organ_map, volume, target, "livr")


def volume_ijk_to_ras(volume):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return matrix
