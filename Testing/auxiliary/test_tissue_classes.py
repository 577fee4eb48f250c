"""CT tissue classes and MR intensity classes on TotalSegmentator's reference CT and MR."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib import auxiliary as aux
from BackSplitLib.errors import BackSplitError, ImageError


@pytest.fixture(scope="module")
def ct(totalseg_reference) -> sitk.Image:
    return sitk.ReadImage(str(totalseg_reference.ct))


@pytest.fixture(scope="module")
def ct_hu(ct) -> np.ndarray:
    return sitk.GetArrayFromImage(ct)


@pytest.fixture(scope="module")
def body(ct) -> np.ndarray:
    return sitk.GetArrayFromImage(aux.ct_body_mask(ct)).astype(bool)


@pytest.fixture(scope="module")
def tissues(ct) -> aux.AuxiliaryLabels:
    return aux.ct_tissue_classes(ct)


def test_tissue_map_has_the_image_grid_and_the_four_classes(ct, tissues):
    assert tissues.classes == {"lung_air": 1, "fat": 2, "soft_tissue": 3, "bone": 4}
    assert tissues.label.GetSize() == ct.GetSize()
    assert tissues.label.GetDirection() == ct.GetDirection() and tissues.label.GetOrigin() == ct.GetOrigin()
    assert all(count > 0 for count in tissues.voxel_counts().values())


@pytest.mark.parametrize("name, low, high", [("lung_air", -np.inf, -400), ("fat", -190, -30),
                                             ("soft_tissue", -29, 150), ("bone", 250, np.inf)])
def test_each_class_holds_only_voxels_of_its_hu_range_inside_the_body(ct_hu, body, tissues, name, low, high):
    voxels = tissues.array() == tissues.classes[name]
    assert voxels.any()
    assert low <= ct_hu[voxels].min() and ct_hu[voxels].max() <= high
    assert not (voxels & ~body).any()


def test_tissue_means_are_those_of_real_tissue(ct_hu, tissues):
    mean = {name: ct_hu[tissues.array() == value].mean() for name, value in tissues.classes.items()}
    assert -120 < mean["fat"] < -60  # fat is about -100 HU
    assert 0 < mean["soft_tissue"] < 80  # muscle and organs 20-60 HU
    assert mean["bone"] > 250


def test_bone_has_no_specks(ct, tissues):
    bone = sitk.Cast(tissues.label == tissues.classes["bone"], sitk.sitkUInt8)
    sizes = sitk.LabelShapeStatisticsImageFilter()
    sizes.Execute(sitk.ConnectedComponent(bone, True))
    min_voxels = aux.TissueRanges().bone_min_volume_mm3 / np.prod(ct.GetSpacing())
    assert sizes.GetNumberOfLabels() > 0
    assert all(sizes.GetNumberOfPixels(i) >= min_voxels for i in sizes.GetLabels())


def test_body_mask_is_one_component_and_excludes_the_air_around_it(ct_hu, body):
    labels = sitk.ConnectedComponent(sitk.GetImageFromArray(body.astype(np.uint8)), True)
    assert sitk.GetArrayViewFromImage(labels).max() == 1
    assert np.median(ct_hu[~body]) < -900
    assert not body[:, :, 0].any() and not body[:, :, -1].any()  # left and right of the patient is air


def test_scanner_table_is_cut_off_although_it_touches_the_body(ct, ct_hu, body):
    outside_dense = (ct_hu > -500) & ~body
    rows = np.nonzero(outside_dense)[1]
    assert outside_dense.sum() > 1000 and rows.max() < ct_hu.shape[1] // 4  # the table, behind the patient
    naive = sitk.GetArrayFromImage(aux.largest_component(ct > -500)).astype(bool)
    assert (naive & outside_dense).sum() > 500  # without the opening the table would be "body"


def test_air_inside_the_body_is_kept_by_hole_filling(ct_hu, body):
    assert ((ct_hu < -400) & body).sum() > 1000  # bowel gas and lung bases


def test_hu_ranges_are_configurable(ct, ct_hu):
    ranges = aux.TissueRanges().with_ranges({"fat": (-150, -50), "bone": (400, None)})
    labels = aux.ct_tissue_classes(ct, ranges)
    fat = ct_hu[labels.array() == labels.classes["fat"]]
    bone = ct_hu[labels.array() == labels.classes["bone"]]
    assert fat.min() >= -150 and fat.max() <= -50 and bone.min() >= 400


def test_hu_range_strings_parse_and_reject_nonsense():
    assert aux.parse_hu_ranges(["fat=-200:-40", "bone=300:"]) == {"fat": (-200.0, -40.0), "bone": (300.0, None)}
    with pytest.raises(BackSplitError, match="NAME=LOW:HIGH"):
        aux.parse_hu_ranges(["fat=-200"])
    with pytest.raises(BackSplitError, match="unknown tissue class 'fatty'"):
        aux.TissueRanges().with_ranges({"fatty": (0, 1)})


def test_an_image_without_negative_values_is_refused_as_not_hu(ct):
    shifted = sitk.Cast(ct, sitk.sitkInt32) + 2000
    with pytest.raises(ImageError, match="not a CT in Hounsfield units"):
        aux.ct_tissue_classes(shifted)


@pytest.mark.parametrize("method", aux.MR_METHODS)
def test_mr_classes_are_ordered_dark_to_bright_inside_the_body(totalseg_reference, method):
    mr = sitk.ReadImage(str(totalseg_reference.mr))
    values = sitk.GetArrayFromImage(mr)
    labels = aux.mr_intensity_classes(mr, 3, method)
    assert list(labels.classes) == ["mr_class_1", "mr_class_2", "mr_class_3"]
    means = [values[labels.array() == v].mean() for v in labels.classes.values()]
    assert means == sorted(means)
    body = sitk.GetArrayFromImage(aux.mr_body_mask(mr)).astype(bool)
    assert not ((labels.array() > 0) & ~body).any() and (labels.array() > 0).sum() == body.sum()
    assert np.median(values[~body]) < np.median(values[body])


def test_mr_class_count_is_checked(totalseg_reference):
    mr = sitk.ReadImage(str(totalseg_reference.mr))
    with pytest.raises(BackSplitError, match="between 2 and 8"):
        aux.mr_intensity_classes(mr, 1)
