"""Issue 9, truncation: a file holding less voxel data than its header declares is refused with 400 "the
file is truncated (N of M bytes)", for .nii, .nii.gz, .nrrd and .mha (every pixel type: test_image_files)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from server_harness import case_form, stored

# Through HTTP: one integer and one float type per format (every pixel type x format is covered without a
# server in Testing/engine/test_image_files.py, where the gate is the same function).
PIXEL_TYPES = [np.int16, np.float32]
FORMATS = [".nii", ".nii.gz", ".nrrd", ".mha"]


def _truncated(folder, image: sitk.Image, ext: str, dtype, keep: float):
    """The image as ``dtype`` written as ``ext``, with only ``keep`` of its bytes (a gzip stream that
    ends early for .nii.gz: what a cut-short export gives)."""
    array = sitk.GetArrayFromImage(image).astype(dtype)
    cast = sitk.GetImageFromArray(array)
    cast.CopyInformation(image)
    path = folder / f"cut_{np.dtype(dtype).name}_{int(keep * 100)}_0000{ext}"
    whole = folder / f"whole{ext}"
    sitk.WriteImage(cast, str(whole), False)
    data = whole.read_bytes()
    if ext == ".nii.gz":
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        path.write_bytes(gzip.compress(raw[: max(352, int(len(raw) * keep))], 1))
    else:
        header = len(data) - array.nbytes
        path.write_bytes(data[: header + int(array.nbytes * keep)])
    return path


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("dtype", PIXEL_TYPES, ids=lambda d: np.dtype(d).name)
def test_a_truncated_image_is_refused_with_400_and_nothing_is_stored(server, phantom_cases, tmp_path, ext, dtype):
    case = phantom_cases[0]
    image = _truncated(tmp_path, sitk.ReadImage(str(case.image)), ext, dtype, 0.5)
    before = stored(server)
    files, data = case_form(case, image=image)
    with server.http() as http:
        response = http.post("/cases", files=files, data=data)
    assert response.status_code == 400, response.text
    assert "is truncated (" in response.json()["detail"] and " of " in response.json()["detail"]
    assert stored(server) == before


@pytest.mark.parametrize("ext", FORMATS)
def test_a_label_cut_to_one_percent_is_refused(server, phantom_cases, tmp_path, ext):
    case = phantom_cases[0]
    label = _truncated(tmp_path, sitk.ReadImage(str(case.label)), ext, np.uint8, 0.01)
    files, data = case_form(case, label=label)
    with server.http() as http:
        response = http.post("/cases", files=files, data=data)
    assert response.status_code == 400 and "truncated" in response.json()["detail"], response.text


def test_a_truncated_image_to_predict_is_refused(server, phantom_cases, tmp_path):
    image = _truncated(tmp_path, sitk.ReadImage(str(phantom_cases[0].image)), ".nii", np.float32, 0.5)
    with server.http() as http:
        response = http.post("/predict", files={"image": (image.name, image.read_bytes())})
    assert response.status_code == 400 and "truncated" in response.json()["detail"], response.text
