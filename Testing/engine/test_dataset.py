"""Dataset folders: nnU-Net v2 layout, BackSplit's keys, seeded validation split, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest

from BackSplitLib.dataset import Dataset
from BackSplitLib.errors import DatasetError


@pytest.fixture()
def dataset_copy(phantom_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(phantom_dataset, root)
    return root


def _edit(root, **changes):
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
    (root / "dataset.json").write_text(json.dumps(meta))


def test_cases_labels_and_test_images_are_found(phantom_dataset):
    dataset = Dataset.load(phantom_dataset)
    assert len(dataset.training) == 5 and len(dataset.test) == 2
    assert all(c.label.name == f"{c.name}.nii.gz" for c in dataset.training)
    assert dataset.normalization == "CT"
    assert all(c.labelled == frozenset(dataset.schema.class_names) for c in dataset.training)


def test_seeded_split_is_reproducible_and_disjoint(phantom_dataset):
    dataset = Dataset.load(phantom_dataset)
    train_a, val_a = dataset.split(0.4, seed=1)
    train_b, val_b = dataset.split(0.4, seed=1)
    assert [c.name for c in val_a] == [c.name for c in val_b] and len(val_a) == 2
    assert not {c.name for c in train_a} & {c.name for c in val_a}


def test_validation_list_wins_over_the_fraction(dataset_copy):
    names = [c.name for c in Dataset.load(dataset_copy).training]
    _edit(dataset_copy, validation=[names[3]])
    train, val = Dataset.load(dataset_copy).split(0.5)
    assert [c.name for c in val] == [names[3]] and len(train) == 4


def test_partial_labelling_keys(dataset_copy):
    names = [c.name for c in Dataset.load(dataset_copy).training]
    _edit(dataset_copy, cases_without_auxiliary=[names[0]], case_labels={names[1]: ["liver"]})
    cases = {c.name: c for c in Dataset.load(dataset_copy).training}
    assert cases[names[0]].labelled == {"background", "lesion"}
    assert cases[names[1]].labelled == {"background", "lesion", "liver"}


def test_plain_binary_nnunet_dataset_gets_its_one_class_as_target(dataset_copy):
    _edit(dataset_copy, labels={"background": 0, "tumour": 1}, target=None)
    assert Dataset.load(dataset_copy).schema.target == "tumour"


@pytest.mark.parametrize("changes, fragment", [
    ({"case_labels": {"phantom_000": ["pancreas"]}}, "unknown classes ['pancreas']"),
    ({"validation": ["nobody"]}, "validation cases ['nobody']"),
    ({"target": "tumour"}, "target class 'tumour'"),
    ({"channel_names": {"0": "CT", "1": "PET"}}, "one input channel"),
])
def test_inconsistent_dataset_json_is_refused(dataset_copy, changes, fragment):
    _edit(dataset_copy, **changes)
    with pytest.raises(DatasetError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        Dataset.load(dataset_copy)


def test_missing_or_broken_dataset_json(tmp_path):
    with pytest.raises(DatasetError, match="has no dataset.json"):
        (tmp_path / "d").mkdir()
        Dataset.load(tmp_path / "d")
    (tmp_path / "d" / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        Dataset.load(tmp_path / "d")
