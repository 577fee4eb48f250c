"""Issue 9, model uploads: a model is stored only when its network is small enough (counted on the meta
device), its weights load and it runs once on a small CPU cube; otherwise 422 and nothing is stored (and
nothing promoted). Odd zips get a 4xx, never a 500."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from BackSplitLib.bench.cost import _preprocessing, make_run
from BackSplitLib.phantom import PHANTOM_SCHEMA
from BackSplitLib.run_folder import MODEL_JSON, pack_run


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "run", "unet", PHANTOM_SCHEMA, _preprocessing((1, 1, 1), (32, 32, 32)))


def _variant(good_run: Path, folder: Path, meta_change: dict | None = None, weights: bytes | None = None) -> Path:
    """A copy of the good run as a zip, with model.json entries or the weights replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = json.loads((good_run / MODEL_JSON).read_text())
    meta.update(meta_change or {})
    (folder / MODEL_JSON).write_text(json.dumps(meta))
    (folder / "model.safetensors").write_bytes(weights if weights is not None else
                                                (good_run / "model.safetensors").read_bytes())
    return pack_run(folder, folder.with_suffix(".zip"))


def _upload(server, archive: Path | bytes, promote: bool = True):
    content = archive if isinstance(archive, bytes) else archive.read_bytes()
    with server.http() as http:
        before = http.get("/models").json()
        response = http.post("/models", files={"file": ("upload.zip", content)},
                             data={"promote": "true" if promote else "false"})
        after = http.get("/models").json()
    return response, before, after


def test_a_good_model_is_stored_and_promoted(strict_server, good_run):
    response, before, after = _upload(strict_server, pack_run(good_run, good_run.with_suffix(".zip")))
    assert response.status_code == 201, response.text
    assert len(after) == len(before) + 1 and response.json()["current"]


BROKEN = {
    "garbage weights": dict(weights=b"\0" * 4096),
    "weights of another network": dict(meta_change={"arch": {"name": "segresnet", "params": {}}}),
    "2048/4096 channels": dict(meta_change={"arch": {"name": "unet", "params": {"channels": [2048, 4096, 64, 128]}}}),
    "unknown architecture": dict(meta_change={"arch": {"name": "transformer9000", "params": {}}}),
    "parameters MONAI rejects": dict(meta_change={"arch": {"name": "unet", "params": {"strides": "two"}}}),
    "string format_version": dict(meta_change={"format_version": "1"}),
    "schema that is not a schema": dict(meta_change={"schema": {"labels": "many"}}),
    # issue 19: preprocessing that would make /predict allocate without bound
    "spacing 0.01 mm (85 TB at prediction)": dict(meta_change={"preprocessing": _preprocessing((0.01,) * 3, (32,) * 3)}),
    "spacing NaN": dict(meta_change={"preprocessing": _preprocessing((float("nan"), 1, 1), (32,) * 3)}),
    "spacing 0": dict(meta_change={"preprocessing": _preprocessing((0, 1, 1), (32,) * 3)}),
    "patch 4096": dict(meta_change={"preprocessing": _preprocessing((1, 1, 1), (4096, 32, 32))}),
}


@pytest.mark.parametrize("problem", list(BROKEN))
def test_a_model_that_cannot_be_used_gets_422_and_nothing_is_stored_or_promoted(strict_server, good_run, tmp_path,
                                                                                 problem):
    response, before, after = _upload(strict_server, _variant(good_run, tmp_path / "bad", **BROKEN[problem]))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert str(strict_server.data) not in detail and str(tmp_path) not in detail
    assert after == before
    assert not list((strict_server.data / "tmp").iterdir())


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buffer.getvalue()


def _with_bad_crc(good_run: Path) -> bytes:
    data = bytearray(_zip([(MODEL_JSON, (good_run / MODEL_JSON).read_bytes()), ("w.bin", b"A" * 1000)]))
    data[data.index(b"A" * 1000) + 10] ^= 0xFF
    return bytes(data)


ODD_ZIPS = {
    "a file and a folder of one name": lambda run: _zip([(MODEL_JSON, b"{}"), ("x", b"1"), ("x/y", b"2")]),
    "a '.' member": lambda run: _zip([(MODEL_JSON, b"{}"), ("./model.safetensors", b"1")]),
    "a '..' member": lambda run: _zip([(MODEL_JSON, b"{}"), ("../escape", b"1")]),
    "a CRC error": _with_bad_crc,
    "not a zip": lambda run: b"PK\x03\x04 this is not a zip",
    "no model.json": lambda run: _zip([("readme.txt", b"hello")]),
    "model.json not JSON": lambda run: _zip([(MODEL_JSON, b"{not json"), ("model.safetensors", b"")]),
}


@pytest.mark.parametrize("oddity", list(ODD_ZIPS))
def test_zip_oddities_get_a_4xx_not_a_500(strict_server, good_run, oddity):
    response, before, after = _upload(strict_server, ODD_ZIPS[oddity](good_run))
    assert 400 <= response.status_code < 500, response.text
    assert isinstance(response.json()["detail"], str) and after == before
    assert not (strict_server.data.parent / "escape").exists()
