"""LabelSchema: merging with target-wins, collapsing to the lesion, JSON, and errors for people."""

import json

import numpy as np
import pytest

from BackSplitLib.errors import LabelError
from BackSplitLib.schema import LabelSchema

SCHEMA = LabelSchema({"background": 0, "kidney": 1, "liver": 2, "cyst": 3}, "cyst")


def test_merge_target_wins_over_auxiliary_and_ignore():
    kidney = np.zeros((4, 4, 4), bool)
    kidney[1:3, 1:3, 1:3] = True
    cyst = np.zeros_like(kidney)
    cyst[2, 2, 2] = True
    schema = SCHEMA.with_auxiliary([], ignore=True)
    ignore = np.zeros_like(kidney)
    ignore[2, 2, :] = True
    label = schema.merge(cyst, {"kidney": kidney}, ignore_mask=ignore)
    assert label[2, 2, 2] == 3  # the cyst inside the kidney stays lesion
    assert label[2, 2, 1] == schema.ignore_value
    assert label[1, 1, 1] == 1
    assert label[0, 0, 0] == 0


def test_merge_overlapping_auxiliary_is_independent_of_argument_order():
    a = np.zeros((3, 3, 3), bool)
    a[:2] = True
    b = np.zeros_like(a)
    b[1:] = True
    one = SCHEMA.merge(None, {"kidney": a, "liver": b})
    two = SCHEMA.merge(None, {"liver": b, "kidney": a})
    np.testing.assert_array_equal(one, two)


def test_collapse_sums_non_target_probability_instead_of_argmax():
    # liver 0.3, kidney 0.3, background 0.0, cyst 0.4: argmax says cyst, but 0.6 of the mass is "not lesion".
    probabilities = np.array([0.0, 0.3, 0.3, 0.4]).reshape(4, 1, 1, 1)
    assert not SCHEMA.collapse_to_target(probabilities)[0, 0, 0]
    probabilities = np.array([0.1, 0.2, 0.2, 0.5]).reshape(4, 1, 1, 1)
    assert SCHEMA.collapse_to_target(probabilities)[0, 0, 0]


def test_target_probability_normalises_by_the_total():
    probabilities = np.array([2.0, 1.0, 1.0, 4.0]).reshape(4, 1)
    assert SCHEMA.target_probability(probabilities)[0] == pytest.approx(0.5)


def test_json_round_trip_keeps_labels_target_and_colors(tmp_path):
    path = tmp_path / "schema.json"
    SCHEMA.save(path)
    loaded = LabelSchema.load(path)
    assert loaded == SCHEMA
    assert json.loads(path.read_text())["target"] == "cyst"


def test_unknown_label_value_error_names_source_value_and_known_classes():
    with pytest.raises(LabelError) as info:
        SCHEMA.check_label_values(np.array([0, 1, 7]), "labelsTr/case_003.nii.gz")
    message = str(info.value)
    assert "7" in message and "labelsTr/case_003.nii.gz" in message and "1 kidney" in message


@pytest.mark.parametrize("data, fragment", [
    ({"labels": {"background": 0, "kidney": 1}, "target": "cyst"}, "target class 'cyst'"),
    ({"labels": {"background": 0, "cyst": 2}, "target": "cyst"}, "consecutive"),
    ({"labels": {"background": 1, "cyst": 0}, "target": "cyst"}, "'background': 0"),
    ({"labels": {"background": 0, "cyst": 1, "ignore": 1}, "target": "cyst"}, "unique"),
    ({"labels": {"background": 0, "cyst": 1}}, "missing 'target'"),
    ({"labels": {"background": 0, "cyst": "one"}, "target": "cyst"}, "integer"),
])
def test_invalid_schemas_are_rejected_with_a_reason(data, fragment):
    with pytest.raises(LabelError, match=fragment):
        LabelSchema.from_dict(data)


def test_union_matches_classes_by_name_and_keeps_ignore_highest():
    other = LabelSchema({"background": 0, "spleen": 1, "liver": 2, "cyst": 3, "ignore": 4}, "cyst")
    union = SCHEMA.union(other)
    assert union.labels == {"background": 0, "kidney": 1, "liver": 2, "cyst": 3, "spleen": 4, "ignore": 5}
    table = union.lookup_from(other)
    for name, value in other.labels.items():
        assert table[value] == union.labels[name]


def test_union_refuses_different_targets():
    with pytest.raises(LabelError, match="different targets"):
        SCHEMA.union(LabelSchema.binary_schema("tumour"))


def test_binary_schema_keeps_target_and_ignore():
    schema = SCHEMA.with_auxiliary(["spleen"], ignore=True).binary()
    assert schema.labels == {"background": 0, "cyst": 1, "ignore": 2}
    assert schema.is_binary
