"""`GET /cases/{id}/image` and `/label` (what the browser app's case picker uses), through real HTTP."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from server_harness import write_case


@pytest.fixture(scope="module")
def stored_case(backsplit_server, tmp_path_factory):
    files = write_case(tmp_path_factory.mktemp("case-files"), seed=11)
    case = backsplit_server.client().upload_case(files.image, files.label, files.schema)
    return case, files


def test_a_stored_case_downloads_as_its_image_and_label(backsplit_server, stored_case, tmp_path):
    case, files = stored_case
    image, label = backsplit_server.client().download_case(case["id"], tmp_path)
    for got, sent in ((image, files.image), (label, files.label)):
        a, b = sitk.ReadImage(str(got)), sitk.ReadImage(str(sent))
        assert a.GetSize() == b.GetSize() and a.GetSpacing() == pytest.approx(b.GetSpacing())
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
    assert image.name.startswith(case["id"]) and "/" not in image.name


def test_case_files_need_the_token(backsplit_server, stored_case):
    case, _ = stored_case
    for which in ("image", "label"):
        assert httpx.get(f"{backsplit_server.url}/cases/{case['id']}/{which}").status_code == 401


def test_an_unknown_case_is_404_without_a_path(backsplit_server):
    with backsplit_server.http() as http:
        response = http.get("/cases/doesnotexist/image")
    assert response.status_code == 404
    assert "/" not in response.json()["detail"].replace("/cases", "")
