"""Synthetic abdominal phantoms: deterministic per seed, anatomically arranged, lesions darker than their
host organ, and lesion mimics with the lesions' intensity that are never labelled lesion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.dataset import Dataset
from BackSplitLib.errors import DatasetError, ImageError
from BackSplitLib.io import same_geometry
from BackSplitLib.phantom import (
    LESION_HOSTS, LESION_HU_RANGE, PHANTOM_SCHEMA, build_phantom, make_phantom, write_phantom_dataset,
)

SMALL = (24, 40, 48)  # (z, y, x)
SEEDS = (0, 1, 2, 3)
LESION = PHANTOM_SCHEMA.target_value
V = PHANTOM_SCHEMA.labels


@pytest.fixture(scope="module")
def phantoms():
    return {seed: build_phantom(seed, SMALL) for seed in SEEDS}


@pytest.fixture(scope="module")
def full_size():
    return build_phantom(11)  # no timing asserted here: speed is a benchmark's job


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    ids = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True))
    return ids, int(ids.max())


def dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    image = sitk.BinaryDilate(sitk.GetImageFromArray(mask.astype(np.uint8)), [radius] * 3)
    return sitk.GetArrayFromImage(image).astype(bool)


def surrounding_class(label: np.ndarray, mask: np.ndarray) -> int:
    """The most common label value in a one-voxel shell around ``mask``."""
    shell = dilate(mask) & ~mask
    return int(np.bincount(label[shell]).argmax())


# --------------------------------------------------------------------------- schema and geometry
def test_schema_has_background_auxiliary_organs_and_lesion_target_with_consecutive_values():
    assert PHANTOM_SCHEMA.target == "lesion"
    assert sorted(PHANTOM_SCHEMA.labels.values()) == list(range(len(PHANTOM_SCHEMA.labels)))
    for organ in ("fat", "muscle", "spine", "aorta", "ivc", "liver", "spleen", "kidney_left", "kidney_right",
                  "bowel"):
        assert organ in PHANTOM_SCHEMA.auxiliary_names
    assert "gallbladder" in PHANTOM_SCHEMA.auxiliary_names  # a TotalSegmentator v2 'total' class (issue 13)


def test_same_seed_gives_the_same_phantom_and_other_seeds_differ():
    image, label = make_phantom(5, SMALL)
    again_image, again_label = make_phantom(5, SMALL)
    other_image, _ = make_phantom(6, SMALL)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(again_image))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(again_label))
    assert not np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(other_image))


def test_image_and_label_share_a_grid_with_the_requested_shape_and_spacing():
    image, label = make_phantom(0, SMALL, spacing=(1.2, 1.4, 3.0))
    assert same_geometry(image, label)
    assert image.GetSize() == SMALL[::-1]
    assert image.GetSpacing() == pytest.approx((1.2, 1.4, 3.0))
    assert any(abs(o) > 1 for o in image.GetOrigin())
    assert image.GetPixelID() == sitk.sitkFloat32 and label.GetPixelID() == sitk.sitkUInt8


def test_too_small_a_shape_is_refused_with_the_minimum():
    with pytest.raises(ImageError, match="too small"):
        make_phantom(0, (4, 40, 48))


def test_default_phantom_is_abdominal_sized_and_complete(full_size):
    phantom = full_size
    assert phantom.label.shape == (64, 80, 96)
    assert phantom.spacing == pytest.approx((1.5, 1.5, 2.5))
    assert set(np.unique(phantom.label)) == set(PHANTOM_SCHEMA.labels.values())


# --------------------------------------------------------------------------- anatomy
def test_label_values_are_all_schema_values(phantoms):
    for phantom in phantoms.values():
        PHANTOM_SCHEMA.check_label_values(phantom.label)


def test_organs_sit_where_they_do_in_a_supine_patient(full_size):
    label = full_size.label

    def centroid(name):  # (z, y, x) indices; LPS: +x is patient left, +y posterior, +z superior
        return np.argwhere(label == V[name]).mean(axis=0)

    assert centroid("liver")[2] < centroid("spleen")[2]
    assert centroid("kidney_right")[2] < centroid("spine")[2] < centroid("kidney_left")[2]
    assert centroid("aorta")[1] < centroid("spine")[1]  # the aorta lies anterior to the spine
    assert centroid("kidney_left")[0] < centroid("liver")[0]  # kidneys reach below the liver


def test_every_phantom_has_one_to_four_separate_lesions_of_at_least_ten_voxels(phantoms):
    for phantom in phantoms.values():
        ids, count = components(phantom.label == LESION)
        assert 1 <= count <= 4
        assert count == len(phantom.lesion_hosts)
        assert np.bincount(ids.ravel())[1:].min() >= 10


def test_lesions_lie_in_liver_or_kidneys_and_are_darker_than_their_host(phantoms, full_size):
    for phantom in [*phantoms.values(), full_size]:
        ids, count = components(phantom.label == LESION)
        for i in range(1, count + 1):
            lesion = ids == i
            host = surrounding_class(phantom.label, lesion)
            assert host in {V[h] for h in LESION_HOSTS}
            host_hu = np.median(phantom.image[phantom.label == host])
            assert np.median(phantom.image[lesion]) < host_hu - 15


# --------------------------------------------------------------------------- mimics
def test_mimics_have_the_lesions_intensity_so_only_context_separates_them(phantoms):
    lesion_hu = np.concatenate([p.image[p.label == LESION] for p in phantoms.values()])
    mimic_hu = np.concatenate([p.image[m] for p in phantoms.values() for m in p.mimics.values()])
    liver_hu = np.concatenate([p.image[p.label == V["liver"]] for p in phantoms.values()])
    assert abs(np.median(mimic_hu) - np.median(lesion_hu)) < 15
    assert np.median(liver_hu) - np.median(mimic_hu) > 25
    for phantom in phantoms.values():
        assert all(LESION_HU_RANGE[0] <= hu <= LESION_HU_RANGE[1] for hu in phantom.lesion_hu)


def test_mimics_are_never_labelled_lesion(phantoms):
    for phantom in phantoms.values():
        for kind, mask in phantom.mimics.items():
            assert mask.any(), kind
            assert not np.any(phantom.label[mask] == LESION), kind


def test_every_phantom_has_gallbladder_renal_sinus_fluid_bowel_and_a_free_cyst(phantoms):
    for phantom in phantoms.values():
        assert {"gallbladder", "renal_sinus", "bowel_fluid"} <= set(phantom.mimics)
    assert any("free_cyst" in p.mimics for p in phantoms.values())
    assert any("spleen_cyst" in p.mimics for p in phantoms.values())


def test_gallbladder_is_its_own_auxiliary_class_beside_the_liver(phantoms):
    for phantom in phantoms.values():
        gallbladder = phantom.mimics["gallbladder"]
        assert np.all(phantom.label[gallbladder] == V["gallbladder"])
        assert np.any(phantom.label[dilate(gallbladder)] == V["liver"])


def test_mimics_carry_the_label_an_organ_map_would_give_them(phantoms):
    expected = {"renal_sinus": "background", "free_cyst": "background", "bowel_fluid": "bowel",
                "spleen_cyst": "spleen"}
    for phantom in phantoms.values():
        for kind, name in expected.items():
            if kind in phantom.mimics:
                assert np.all(phantom.label[phantom.mimics[kind]] == V[name]), kind
        sinus = phantom.mimics["renal_sinus"]
        assert np.any(np.isin(phantom.label[dilate(sinus)], [V["kidney_left"], V["kidney_right"]]))


# --------------------------------------------------------------------------- dataset folders
def test_dataset_folder_is_readable_with_training_and_test_cases(tmp_path):
    root = write_phantom_dataset(tmp_path / "Phantom", cases=2, test_cases=1, seed=3, shape=SMALL)
    dataset = Dataset.load(root)
    assert dataset.schema == PHANTOM_SCHEMA
    assert dataset.normalization == "CT"
    assert [c.name for c in dataset.training] == ["phantom_000", "phantom_001"]
    assert [c.name for c in dataset.test] == ["phantom_002"] and dataset.test[0].label is not None
    assert dataset.training[0].image.name == "phantom_000_0000.nii.gz"
    images = [sitk.GetArrayFromImage(sitk.ReadImage(str(c.image))) for c in (*dataset.training, *dataset.test)]
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[0], images[2])
    assert json.loads((root / "dataset.json").read_text())["numTraining"] == 2


def test_same_seed_writes_the_same_cases(tmp_path):
    a = write_phantom_dataset(tmp_path / "a", cases=1, test_cases=1, seed=4, shape=SMALL)
    b = write_phantom_dataset(tmp_path / "b", cases=1, test_cases=1, seed=4, shape=SMALL)
    for rel in ("imagesTr/phantom_000_0000.nii.gz", "labelsTs/phantom_001.nii.gz"):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(a / rel))),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(b / rel))))


def test_rewriting_a_phantom_dataset_replaces_it_without_stale_cases(tmp_path):
    root = write_phantom_dataset(tmp_path / "Phantom", cases=2, test_cases=0, shape=SMALL)
    write_phantom_dataset(root, cases=1, test_cases=0, shape=SMALL)
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == ["phantom_000.nii.gz"]
    assert [p.name for p in tmp_path.iterdir()] == ["Phantom"]  # no temporary folder left behind


def test_a_non_empty_folder_that_is_not_a_phantom_dataset_is_not_overwritten(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        write_phantom_dataset(folder, cases=1, test_cases=0, shape=SMALL)
    assert (folder / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_the_test_set_holds_a_lesion_in_every_host(tmp_path):
    root = write_phantom_dataset(tmp_path / "Phantom", cases=1, test_cases=3, seed=5, shape=(40, 56, 64))
    for case, host in zip(Dataset.load(root).test, LESION_HOSTS):
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        assert np.any(label[dilate(label == LESION) & ~(label == LESION)] == V[host]), (case.name, host)
