"""Adding automatic tissue classes to every case of a dataset, in place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib import auxiliary as aux
from BackSplitLib.dataset import Dataset, write_dataset_json
from BackSplitLib.errors import LabelError
from BackSplitLib.schema import LabelSchema

SCHEMA = LabelSchema({"background": 0, "liver": 1, "lesion": 2, "ignore": 3}, "lesion")


def _sphere(shape, centre, radius) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


@pytest.fixture
def dataset(tmp_path, totalseg_reference) -> Path:
    """Two training cases on the reference CT (one fully labelled with liver, lesion and ignore; one with the
    lesion only) and a test case whose label holds ignore voxels."""
    ct = sitk.ReadImage(str(totalseg_reference.ct))
    liver = sitk.GetArrayFromImage(sitk.ReadImage(str(totalseg_reference.seg))) == 5
    centre = np.argwhere(liver).mean(axis=0).round().astype(int)
    lesion = _sphere(liver.shape, centre, 3)
    ignore = np.zeros(liver.shape, bool)
    ignore[10:14, 40:60, 40:60] = True
    full = SCHEMA.merge(lesion, {"liver": liver}, ignore)
    lesion_only = SCHEMA.merge(_sphere(liver.shape, centre + [0, 5, 5], 2), shape=liver.shape)
    root = tmp_path / "Dataset002_Ref"
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / folder).mkdir(parents=True)
    for name, label, split in (("full", full, "Tr"), ("partial", lesion_only, "Tr"), ("test", full, "Ts")):
        sitk.WriteImage(ct, str(root / f"images{split}" / f"{name}_0000.nii.gz"))
        image = sitk.GetImageFromArray(label)
        image.CopyInformation(ct)
        sitk.WriteImage(image, str(root / f"labels{split}" / f"{name}.nii.gz"))
    write_dataset_json(root, SCHEMA, 2, cases_without_auxiliary=["partial"], description="keep me")
    return root


def _label(root: Path, name: str, split: str = "Tr") -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(root / f"labels{split}" / f"{name}.nii.gz")))


def test_new_classes_follow_the_existing_ones_and_ignore_stays_highest(dataset):
    update = aux.add_classes_to_dataset(dataset, aux.ct_tissue_classes)
    assert update.added == ["lung_air", "fat", "soft_tissue", "bone"]
    expected = {"background": 0, "liver": 1, "lesion": 2, "lung_air": 3, "fat": 4, "soft_tissue": 5, "bone": 6,
                "ignore": 7}
    assert update.schema.labels == expected
    loaded = Dataset.load(dataset)
    assert loaded.schema.labels == expected and loaded.raw["description"] == "keep me"


def test_existing_labels_win_and_ignore_voxels_are_remapped(dataset):
    before = _label(dataset, "full")
    aux.add_classes_to_dataset(dataset, aux.ct_tissue_classes)
    after = _label(dataset, "full")
    np.testing.assert_array_equal(after == 2, before == 2)  # target
    np.testing.assert_array_equal(after == 1, before == 1)  # liver, although it is soft tissue by HU
    np.testing.assert_array_equal(after == 7, before == 3)  # ignore moved to the new highest value
    assert set(np.unique(after[before == 0])) <= {0, 3, 4, 5, 6}
    assert (after == 5).sum() > 1000 and (after == 4).sum() > 1000


def test_test_labels_are_remapped_but_get_no_tissue_classes(dataset):
    before = _label(dataset, "test", "Ts")
    aux.add_classes_to_dataset(dataset, aux.ct_tissue_classes)
    after = _label(dataset, "test", "Ts")
    np.testing.assert_array_equal(after == 7, before == 3)
    np.testing.assert_array_equal(after[before != 3], before[before != 3])


def test_a_partially_labelled_case_records_that_it_now_labels_the_new_classes(dataset):
    aux.add_classes_to_dataset(dataset, aux.ct_tissue_classes)
    raw = json.loads((dataset / "dataset.json").read_text())
    assert raw["case_labels"] == {"partial": ["lesion", "lung_air", "fat", "soft_tissue", "bone"]}
    assert raw["cases_without_auxiliary"] == []
    partial = next(c for c in Dataset.load(dataset).training if c.name == "partial")
    assert "liver" not in partial.labelled and "fat" in partial.labelled


def test_running_twice_changes_nothing_more(dataset):
    aux.add_classes_to_dataset(dataset, aux.ct_tissue_classes)
    first = _label(dataset, "full"), (dataset / "dataset.json").read_text()
    update = aux.add_classes_to_dataset(dataset, aux.ct_tissue_classes)
    assert update.added == []
    np.testing.assert_array_equal(_label(dataset, "full"), first[0])
    assert (dataset / "dataset.json").read_text() == first[1]


def test_a_bad_case_leaves_the_dataset_untouched(dataset):
    bad = sitk.ReadImage(str(dataset / "labelsTr" / "partial.nii.gz"))
    bad_array = sitk.GetArrayFromImage(bad)
    bad_array[0, 0, 0] = 9
    broken = sitk.GetImageFromArray(bad_array)
    broken.CopyInformation(bad)
    sitk.WriteImage(broken, str(dataset / "labelsTr" / "partial.nii.gz"))
    before = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    with pytest.raises(LabelError, match="label value 9 in .*partial.nii.gz"):
        aux.add_classes_to_dataset(dataset, aux.ct_tissue_classes)
    after = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    assert after == before  # no label rewritten, no dataset.json change, no temporary files left
