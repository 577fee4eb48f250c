"""Issue 9, arbitrary file read: an uploaded header that points at another file is refused (415) from its
content, whatever its name, before ITK opens it; nothing is stored and no server bytes come back."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.bench.hostile import metaimage
from BackSplitLib.image_files import UnsupportedImageFile, check_self_contained
from BackSplitLib.io import read_received_image
from server_harness import case_form, stored, wait_for

SECRET = "/etc/passwd"


def _mha(element_type: str, data_file: str) -> bytes:
    return metaimage(element_type, data_file)


def _nrrd(key: str) -> bytes:
    return f"NRRD0004\ntype: float\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n{key}: {SECRET}\n\n".encode()


DETACHED = {
    "mha label backed by /etc/passwd": ("l.mha", _mha("MET_ULONG_LONG", SECRET)),
    "mha image backed by /dev/zero": ("i.mha", _mha("MET_FLOAT", "/dev/zero")),
    "mha list form": ("i.mha", _mha("MET_FLOAT", "LIST")),
    "mha pattern form": ("i.mha", _mha("MET_FLOAT", "slice%03d.raw 1 2 1")),
    "nrrd data file": ("i.nrrd", _nrrd("data file")),
    "nrrd datafile": ("i.nrrd", _nrrd("datafile")),
    "mha content named .nii.gz": ("i.nii.gz", _mha("MET_FLOAT", SECRET)),
    "nrrd content named .mha": ("i.mha", _nrrd("data file")),
    # issue 19: MetaIO skips the lower-case key and reads the later exact-case one; NrrdIO ends a line at \r
    "mha label with a lower-case LOCAL before the real key":
        ("l.mha", _mha("MET_ULONG_LONG", f"LOCAL\nHeaderSize = 0\nElementDataFile = {SECRET}")
         .replace(b"ElementDataFile = LOCAL", b"elementdatafile = LOCAL")),
    "mha image with a lower-case LOCAL before the real key":
        ("i.mha", _mha("MET_FLOAT", f"LOCAL\nElementDataFile = {SECRET}").replace(b"ElementDataFile = LOCAL",
                                                                                  b"elementdatafile = LOCAL")),
    "nrrd data file after a carriage return": ("i.nrrd", _nrrd("content: x\rdata file")),
}


@pytest.mark.parametrize("problem", sorted(DETACHED))
def test_a_header_naming_another_file_is_refused_with_415_and_nothing_is_stored(server, phantom_cases, problem,
                                                                                 tmp_path):
    name, content = DETACHED[problem]
    (tmp_path / name).write_bytes(content)
    files, data = case_form(phantom_cases[0])
    field = "label" if "label" in problem else "image"
    files[field] = (name, content)
    before = stored(server)
    with server.http() as http:
        response = http.post("/cases", files=files, data=data)
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert "root:" not in detail and SECRET not in detail and str(server.data) not in detail
    assert stored(server) == before


def test_the_passwd_label_of_the_report_no_longer_leaks_bytes(server, tmp_path):
    """The report's exact request: image backed by /dev/zero, label by /etc/passwd."""
    files = {"image": ("i.mha", _mha("MET_FLOAT", "/dev/zero")), "label": ("l.mha", _mha("MET_ULONG_LONG", SECRET))}
    data = {"schema": json.dumps({"labels": {"background": 0, "lesion": 1}, "target": "lesion"})}
    with server.http() as http:
        response = http.post("/cases", files=files, data=data)
    assert response.status_code == 415
    assert "root" not in response.text and "unknown" not in response.text


def test_predict_applies_the_same_gate(server, tmp_path):
    with server.http() as http:
        response = http.post("/predict", files={"image": ("i.mha", _mha("MET_FLOAT", SECRET))})
    assert response.status_code == 415, response.text
    assert not list((server.data / "tmp").iterdir())


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("local", ["LOCAL", "Local", "local"])
def test_local_data_is_read_with_the_metaimage_reader_whatever_the_name(tmp_path, local):
    values = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    header = f"ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_FLOAT\nElementDataFile = {local}\n"
    path = _write(tmp_path / "named.nii.gz", header.encode() + values.tobytes())  # the name says NIfTI
    received = read_received_image(path, "the image", 1 << 20)
    assert received.header.imageio == "MetaImageIO" and received.path.name == "named.mha"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(received.image), values)


def test_a_local_spelling_metaio_would_open_as_a_file_is_refused(tmp_path):
    header = "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_FLOAT\nElementDataFile = lOcAl\n"
    with pytest.raises(UnsupportedImageFile):
        check_self_contained(_write(tmp_path / "i.mha", header.encode() + bytes(32)))


def test_a_nifti_pair_header_is_refused(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.int16))
    sitk.WriteImage(image, str(tmp_path / "pair.hdr"))
    with pytest.raises(UnsupportedImageFile, match="NIfTI pair"):
        check_self_contained(tmp_path / "pair.hdr")


def test_label_errors_list_at_most_five_unknown_values(server, phantom_cases, tmp_path):
    case = phantom_cases[0]
    label = sitk.ReadImage(str(case.label))
    values = sitk.GetArrayFromImage(label).astype(np.uint16)
    values[0, 0, :20] = np.arange(100, 120)
    changed = sitk.GetImageFromArray(values)
    changed.CopyInformation(label)
    sitk.WriteImage(changed, str(tmp_path / "many.nii.gz"))
    files, data = case_form(case, label=tmp_path / "many.nii.gz")
    with server.http() as http:
        response = http.post("/cases", files=files, data=data)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "100, 101, 102, 103, 104 and 15 more" in detail and "105" not in detail


def test_the_worker_rechecks_cases_stored_before_the_gate(server, phantom_cases):
    """A case that reached the store before the fix (written here behind the API's back) fails its job
    with a sentence instead of being read."""
    with server.http() as http:
        case = http.post("/cases", files=case_form(phantom_cases[0])[0], data=case_form(phantom_cases[0])[1]).json()
        folder = server.data / "cases" / case["id"]
        (folder / case_file(folder, "label")).write_bytes(_mha("MET_ULONG_LONG", SECRET))
        job = http.post("/jobs", json={"kind": "train", "cases": [case["id"]], "iterations": 1}).json()
        ended = wait_for(lambda: _ended(http, job["id"]), timeout=120, what="the job to fail")
        http.delete(f"/cases/{case['id']}")
    assert ended["state"] == "failed"
    assert "another file" in ended["error"] and "root" not in ended["error"]
    assert str(server.data) not in ended["error"]


def case_file(folder, role: str) -> str:
    return next(p.name for p in folder.iterdir() if p.name.startswith(role))


def _ended(http, job_id: str):
    job = http.get(f"/jobs/{job_id}").json()
    if job["state"] in ("succeeded", "failed", "cancelled"):
        return job
    time.sleep(0.2)
    return None
