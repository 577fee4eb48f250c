"""One write-then-rename helper and one relabel-and-write path, used by every layer."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.atomic import atomic_file, staged_folder, write_json_atomic, write_text_atomic
from BackSplitLib.errors import LabelError
from BackSplitLib.io import write_label
from BackSplitLib.schema import LabelSchema


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_written_files_are_private_from_the_first_byte(tmp_path):
    """The server's token goes through this helper: the file is never readable by others."""
    path = write_text_atomic(tmp_path / "sub" / "token", "secret\n")
    assert path.read_text() == "secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_staged_folder_leaves_nothing(tmp_path):
    with pytest.raises(KeyError), staged_folder(tmp_path / "dataset") as work:
        (work / "imagesTr").mkdir()
        raise KeyError("case")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("classes", "dtype"), [(3, np.uint8), (255, np.uint8), (300, np.uint16)])
def test_label_maps_are_written_in_the_smallest_type_of_their_schema(tmp_path, classes, dtype):
    schema = LabelSchema.from_names("lesion", [f"organ{i}" for i in range(classes - 1)])
    like = sitk.Image([4, 3, 2], sitk.sitkFloat32)
    like.SetSpacing((0.5, 0.7, 2.0))
    values = np.full((2, 3, 4), schema.target_value, dtype=np.int64)
    path = write_label(values, like, tmp_path / "label.nrrd", schema)
    back = sitk.ReadImage(str(path))
    assert sitk.GetArrayFromImage(back).dtype == dtype and back.GetSpacing() == like.GetSpacing()
    assert int(sitk.GetArrayFromImage(back).max()) == schema.target_value


def test_relabel_maps_values_by_class_name():
    full = LabelSchema.from_names("lesion", ["liver", "kidney"])
    sub = LabelSchema.from_names("lesion", ["kidney"])
    label = np.array([full.labels[n] for n in ("background", "liver", "kidney", "lesion")])
    assert sub.relabel(label, full, drop_missing=True).tolist() == [0, 0, sub.labels["kidney"], sub.target_value]
    with pytest.raises(LabelError, match="liver"):
        sub.relabel(label, full)
    assert full.relabel(sub.relabel(label, full, drop_missing=True), sub).tolist() == [0, 0, 2, 3]
