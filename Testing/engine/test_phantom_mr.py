"""The second phantom family (MR-like, metastases): deterministic, other hosts and mimics than the CT
family, mimics with the metastases' intensity carrying the organ-map label documented per mimic."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.dataset import Dataset
from BackSplitLib.errors import DatasetError
from BackSplitLib.phantom import PHANTOM_SCHEMA, write_phantom_dataset
from BackSplitLib.phantom_families import FAMILIES, phantom_family
from BackSplitLib.phantom_mr import LESION_HOSTS, MR_FAMILY, MR_SCHEMA, build_mr_phantom

SHAPE = (40, 56, 64)  # (z, y, x): the effect benchmark's size, where every host fits a lesion
V = MR_SCHEMA.labels
METASTASIS = MR_SCHEMA.target_value


@pytest.fixture(scope="module")
def phantoms():
    return [build_mr_phantom(seed, SHAPE, first_host=LESION_HOSTS[seed % len(LESION_HOSTS)]) for seed in range(4)]


def test_same_seed_same_phantom_and_never_the_ct_familys_image():
    a, b = build_mr_phantom(3, (24, 40, 48)), build_mr_phantom(3, (24, 40, 48))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.image, build_mr_phantom(4, (24, 40, 48)).image)


def test_it_differs_from_the_ct_family_in_target_hosts_and_classes():
    assert MR_SCHEMA.target == "metastasis" != PHANTOM_SCHEMA.target
    assert set(LESION_HOSTS) - {"liver"} and not set(LESION_HOSTS) & {"kidney_left", "kidney_right"}
    assert {"vertebrae", "stomach", "gallbladder", "adrenal_gland_right"} <= set(MR_SCHEMA.auxiliary_names)


def test_each_first_lesion_sits_in_its_assigned_host_and_is_brighter_than_it(phantoms):
    for seed, phantom in enumerate(phantoms):
        host = LESION_HOSTS[seed % len(LESION_HOSTS)]
        assert phantom.lesion_hosts[0] == host
        assert set(phantom.lesion_hosts) <= set(LESION_HOSTS)
        assert np.count_nonzero(phantom.label == METASTASIS) >= 10
        assert np.median(phantom.image[phantom.label == METASTASIS]) > np.median(phantom.image[phantom.label == V[host]])


def test_mimics_have_the_metastases_intensity_and_carry_their_documented_label(phantoms):
    expected = {"spleen": ["spleen"], "renal_cortex": ["kidney_left", "kidney_right"],
                "gallbladder_sludge": ["gallbladder"], "stomach_contents": ["stomach"],
                "lymph_node": ["background"], "liver_bright_focus": ["liver"]}
    mimic_ratio, lesion_ratio = [], []
    for phantom in phantoms:
        liver = np.median(phantom.image[phantom.label == V["liver"]])
        lesion_ratio.append(phantom.image[phantom.label == METASTASIS] / liver)
        for kind, mask in phantom.mimics.items():
            assert not np.any(phantom.label[mask] == METASTASIS), kind
            assert np.all(np.isin(phantom.label[mask], [V[n] for n in expected[kind]])), kind
            if kind != "liver_bright_focus":  # the one mimic that is brighter on purpose
                mimic_ratio.append(phantom.image[mask] / liver)
        assert {"spleen", "renal_cortex", "stomach_contents"} <= set(phantom.mimics)
    # Relative to the liver, after the bias field and noise: the same intensity, brighter than the liver.
    mimic, lesion = np.median(np.concatenate(mimic_ratio)), np.median(np.concatenate(lesion_ratio))
    assert abs(mimic - lesion) < 0.3 and min(mimic, lesion) > 1.3


def test_a_dataset_of_the_family_is_mr_normalised_and_its_test_set_holds_every_host(tmp_path):
    root = write_phantom_dataset(tmp_path / "mr", cases=1, test_cases=4, seed=0, shape=SHAPE, family=MR_FAMILY)
    dataset = Dataset.load(root)
    assert dataset.schema == MR_SCHEMA and dataset.normalization == "zscore"
    hosts = set()
    for case in dataset.test:
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        lesion = label == METASTASIS
        grown = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(lesion.astype(np.uint8)), [1] * 3))
        hosts |= {MR_SCHEMA.class_names[v] for v in np.unique(label[(grown > 0) & ~lesion])}
    assert set(LESION_HOSTS) <= hosts


def test_families_by_name():
    assert set(FAMILIES) == {"ct", "mr", "liver", "lung"} and phantom_family("mr") is MR_FAMILY
    with pytest.raises(DatasetError, match="ct, mr, liver, lung"):
        phantom_family("pet")
