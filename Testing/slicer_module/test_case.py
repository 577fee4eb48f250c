"""export_case and import_prediction against real MRML: oblique grids, overlaps, classes by name."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicer_scenes as scenes

from BackSplitLib.errors import GeometryError, LabelError
from BackSplitLib.io import Geometry
from BackSplitLib.schema import LabelSchema
from BackSplitSlicer.case import Case, export_case, import_prediction, prediction_mask, volume_geometry
from BackSplitSlicer.roles import set_segment_role


@pytest.fixture
def case_scene(scene):
    """Phantom volume + six overlapping segments; Table is ignored and Notes unused."""
    volume = scenes.add_volume(scene)
    segmentation = scenes.add_segmentation(scene, scenes.standard_blobs())
    set_segment_role(segmentation, "Table", "ignore")
    set_segment_role(segmentation, "Notes", "unused")
    return volume, segmentation


def expected_label(segmentation, values: dict[str, int], ignore_value: int) -> np.ndarray:
    """The label map written by hand: auxiliary by value, then ignore, then every target segment on top."""
    masks = {name: scenes.expected_mask(segmentation, name)
             for name in ("Kidney", "Liver", "Cyst", "Tumor 2", "Table")}
    label = np.zeros(scenes.VOLUME_SHAPE, np.uint8)
    for name in sorted(("Kidney", "Liver"), key=values.get):
        label[masks[name]] = values[name]
    label[masks["Table"]] = ignore_value
    label[masks["Cyst"] | masks["Tumor 2"]] = values["lesion"]
    return label


def test_volume_geometry_is_the_ras_grid_in_lps(scene):
    volume = scenes.add_volume(scene)
    reference = scenes.volume_reference_sitk()
    geometry = volume_geometry(volume)
    assert geometry.mismatch(Geometry.of(reference)) is None
    # A voxel's physical point agrees with Slicer's RAS position once x and y are negated.
    ras = scenes.volume_ijk_to_ras() @ np.array([3, 5, 7, 1.0])
    image = scenes.volume_reference_sitk()
    lps = np.array(image.TransformIndexToPhysicalPoint((3, 5, 7)))
    assert np.allclose(lps, [-ras[0], -ras[1], ras[2]])


def test_export_case_equals_independent_resampling_voxel_for_voxel(case_scene):
    volume, segmentation = case_scene
    case = export_case(volume, segmentation)
    assert case.schema.labels == {"background": 0, "Kidney": 1, "Liver": 2, "lesion": 3, "ignore": 4}
    assert case.schema.target == "lesion"
    expected = expected_label(segmentation, case.schema.labels, 4)
    assert case.label.shape == scenes.VOLUME_SHAPE
    assert np.array_equal(case.label, expected)
    # The scene really exercises every rule: overlaps exist and every class is present.
    assert set(np.unique(case.label)) == {0, 1, 2, 3, 4}


def test_exported_image_is_the_volume_as_float32(case_scene):
    volume, segmentation = case_scene
    case = export_case(volume, segmentation)
    assert case.image.dtype == np.float32
    assert np.array_equal(case.image, slicer.util.arrayFromVolume(volume).astype(np.float32))
    assert case.geometry.mismatch(Geometry.of(scenes.volume_reference_sitk())) is None


def test_target_wins_where_the_lesion_overlaps_an_organ(case_scene):
    volume, segmentation = case_scene
    case = export_case(volume, segmentation)
    cyst = scenes.expected_mask(segmentation, "Cyst")
    kidney = scenes.expected_mask(segmentation, "Kidney")
    assert (cyst & kidney).any()
    assert np.all(case.label[cyst & kidney] == case.schema.target_value)


def test_unused_segments_are_dropped(case_scene):
    volume, segmentation = case_scene
    with_notes = export_case(volume, segmentation)
    set_segment_role(segmentation, "Notes", "auxiliary")
    assert "Notes" in export_case(volume, segmentation).schema.labels
    assert "Notes" not in with_notes.schema.labels


def test_class_values_come_from_names_not_segment_order(scene):
    volume = scenes.add_volume(scene)
    blobs = scenes.standard_blobs()[:4]
    forward = scenes.add_segmentation(scene, blobs, "Forward")
    backward = scenes.add_segmentation(scene, blobs[::-1], "Backward")
    model_schema = LabelSchema({"background": 0, "Liver": 1, "Kidney": 2, "lesion": 3}, "lesion")
    a = export_case(volume, forward, schema=model_schema)
    b = export_case(volume, backward, schema=model_schema)
    assert a.schema.labels == b.schema.labels == model_schema.labels
    assert np.array_equal(a.label, b.label)
    # Liver is 1 and Kidney 2 because the model says so, although Kidney comes first in "Forward".
    kidney, liver = scenes.expected_mask(forward, "Kidney"), scenes.expected_mask(forward, "Liver")
    lesion = scenes.expected_mask(forward, "Cyst") | scenes.expected_mask(forward, "Tumor 2")
    assert np.array_equal(a.label == 1, liver & ~kidney & ~lesion)
    assert np.array_equal(a.label == 2, kidney & ~lesion)


def test_new_auxiliary_names_extend_the_model_schema(scene):
    volume = scenes.add_volume(scene)
    segmentation = scenes.add_segmentation(scene, scenes.standard_blobs()[:3])
    model_schema = LabelSchema({"background": 0, "Spleen": 1, "lesion": 2}, "lesion")
    case = export_case(volume, segmentation, schema=model_schema)
    assert case.schema.labels == {"background": 0, "Spleen": 1, "lesion": 2, "Kidney": 3, "Liver": 4}


def test_several_target_segments_merge_into_one_class(case_scene):
    volume, segmentation = case_scene
    case = export_case(volume, segmentation)
    lesion = case.label == case.schema.target_value
    assert np.array_equal(lesion, scenes.expected_mask(segmentation, "Cyst")
                          | scenes.expected_mask(segmentation, "Tumor 2"))


def test_a_case_needs_a_target_segment(scene):
    volume = scenes.add_volume(scene)
    segmentation = scenes.add_segmentation(scene, scenes.standard_blobs()[:2])
    with pytest.raises(LabelError, match="Target"):
        export_case(volume, segmentation)


def test_an_auxiliary_segment_may_not_use_a_reserved_name(scene):
    volume = scenes.add_volume(scene)
    blobs = scenes.standard_blobs()[:3]
    blobs[0].name = "background"
    segmentation = scenes.add_segmentation(scene, blobs)
    with pytest.raises(LabelError, match="reserved"):
        export_case(volume, segmentation)


def test_export_leaves_no_temporary_nodes(case_scene, scene):
    volume, segmentation = case_scene
    before = scene.GetNumberOfNodes()
    export_case(volume, segmentation)
    assert scene.GetNumberOfNodes() == before


def test_case_converts_to_sitk_and_files_without_loss(case_scene, tmp_path):
    volume, segmentation = case_scene
    case = export_case(volume, segmentation, name="phantom")
    image, label = case.image_sitk(), case.label_sitk()
    assert np.array_equal(sitk.GetArrayFromImage(image), case.image)
    assert Geometry.of(image) == case.geometry == Geometry.of(label)
    files = case.write(tmp_path)
    back = Case.read(files)
    assert np.array_equal(back.image, case.image) and np.array_equal(back.label, case.label)
    assert back.schema == case.schema
    assert back.geometry.size == case.geometry.size
    assert np.allclose(back.geometry.spacing, case.geometry.spacing, rtol=0, atol=1e-12)
    assert np.allclose(back.geometry.origin, case.geometry.origin, rtol=0, atol=1e-12)
    assert np.allclose(back.geometry.direction, case.geometry.direction, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------- prediction
def random_mask(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(scenes.VOLUME_SHAPE, np.uint8)
    mask[4:9, 6:12, 5:15] = rng.random((5, 6, 10)) < 0.6
    return mask


def test_import_prediction_puts_exactly_the_mask_voxels_in_the_segment(scene):
    volume = scenes.add_volume(scene)
    mask = random_mask()
    created = import_prediction(mask, volume, show_3d=False)
    node = scene.GetFirstNodeByName("BackSplit prediction")
    assert list(created) == ["BackSplit lesion"]
    got = prediction_mask(node, "BackSplit lesion", volume)
    assert np.array_equal(got, mask.astype(bool))
    # Independent check: the stored labelmap resampled by SimpleITK onto the volume grid.
    assert np.array_equal(scenes.expected_mask(node, "BackSplit lesion"), mask.astype(bool))


def test_import_prediction_segment_has_exactly_the_volume_geometry(scene):
    volume = scenes.add_volume(scene)
    import_prediction(random_mask(), volume, show_3d=False)
    node = scene.GetFirstNodeByName("BackSplit prediction")
    stored = scenes.stored_segment_sitk(node, "BackSplit lesion")
    reference = scenes.volume_reference_sitk()
    assert np.allclose(stored.GetSpacing(), reference.GetSpacing(), atol=1e-9)
    assert np.allclose(stored.GetDirection(), reference.GetDirection(), atol=1e-9)
    # The stored extent may be cropped to the mask; its voxels sit exactly on the volume's voxels.
    index = np.array(reference.TransformPhysicalPointToContinuousIndex(stored.GetOrigin()))
    assert np.allclose(index, np.round(index), atol=1e-6)


def test_import_prediction_with_schema_adds_hidden_auxiliary_segments(scene):
    volume = scenes.add_volume(scene)
    schema = LabelSchema({"background": 0, "Kidney": 1, "lesion": 2}, "lesion")
    classes = np.zeros(scenes.VOLUME_SHAPE, np.uint8)
    classes[3:10, 5:12, 4:16] = 1
    classes[5:7, 7:9, 8:11] = 2
    created = import_prediction(classes, volume, schema=schema, show_3d=False)
    node = scene.GetFirstNodeByName("BackSplit prediction")
    assert set(created) == {"BackSplit lesion", "Kidney"}
    assert np.array_equal(prediction_mask(node, "BackSplit lesion", volume), classes == 2)
    assert np.array_equal(prediction_mask(node, "Kidney", volume), classes == 1)
    display = node.GetDisplayNode()
    assert display.GetSegmentVisibility(created["BackSplit lesion"])
    assert not display.GetSegmentVisibility(created["Kidney"])


def test_predicting_again_replaces_the_segment(scene):
    volume = scenes.add_volume(scene)
    import_prediction(random_mask(1), volume, show_3d=False)
    node = scene.GetFirstNodeByName("BackSplit prediction")
    second = random_mask(2)
    import_prediction(second, volume, segmentation_node=node, show_3d=False)
    assert node.GetSegmentation().GetNumberOfSegments() == 1
    assert np.array_equal(prediction_mask(node, "BackSplit lesion", volume), second.astype(bool))


def test_import_prediction_resamples_an_image_on_another_grid(scene):
    volume = scenes.add_volume(scene)
    mask = random_mask()
    on_volume_grid = sitk.GetImageFromArray(mask)
    on_volume_grid.CopyInformation(scenes.volume_reference_sitk())
    # The same mask on a finer grid (2x in every direction) must come back unchanged.
    finer = sitk.Resample(on_volume_grid, [2 * s for s in on_volume_grid.GetSize()], sitk.Transform(),
                          sitk.sitkNearestNeighbor, on_volume_grid.GetOrigin(),
                          [s / 2 for s in on_volume_grid.GetSpacing()], on_volume_grid.GetDirection())
    import_prediction(finer, volume, show_3d=False)
    node = scene.GetFirstNodeByName("BackSplit prediction")
    got = prediction_mask(node, "BackSplit lesion", volume)
    assert (got != mask.astype(bool)).sum() <= 0.02 * mask.sum()


def test_import_prediction_refuses_an_array_of_the_wrong_shape(scene):
    volume = scenes.add_volume(scene)
    with pytest.raises(GeometryError, match="shape"):
        import_prediction(np.zeros((3, 4, 5), np.uint8), volume, show_3d=False)


def test_import_prediction_builds_a_3d_surface(scene):
    volume = scenes.add_volume(scene)
    import_prediction(random_mask(), volume, show_3d=True)
    node = scene.GetFirstNodeByName("BackSplit prediction")
    surface_name = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    assert node.GetSegmentation().ContainsRepresentation(surface_name)


def test_many_segments_sharing_a_layer_export_in_one_pass_with_overlaps_resolved(scene):
    """An organ map's segments share one labelmap layer (read once); a lesion drawn on another grid, in its
    own layer, still wins where it overlaps them; class values still come from names."""
    from BackSplitSlicer.case import _segments_by_layer

    volume = scenes.add_volume(scene)
    labels = np.zeros(scenes.VOLUME_SHAPE, np.uint8)
    for value in range(1, 25):  # 24 slabs of organs, label value = column + 1
        labels[:, 2:18, value - 1] = value
    names = {value: f"organ_{value:02d}" for value in range(1, 25)}
    segmentation = scenes.add_label_map_segmentation(scene, volume, labels, names)
    lesion = scenes.Blob("lesion", tuple(scenes.volume_centre_ras()), (3.0, 3.0, 3.0))
    segment = slicer.vtkSegment()
    segment.SetName("lesion")
    segment.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(),
                              scenes.blob_oriented_image(lesion))
    segmentation.GetSegmentation().AddSegment(segment)
    set_segment_role(segmentation, "organ_24", "unused")
    layers = _segments_by_layer(segmentation, {segmentation.GetSegmentation().GetNthSegmentID(i): 1
                                               for i in range(25)})
    assert sorted(len(ids) for ids in layers.values()) == [1, 24] and None not in layers

    case = export_case(volume, segmentation)
    organs = sorted(names.values())[:23]
    assert case.schema.auxiliary_names == organs
    expected = np.zeros(scenes.VOLUME_SHAPE, np.uint8)
    for value in range(1, 24):
        expected[labels == value] = case.schema.labels[names[value]]
    expected[scenes.expected_mask(segmentation, "lesion")] = case.schema.target_value
    assert np.array_equal(case.label, expected)
    assert 0 < (case.label == case.schema.target_value).sum() < (labels > 0).sum()
