"""Issue 9, memory bombs: headers that declare more than --max-image-size get 413 before anything is
allocated, data that ends early gets 400, compressed data is expanded a bounded chunk at a time; the API
process's peak resident memory (the kernel's VmHWM) stays under 1 GiB above idle through all of them."""

from __future__ import annotations

import gzip
import json

import pytest

from BackSplitLib.bench.hostile import (
    compressed_metaimage, expanding_nifti, nifti_header, nrrd, zeros_member, zip_of,
)
from server_harness import STRICT_MAX_IMAGE, stored

SCHEMA = json.dumps({"labels": {"background": 0, "lesion": 1}, "target": "lesion"})


def _nrrd_gzip(sizes: str) -> bytes:
    return nrrd(f"type: uint8\ndimension: 3\nsizes: {sizes}\nencoding: gzip", zeros_member())


BOMBS = {
    # the report's 54-byte upload: 1024^3 float32 declared, nothing behind it
    "header-only 4 GiB nii.gz": (413, "b.nii.gz", gzip.compress(nifti_header((1024, 1024, 1024)))),
    "2 MB gzip expanding to 2 GiB": (413, "b.nii.gz", expanding_nifti((1024, 1024, 512), 32)),
    "data far beyond a header under the limit": (400, "b.nii.gz", expanding_nifti((256, 256, 240), 4)),
    "under the limit with the data missing": (400, "b.nii.gz", gzip.compress(nifti_header((256, 256, 240)) + bytes(4096))),
    "uncompressed nii declaring 4 GiB": (413, "b.nii", nifti_header((1024, 1024, 1024)) + bytes(1024)),
    "nrrd gzip declaring 8 GiB": (413, "b.nrrd", _nrrd_gzip("2048 2048 2048")),
    "nrrd gzip under the limit, short": (400, "b.nrrd", _nrrd_gzip("4096 4096 4")),
    "compressed mha declaring 4 GiB": (413, "b.mha", compressed_metaimage("1024 1024 1024")),
}


@pytest.fixture(scope="module")
def idle_rss(strict_server) -> int:
    """The API process's resident memory before the first bomb (KiB)."""
    with strict_server.http() as http:
        assert http.get("/health").status_code == 200
    return strict_server.memory_kib("VmRSS")


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_a_bomb_is_refused_and_nothing_is_stored(strict_server, idle_rss, bomb):
    status, name, content = BOMBS[bomb]
    assert len(content) < 3 << 20  # every bomb is small on the wire
    before = stored(strict_server)
    with strict_server.http() as http:
        response = http.post("/cases", files={"image": (name, content), "label": (name, content)},
                             data={"schema": SCHEMA})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert ("limit of 64.0 MiB" in detail) if status == 413 else ("truncated" in detail or "target" in detail)
    assert stored(strict_server) == before


def test_a_bomb_sent_for_prediction_is_refused_before_the_model_is_looked_up(strict_server):
    with strict_server.http() as http:
        response = http.post("/predict", files={"image": ("b.nii.gz", BOMBS["2 MB gzip expanding to 2 GiB"][2])})
    assert response.status_code == 413


def test_a_zip_bomb_model_upload_is_refused(strict_server):
    archive = zip_of([("model.json", b"{}"), ("model.safetensors", bytes(200 << 20))])
    assert len(archive) < 1 << 20
    with strict_server.http() as http:
        before = len(http.get("/models").json())
        response = http.post("/models", files={"file": ("bomb.zip", archive)})
        assert response.status_code == 413, response.text
        assert len(http.get("/models").json()) == before


def test_peak_memory_through_all_bombs_stays_under_one_gib_above_idle(strict_server, idle_rss):
    peak = strict_server.memory_kib("VmHWM")
    print(f"API process: idle {idle_rss / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB "
          f"(+{(peak - idle_rss) / 1024:.0f} MiB), --max-image-size {STRICT_MAX_IMAGE}")
    assert peak - idle_rss < 1 << 20
