"""Slice-view annotations on real MRML: edge letters from the slice orientation, the view's title, and the
image value under the pointer (in HU when the volume may be a CT)."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import slicer_scenes as scenes

from BackSplitSlicer.slice_views import direction_letters, edge_labels, matrix_values, probe, slice_view_facts


def _slice_node(scene, orientation: str):
    logic = slicer.vtkMRMLSliceLogic()  # as trame-slicer's slice view makes its slice node
    logic.SetMRMLScene(scene)
    node = logic.AddSliceNode("Red")
    node.SetOrientation(orientation)
    return node


@pytest.mark.parametrize("orientation, expected", [
    # Slicer's presets: the patient's right on the screen's left, anterior up (axial), superior up.
    ("Axial", {"left": "R", "right": "L", "top": "A", "bottom": "P"}),
    ("Coronal", {"left": "R", "right": "L", "top": "S", "bottom": "I"}),
    ("Sagittal", {"left": "A", "right": "P", "top": "S", "bottom": "I"}),  # Slicer's sagittal faces left
])
def test_standard_views_get_the_radiological_edge_letters(scene, orientation, expected):
    node = _slice_node(scene, orientation)
    assert edge_labels(matrix_values(node.GetSliceToRAS())) == expected
    facts = slice_view_facts(node)
    assert facts["title"].startswith(orientation) and {k: facts[k] for k in expected} == expected


def test_an_oblique_view_names_both_directions_main_first():
    assert direction_letters((-0.8, 0.6, 0.0)) == "LA"
    assert direction_letters((-0.95, 0.1, 0.0)) == "L"  # a small tilt keeps one letter


def test_the_title_says_where_the_slice_is(scene):
    node = _slice_node(scene, "Axial")
    node.JumpSliceByOffsetting(0.0, 0.0, 12.5)
    assert slice_view_facts(node)["title"] == "Axial  S 12.5 mm"


def test_the_probe_reads_the_voxel_under_a_ras_point_in_hu(scene):
    image = scenes.phantom_image().astype(np.int16) - 1000  # CT-like: air at -1000
    volume = scenes.add_volume(scene, image)
    k, j, i = 5, 7, 9
    ras = scenes.volume_ijk_to_ras() @ np.array([i, j, k, 1.0])
    found = probe(volume, ras[:3] + 0.3)  # off-centre, nearer this voxel than any other
    assert found.ijk == (i, j, k) and found.value == image[k, j, i]
    assert found.hounsfield and found.text == f"{image[k, j, i]:.0f} HU at voxel ({i}, {j}, {k})"


def test_the_probe_says_no_hu_for_a_volume_without_negative_values(scene):
    image = scenes.phantom_image().astype(np.float32) + 200.0  # an MR-like range: nothing negative
    volume = scenes.add_volume(scene, image)
    found = probe(volume, scenes.volume_centre_ras())
    assert found is not None and not found.hounsfield and "HU" not in found.text


def test_the_probe_is_none_outside_the_volume(scene):
    volume = scenes.add_volume(scene)
    assert probe(volume, scenes.volume_centre_ras() + 500.0) is None
    assert probe(None, (0, 0, 0)) is None
