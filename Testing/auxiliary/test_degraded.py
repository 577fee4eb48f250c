"""Organ labels degraded the way an organ segmenter errs: each error, its rate, and the lesion left alone."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.auxiliary import AuxiliaryError, SegmenterErrors, degrade_organs

ORGANS = {"liver": 1, "kidney": 2}
LESION = 3


def two_organs() -> np.ndarray:
    """A liver box touching a kidney box along x = 10, a lesion inside the liver and one on its edge."""
    label = np.zeros((12, 16, 20), dtype=np.uint8)
    label[2:10, 3:13, 2:10] = ORGANS["liver"]
    label[3:9, 4:12, 10:16] = ORGANS["kidney"]
    label[5:7, 6:8, 4:6] = LESION
    label[5:7, 6:8, 9:11] = LESION  # across the organs' boundary
    return label


def morph(mask: np.ndarray, radius: int) -> np.ndarray:
    op = sitk.BinaryDilate if radius > 0 else sitk.BinaryErode
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    return sitk.GetArrayFromImage(op(image, [abs(radius)] * 3, sitk.sitkBall, 0, 1)).astype(bool)


def test_the_lesion_is_never_altered_and_the_same_seed_gives_the_same_map():
    label = two_organs()
    for seed in range(20):
        degraded, _ = degrade_organs(label, ORGANS, np.random.default_rng([seed, 0]), protected=[LESION])
        assert np.array_equal(degraded == LESION, label == LESION)
    again = [degrade_organs(label, ORGANS, np.random.default_rng([4, 0]), [LESION])[0] for _ in range(2)]
    assert np.array_equal(*again)
    assert not np.array_equal(again[0], label)


def test_each_organ_boundary_moves_by_one_or_two_voxels_as_recorded():
    label = np.zeros((16, 16, 16), dtype=np.uint8)
    label[4:12, 4:12, 4:12] = ORGANS["liver"]
    errors = SegmenterErrors(mislabel_probability=0, miss_probability=0)
    radii = set()
    for seed in range(12):
        degraded, record = degrade_organs(label, {"liver": 1}, np.random.default_rng(seed), errors=errors)
        radius = record["shifts"]["liver"]
        radii.add(radius)
        assert np.array_equal(degraded == 1, morph(label == 1, radius))
    assert radii <= {-2, -1, 1, 2} and {r > 0 for r in radii} == {True, False}


def test_a_neighbour_gets_the_rim_where_two_organs_touch():
    label = two_organs()
    errors = SegmenterErrors(boundary_shift=(0, 0), mislabel_rim=2, miss_probability=0)
    degraded, record = degrade_organs(label, ORGANS, np.random.default_rng(0), [LESION], errors)
    a, b = (ORGANS[n] for n in record["mislabelled"])
    rim = (label == a) & morph(label == b, 2)
    assert rim.any() and np.all(degraded[rim] == b)
    assert np.array_equal(degraded[~rim], label[~rim])


def test_an_organ_is_missed_in_about_a_tenth_of_cases():
    label = two_organs()
    errors = SegmenterErrors(boundary_shift=(0, 0), mislabel_probability=0)
    missed = [degrade_organs(label, ORGANS, np.random.default_rng([0, i]), [LESION], errors)[1]["missed"]
              for i in range(300)]
    assert 0.06 < np.mean([m is not None for m in missed]) < 0.14
    degraded, record = next((d, r) for d, r in (degrade_organs(label, ORGANS, np.random.default_rng([0, i]), [LESION],
                                                               errors) for i in range(300)) if r["missed"])
    assert not np.any(degraded == ORGANS[record["missed"]])


def test_impossible_error_settings_are_refused():
    with pytest.raises(AuxiliaryError, match="miss_probability"):
        SegmenterErrors(miss_probability=1.5)
