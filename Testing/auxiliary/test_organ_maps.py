"""Importing organ maps: names from headers and files, structure selection, physical-space resampling."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib import auxiliary as aux
from BackSplitLib.errors import LabelError


@pytest.fixture(scope="module")
def ct(totalseg_reference) -> sitk.Image:
    return sitk.ReadImage(str(totalseg_reference.ct))


@pytest.fixture(scope="module")
def seg(totalseg_reference) -> sitk.Image:
    return sitk.ReadImage(str(totalseg_reference.seg))


@pytest.fixture(scope="module")
def total_table(totalseg_reference) -> dict[int, str]:
    return aux.totalsegmentator_class_map(totalseg_reference.map_to_binary, "total")


def test_class_table_is_read_as_text_without_importing_totalsegmentator(total_table):
    assert len(total_table) == 117
    assert total_table[5] == "liver" and total_table[90] == "brain"
    assert "totalsegmentator" not in sys.modules


def test_other_tasks_of_the_class_table_can_be_chosen(totalseg_reference):
    mr = aux.read_names_file(f"{totalseg_reference.map_to_binary}:total_mr")
    assert mr["liver"].value == 5
    with pytest.raises(LabelError, match="no class_map\\['nope'\\]"):
        aux.read_names_file(f"{totalseg_reference.map_to_binary}:nope")


def test_names_auto_reads_the_label_table_in_totalsegmentators_nifti_header(totalseg_reference, total_table):
    segments, source = aux.detect_names(totalseg_reference.seg)
    assert "NIfTI label table" in source
    assert {name: s.value for name, s in segments.items()} == {name: v for v, name in total_table.items()}


def test_names_auto_finds_an_nnunet_dataset_json_one_folder_up(tmp_path, seg):
    (tmp_path / "labelsTr").mkdir()
    sitk.WriteImage(seg, str(tmp_path / "labelsTr" / "case_001.nii.gz"))  # SimpleITK drops the header table
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "spleen": 1, "liver": 5}}))
    organ_map = aux.read_organ_map(tmp_path / "labelsTr" / "case_001.nii.gz", "auto")
    assert organ_map.names_source.endswith("dataset.json")
    assert {n: s.value for n, s in organ_map.segments.items()} == {"spleen": 1, "liver": 5}


def test_names_auto_prefers_a_names_file_named_like_the_map(tmp_path, seg):
    sitk.WriteImage(seg, str(tmp_path / "organs.nii.gz"))
    (tmp_path / "organs.csv").write_text("value,name\n5,liver\n1,spleen\n")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "other": 1}}))
    segments, source = aux.detect_names(tmp_path / "organs.nii.gz")
    assert source.endswith("organs.csv") and segments["liver"].value == 5


def test_names_auto_without_any_names_says_where_it_looked(tmp_path, seg):
    sitk.WriteImage(seg, str(tmp_path / "organs.nii.gz"))
    with pytest.raises(LabelError, match="no structure names found .*organs.nii.gz.*organs.json.*--names FILE"):
        aux.detect_names(tmp_path / "organs.nii.gz")


@pytest.mark.parametrize("filename, text", [
    ("names.json", json.dumps({"liver": 5, "spleen": 1})),
    ("names_inverse.json", json.dumps({"5": "liver", "1": "spleen"})),
    ("names.csv", "5,liver\n1,spleen\n"),
    ("colors.txt", "# Slicer colour table\n0 Background 0 0 0 0\n5 liver 1 2 3 255\n1 spleen 4 5 6 255\n"),
])
def test_names_files_in_every_supported_form(tmp_path, filename, text):
    path = tmp_path / filename
    path.write_text(text)
    assert {n: s.value for n, s in aux.read_names_file(path).items()} == {"liver": 5, "spleen": 1}


def test_region_based_nnunet_labels_are_refused(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "kidney": [1, 2], "tumor": 2}}))
    with pytest.raises(LabelError, match="region-based"):
        aux.read_names_file(path)


def test_imported_structures_match_the_map_on_the_same_grid(ct, seg, totalseg_reference):
    labels = aux.import_organ_map(ct, aux.read_organ_map(totalseg_reference.seg), "liver,spleen")
    seg_array = sitk.GetArrayFromImage(seg)
    assert labels.classes == {"liver": 1, "spleen": 2}
    np.testing.assert_array_equal(labels.array() == 1, seg_array == 5)
    np.testing.assert_array_equal(labels.array() == 2, seg_array == 1)


def _flipped(image: sitk.Image, axes=(0, 1, 2)) -> sitk.Image:
    """The same physical label map stored with the given index axes reversed (as DICOM exports often are)."""
    array = sitk.GetArrayFromImage(image)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    spacing, size = np.asarray(image.GetSpacing()), np.asarray(image.GetSize())
    for axis in axes:
        array = np.flip(array, axis=2 - axis)
        origin = origin + direction[:, axis] * spacing[axis] * (size[axis] - 1)
        direction[:, axis] *= -1
    flipped = sitk.GetImageFromArray(np.ascontiguousarray(array))
    flipped.SetSpacing(image.GetSpacing())
    flipped.SetOrigin(tuple(origin))
    flipped.SetDirection(tuple(direction.ravel()))
    return flipped


@pytest.mark.parametrize("axes", [(0,), (1, 2), (0, 1, 2)])
def test_a_map_with_flipped_axes_lands_on_the_same_voxels(tmp_path, ct, seg, totalseg_reference, axes):
    flipped = _flipped(seg, axes)
    assert not np.array_equal(sitk.GetArrayFromImage(flipped), sitk.GetArrayFromImage(seg))
    path = tmp_path / "flipped.nii.gz"
    sitk.WriteImage(flipped, str(path))
    request = "liver,kidneys,lungs"
    plain = aux.import_organ_map(ct, aux.read_organ_map(totalseg_reference.seg), request)
    moved = aux.import_organ_map(ct, aux.read_organ_map(path, totalseg_reference.map_to_binary), request)
    assert moved.classes == plain.classes
    np.testing.assert_array_equal(moved.array(), plain.array())
    assert (plain.array() > 0).sum() > 1000


def test_a_map_on_a_finer_grid_is_resampled_by_nearest_neighbour(ct, seg, totalseg_reference):
    finer = sitk.Resample(seg, [2 * s for s in seg.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                          seg.GetOrigin(), [s / 2 for s in seg.GetSpacing()], seg.GetDirection(), 0)
    organ_map = aux.OrganMap(finer, aux.detect_names(totalseg_reference.seg)[0], totalseg_reference.seg, "test")
    labels = aux.import_organ_map(ct, organ_map, "liver")
    liver = sitk.GetArrayFromImage(seg) == 5
    agreement = (labels.array() == 1) == liver
    assert set(np.unique(labels.array())) == {0, 1} and agreement.mean() > 0.99


def test_seg_nrrd_segments_come_from_the_header_layers_and_values(tmp_path, ct, seg):
    seg_array = sitk.GetArrayFromImage(seg)
    layer0 = np.where(seg_array == 5, 1, 0) + np.where(seg_array == 1, 2, 0)  # liver 1, spleen 2
    layer1 = np.where(seg_array == 5, 1, 0)  # an overlapping segment lives on a second layer
    image = sitk.GetImageFromArray(np.stack([layer0, layer1], axis=-1).astype(np.uint8), isVector=True)
    image.CopyInformation(seg)
    for index, (name, value, layer) in enumerate([("Liver", 1, 0), ("Spleen", 2, 0), ("Liver copy", 1, 1)]):
        image.SetMetaData(f"Segment{index}_Name", name)
        image.SetMetaData(f"Segment{index}_LabelValue", str(value))
        image.SetMetaData(f"Segment{index}_Layer", str(layer))
    path = tmp_path / "organs.seg.nrrd"
    sitk.WriteImage(image, str(path), True)
    organ_map = aux.read_organ_map(path, "auto")
    assert organ_map.segments == {"Liver": aux.Segment(0, 1), "Spleen": aux.Segment(0, 2),
                                  "Liver copy": aux.Segment(1, 1)}
    labels = aux.import_organ_map(ct, organ_map, "liver,spleen,liver copy")  # names match case-insensitively
    assert list(labels.classes) == ["Liver", "Spleen", "Liver copy"]
    np.testing.assert_array_equal(labels.array() == 2, seg_array == 1)
    np.testing.assert_array_equal(labels.array() == 3, seg_array == 5)  # the later class wins the overlap


def test_groups_merges_and_globs_select_structures(total_table):
    names = list(total_table.values())
    selection = dict(aux.select_structures(names, "lungs, kidneys, mass=liver+spleen, vertebrae_L*"))
    assert sorted(selection["lung"]) == sorted(n for n in names if n.startswith("lung_") and "lobe" in n)
    assert selection["kidney_left"] == ["kidney_left"] and selection["mass"] == ["liver", "spleen"]
    assert "vertebrae_L1" in selection and "vertebrae_T12" not in selection
    organs = dict(aux.select_structures(names, "abdominal organs"))
    assert {"liver", "spleen", "pancreas", "kidney_left", "colon"} <= set(organs)


def test_unknown_structures_are_named_with_close_matches(total_table):
    with pytest.raises(LabelError, match="unknown structures 'livr', 'pancreatic duct'.*did you mean liver"):
        aux.select_structures(list(total_table.values()), "livr,spleen,pancreatic duct", "the map")


def test_a_roi_subset_output_imports_its_sparse_values(ct, totalseg_reference):
    organ_map = aux.read_organ_map(totalseg_reference.seg_roi_subset, "auto")
    assert {n: s.value for n, s in organ_map.segments.items()} == {"liver": 5, "brain": 90}
    labels = aux.import_organ_map(ct, organ_map, "liver")
    roi = sitk.GetArrayFromImage(sitk.ReadImage(str(totalseg_reference.seg_roi_subset)))
    np.testing.assert_array_equal(labels.array() == 1, roi == 5)


def test_a_map_that_misses_the_image_is_refused(ct, seg, totalseg_reference):
    far = sitk.Image(seg)
    far.SetOrigin(tuple(o + 5000 for o in seg.GetOrigin()))
    organ_map = aux.OrganMap(far, aux.detect_names(totalseg_reference.seg)[0], totalseg_reference.seg, "test")
    with pytest.raises(aux.AuxiliaryError, match="overlaps the image"):
        aux.import_organ_map(ct, organ_map, "liver")
