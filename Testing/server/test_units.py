"""Server pieces without a server: sizes, loopback rule, token file, SSE parsing, multipart length, and the
dataset a job builds from cases with different schemas."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.client import _Multipart, _parse_sse
from BackSplitLib.dataset import Dataset
from BackSplitLib.errors import BackSplitError
from BackSplitLib.phantom import PHANTOM_SCHEMA
from BackSplitLib.server.serve import is_loopback, load_or_create_token
from BackSplitLib.server.store import Store
from BackSplitLib.server.uploads import FilePart, parse_size, validate_case
from BackSplitLib.server.worker import build_dataset


@pytest.mark.parametrize("text, size", [("1G", 1 << 30), ("500M", 500 << 20), ("64k", 64 << 10), ("2MiB", 2 << 20),
                                        ("1048576", 1 << 20)])
def test_sizes_read_with_binary_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-1M", "0"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(BackSplitError):
        parse_size(text)


def test_only_loopback_hosts_count_as_local():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "gpu-box"))


def test_token_file_is_created_private_and_read_back(tmp_path):
    path = tmp_path / "secrets" / "token"
    token, created = load_or_create_token(path)
    assert created and len(token) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_token(path) == (token, False)


def test_sse_parser_reads_events_and_skips_keepalives():
    stream = [b": keep-alive\n", b"\n", b"event: state\n", b'data: {"state": "running"}\n', b"\n",
              b"event: progress\r\n", b'data: {"iteration": 3}\r\n', b"\r\n"]
    assert list(_parse_sse(stream)) == [("state", {"state": "running"}), ("progress", {"iteration": 3})]


def test_multipart_length_is_exactly_what_is_sent(tmp_path):
    file = tmp_path / 'odd "name".nii.gz'
    file.write_bytes(bytes(range(256)) * 1000)
    body = _Multipart({"schema": '{"é": 1}', "flag": "true"}, {"image": file})
    assert len(body) == sum(len(c) for c in body.chunks())


def _store_case(store: Store, case, tmp_path) -> str:
    staged = store.staging_dir()
    image = FilePart(staged / f"image{'.nrrd' if case.image.suffix == '.nrrd' else '.nii.gz'}", case.image.name)
    label = FilePart(staged / f"label{'.nrrd' if case.label.suffix == '.nrrd' else '.nii.gz'}", case.label.name)
    shutil.copy(case.image, image.path)
    shutil.copy(case.label, label.path)
    record = validate_case(image, label, json.dumps(case.schema.to_dict()), False)
    return store.add_case(staged, {**record, "modality": "CT", "image_file": image.path.name,
                                   "label_file": label.path.name})["id"]


def test_job_dataset_unions_schemas_by_name_and_marks_partial_cases(phantom_cases, tmp_path):
    store = Store(tmp_path / "data")
    ids = [_store_case(store, case, tmp_path) for case in phantom_cases]
    root = build_dataset(store, ids, tmp_path / "dataset")
    ds = Dataset.load(root)
    assert dict(ds.schema.labels) == dict(PHANTOM_SCHEMA.labels)
    labelled = {c.name: c.labelled for c in ds.training}
    assert labelled[ids[0]] == frozenset(PHANTOM_SCHEMA.class_names)
    assert labelled[ids[1]] == {"background", "lesion"}
    assert labelled[ids[2]] == {"background", "liver", "lesion"}
    for case_id, files in zip(ids, phantom_cases):  # every voxel keeps its class *name*
        original = sitk.GetArrayFromImage(sitk.ReadImage(str(files.label)))
        remapped = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / f"{case_id}.nii.gz")))
        names = {v: k for k, v in files.schema.labels.items()}
        expected = np.vectorize(lambda v: PHANTOM_SCHEMA.labels[names[int(v)]])(original)
        np.testing.assert_array_equal(remapped, expected)


def test_without_a_current_model_the_404_says_which_model_was_kept_and_not_promoted(tmp_path):
    from BackSplitLib.server.store import NotFound

    store = Store(tmp_path / "data")
    with pytest.raises(NotFound, match="no current model yet; train one"):
        store.get_model("current")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text("{}")
    model = store.register_model(run, schema={}, metrics={"best_val_dice": 0.0}, parent=None, case_ids=[],
                                 source="finetune", promote=False, first_becomes_current=False)
    with pytest.raises(NotFound) as refused:
        store.get_model("current")
    text = str(refused.value)
    assert f"model {model['id']} was kept but not promoted" in text and "Dice was 0.00" in text
    assert f"/models/{model['id']}/promote" in text
