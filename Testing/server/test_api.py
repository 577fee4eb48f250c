"""The API over real HTTP: auth, validation of every bad input (4xx, string detail, nothing stored),
concurrent uploads, error bodies."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.client import BackSplitClient, BackSplitClientError

from server_harness import SHAPE
from server_harness import case_form as _files
from server_harness import stored as _stored


def test_health_needs_no_token_and_reports_the_contract_keys(server):
    body = httpx.get(f"{server.url}/health").json()
    assert {"status", "version", "device", "queue_length"} <= set(body)
    assert body["status"] == "ok" and body["auth"] is True


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic abc"}],
                         ids=["no token", "wrong token", "not bearer"])
def test_requests_without_the_right_token_get_401(server, headers):
    for method, path in (("GET", "/cases"), ("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/models")):
        response = httpx.request(method, f"{server.url}{path}", headers=headers)
        assert response.status_code == 401, (method, path)
        assert isinstance(response.json()["detail"], str)


def test_token_file_is_private(server):
    assert server.token_file.stat().st_mode & 0o777 == 0o600


def _write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path), True)
    return path


@pytest.fixture(scope="module")
def bad_inputs(phantom_cases, tmp_path_factory):
    """(image, label, schema) triples, each broken in one way, with the status it must get."""
    folder = tmp_path_factory.mktemp("bad")
    case = phantom_cases[0]
    image = sitk.ReadImage(str(case.image))
    label = sitk.ReadImage(str(case.label))

    nan = sitk.GetArrayFromImage(image)
    nan[3, 4, 5] = np.nan
    nan_image = sitk.GetImageFromArray(nan)
    nan_image.CopyInformation(image)

    flat = sitk.GetImageFromArray(np.zeros((40, 48), np.float32))
    moved = sitk.Image(label)
    moved.SetSpacing([s * 2 for s in label.GetSpacing()])
    unknown = sitk.GetArrayFromImage(label)
    unknown[0, 0, 0] = 99
    unknown_label = sitk.GetImageFromArray(unknown)
    unknown_label.CopyInformation(label)
    empty = sitk.GetArrayFromImage(label)
    empty[empty == case.schema.target_value] = 0
    empty_label = sitk.GetImageFromArray(empty)
    empty_label.CopyInformation(label)
    text = folder / "notes.txt"
    text.write_text("not an image")
    garbage = folder / "garbage.nii.gz"
    garbage.write_bytes(b"\x1f\x8b not really gzip")
    big = folder / "big_0000.nii"
    big.write_bytes(bytes(25 << 20))
    return {
        "nan image": (400, dict(image=_write(nan_image, folder / "nan_0000.nii.gz"))),
        "2D image": (400, dict(image=_write(flat, folder / "flat_0000.nii.gz"))),
        "wrong file type": (415, dict(image=text)),
        "unreadable image": (400, dict(image=garbage)),
        "geometry mismatch": (400, dict(label=_write(moved, folder / "moved.nii.gz"))),
        "unknown label value": (400, dict(label=_write(unknown_label, folder / "unknown.nii.gz"))),
        "empty target": (400, dict(label=_write(empty_label, folder / "empty.nii.gz"))),
        "bad schema JSON": (400, dict(schema='{"labels": {"background": 0, "lesion": 1}, "target": ')),
        "schema without target": (400, dict(schema='{"labels": {"background": 0, "lesion": 1}}')),
        "oversized upload": (413, dict(image=big)),
    }


BAD = ["nan image", "2D image", "wrong file type", "unreadable image", "geometry mismatch", "unknown label value",
       "empty target", "bad schema JSON", "schema without target", "oversized upload"]


@pytest.mark.parametrize("problem", BAD)
def test_each_bad_case_gets_its_4xx_with_a_sentence_and_nothing_is_stored(server, phantom_cases, bad_inputs, problem):
    status, broken = bad_inputs[problem]
    before = _stored(server)
    files, data = _files(phantom_cases[0], **broken)
    with server.http() as http:
        response = http.post("/cases", files=files, data=data)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and 10 < len(detail) < 600 and "\n" not in detail
    assert str(server.data) not in detail  # errors name the client's file, not server paths
    assert _stored(server) == before


def test_the_client_raises_the_servers_detail(server, phantom_cases, bad_inputs):
    client = BackSplitClient(server.url, server.token)
    with pytest.raises(BackSplitClientError) as error:
        client.upload_case(phantom_cases[0].image, bad_inputs["geometry mismatch"][1]["label"],
                           phantom_cases[0].schema)
    assert error.value.status == 400 and "does not match" in error.value.detail


def test_oversized_upload_is_refused_even_without_content_length(server, bad_inputs, phantom_cases):
    big = bad_inputs["oversized upload"][1]["image"]

    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.nii\"\r\n\r\n"
        with open(big, "rb") as f:
            while chunk := f.read(1 << 16):
                yield chunk
        yield b"\r\n--b--\r\n"

    before = _stored(server)
    with server.http() as http:
        response = http.post("/cases", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    assert _stored(server) == before


def test_allow_empty_target_accepts_a_case_without_lesion(server, phantom_cases, bad_inputs):
    client = server.client()
    case = client.upload_case(phantom_cases[0].image, bad_inputs["empty target"][1]["label"], phantom_cases[0].schema,
                              allow_empty_target=True)
    assert case["target_voxels"] == 0 and "lesion" not in case["classes"]
    client.delete_case(case["id"])
    with pytest.raises(BackSplitClientError) as error:
        client.get_case(case["id"])
    assert error.value.status == 404


def test_four_clients_uploading_at_once_store_every_case_with_unique_ids(server, phantom_cases):
    client = server.client()
    before = {c["id"] for c in client.list_cases()}
    jobs = [phantom_cases[i % len(phantom_cases)] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        cases = list(pool.map(lambda c: server.client().upload_case(c.image, c.label, c.schema), jobs))
    ids = [c["id"] for c in cases]
    assert len(set(ids)) == 4
    after = {c["id"] for c in client.list_cases()}
    assert after - before == set(ids)
    for case, files in zip(cases, jobs):
        assert case["size"] == list(SHAPE[::-1])
        assert case["schema"]["labels"] == dict(files.schema.labels)
    for case_id in ids:
        client.delete_case(case_id)


@pytest.mark.parametrize("body, status, words", [
    ({"kind": "train", "iterations": 0}, 422, "iterations"),
    ({"kind": "retrain"}, 422, "kind"),
    ({"kind": "train", "iterashuns": 5}, 422, "unknown field"),
    ({"kind": "train", "cases": ["no-such-case"]}, 422, "does not exist"),
    ({"kind": "train", "base_model": "x"}, 422, "finetune"),
    ({"kind": "finetune", "base_model": "no-such-model"}, 422, "does not exist"),
])
def test_bad_job_requests_get_4xx_with_a_sentence(server, body, status, words):
    with server.http() as http:
        response = http.post("/jobs", json=body)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str) and words in response.json()["detail"]


def test_malformed_json_and_unknown_ids_are_4xx_with_string_detail(server):
    with server.http() as http:
        bad_json = http.post("/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
        missing = [http.get("/jobs/nope"), http.get("/models/nope"), http.delete("/cases/nope"),
                   http.get("/jobs/nope/events"), http.post("/models/nope/promote")]
        no_route = http.get("/nowhere")
    assert bad_json.status_code == 422 and isinstance(bad_json.json()["detail"], str)
    assert [r.status_code for r in missing] == [404] * 5
    assert all(isinstance(r.json()["detail"], str) for r in missing)
    assert no_route.status_code == 404 and isinstance(no_route.json()["detail"], str)


def test_uploading_a_zip_that_is_not_a_run_is_refused(server, tmp_path):
    import zipfile

    archive = tmp_path / "notarun.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with server.http() as http:
        response = http.post("/models", files={"file": ("notarun.zip", archive.read_bytes())})
        unsafe = tmp_path / "unsafe.zip"
        with zipfile.ZipFile(unsafe, "w") as zf:
            zf.writestr("../../evil/model.json", "{}")
        response2 = http.post("/models", files={"file": ("unsafe.zip", unsafe.read_bytes())})
        models = http.get("/models").json()
    assert response.status_code == 400 and "model.json" in response.json()["detail"]
    assert response2.status_code == 400 and "unsafe" in response2.json()["detail"]
    assert not list((server.data / "tmp").iterdir())
    assert all(m["source"] != "upload" for m in models)


def test_openapi_docs_describe_the_endpoints(server):
    with server.http() as http:  # the API description needs the token too (issue 19)
        spec = http.get("/openapi.json").json()
    assert {"/health", "/cases", "/jobs", "/jobs/{job_id}/events", "/models", "/predict"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/cases"]["post"]["requestBody"]["content"]
