"""run_folder: the run's zip form and the prediction bundle, on real zips built here."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from BackSplitLib.errors import RunError
from BackSplitLib.run_folder import (
    MODEL_JSON, ArchiveTooLarge, pack_run, prediction_names, read_model_json, read_prediction_bundle, unpack_run,
    write_prediction_bundle,
)

META = {"format_version": 1, "schema": {"labels": {"background": 0, "lesion": 1}, "target": "lesion"},
        "arch": {"name": "unet", "params": {}}, "preprocessing": {}}


def _run(folder: Path, meta: dict = META) -> Path:
    folder.mkdir(parents=True)
    (folder / MODEL_JSON).write_text(json.dumps(meta))
    (folder / "model.safetensors").write_bytes(b"w" * 100)
    (folder / ".hidden").write_text("left out")
    return folder


def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_a_packed_run_unpacks_to_the_same_files_without_hidden_ones(tmp_path):
    archive = pack_run(_run(tmp_path / "run"), tmp_path / "run.zip")
    run = unpack_run(archive, tmp_path / "out")
    assert sorted(p.name for p in run.iterdir()) == ["model.json", "model.safetensors"]
    assert read_model_json(run) == META


def test_a_run_zipped_inside_a_folder_is_found_at_its_shallowest_model_json(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"top/model.json": json.dumps(META), "top/deeper/model.json": "{}"})
    assert unpack_run(archive, tmp_path / "out") == tmp_path / "out" / "top"


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "a/../../evil", "./model.json", "C:/evil", "a\\..\\..\\b",
                                  "a/./b"])
def test_member_names_that_could_escape_are_refused(tmp_path, name):
    archive = _zip(tmp_path / "a.zip", {"model.json": json.dumps(META), name: "x"})
    with pytest.raises(RunError, match="unsafe member name"):
        unpack_run(archive, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_a_name_that_is_both_a_file_and_a_folder_is_refused(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"model.json": json.dumps(META), "x": "file", "x/y": "inside"})
    with pytest.raises(RunError, match="both as a file and as a folder"):
        unpack_run(archive, tmp_path / "out")


def test_a_member_twice_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf, pytest.warns(UserWarning):
        zf.writestr("model.json", "{}")
        zf.writestr("model.json", "{}")
    with pytest.raises(RunError, match="twice"):
        unpack_run(tmp_path / "a.zip", tmp_path / "out")


def test_a_crc_error_is_a_run_error(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"model.json": json.dumps(META), "w.bin": b"A" * 1000})
    data = bytearray(archive.read_bytes())
    data[data.index(b"A" * 1000) + 10] ^= 0xFF  # stored uncompressed: flip one payload byte
    archive.write_bytes(bytes(data))
    with pytest.raises(RunError, match="could not be unpacked"):
        unpack_run(archive, tmp_path / "out")


def test_declared_size_over_the_limit_is_refused_before_writing(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"model.json": json.dumps(META), "w.bin": b"\0" * 50_000})
    with pytest.raises(ArchiveTooLarge):
        unpack_run(archive, tmp_path / "out", max_bytes=10_000)
    assert not (tmp_path / "out" / "w.bin").exists()


def test_not_a_zip_is_a_run_error(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(RunError, match="not a readable zip"):
        unpack_run(tmp_path / "a.zip", tmp_path / "out")


@pytest.mark.parametrize("change, message", [
    ({"format_version": "1"}, "not an integer"), ({"format_version": True}, "not an integer"),
    ({"arch": "unet"}, "not an object"), ({"arch": {"params": {}}}, "'name' string"), ({"format_version": 99}, "newer"),
])
def test_model_json_with_wrong_types_is_a_run_error(tmp_path, change, message):
    run = _run(tmp_path / "run", {**META, **change})
    with pytest.raises(RunError, match=message):
        read_model_json(run)


def test_a_bundle_names_its_members_even_when_the_image_name_contains_the_suffixes(tmp_path):
    mask_name, classes_name = prediction_names("ct_lesion_classes_study", ".nii.gz")
    (tmp_path / mask_name).write_bytes(b"mask")
    (tmp_path / classes_name).write_bytes(b"classes")
    archive = write_prediction_bundle(tmp_path / "p.zip", tmp_path / mask_name, tmp_path / classes_name,
                                      META["schema"])
    bundle = read_prediction_bundle(archive, tmp_path / "out")
    assert bundle.mask.read_bytes() == b"mask" and bundle.classes.read_bytes() == b"classes"
    assert bundle.schema == META["schema"]


def test_a_bundle_without_manifest_is_read_by_its_member_names(tmp_path):
    archive = _zip(tmp_path / "p.zip", {"ct_lesion.nrrd": b"m", "ct_classes.nrrd": b"c",
                                        "schema.json": json.dumps(META["schema"])})
    bundle = read_prediction_bundle(archive, tmp_path / "out")
    assert (bundle.mask.name, bundle.classes.name) == ("ct_lesion.nrrd", "ct_classes.nrrd")


def test_an_incomplete_bundle_is_a_run_error(tmp_path):
    archive = _zip(tmp_path / "p.zip", {"ct_lesion.nrrd": b"m"})
    with pytest.raises(RunError, match="incomplete"):
        read_prediction_bundle(archive, tmp_path / "out")
