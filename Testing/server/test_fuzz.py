"""Issue 9, property-based: random schema JSON and random multipart uploads (headers, field names, file
names, sizes, truncations) never get a 5xx, nothing is stored when refused, and the server stays healthy.
Example counts are bounded so the module fits the suite's time (each example is one real HTTP request)."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server_harness import multipart, stored

FUZZ = settings(max_examples=15, database=None, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)
names = st.text(st.characters(codec="utf-8"), min_size=0, max_size=12)
schemas = st.one_of(
    json_values,
    st.fixed_dictionaries({"labels": st.dictionaries(names, st.integers(-3, 300) | json_values, max_size=6),
                           "target": names | json_values},
                          optional={"colors": st.dictionaries(names, st.lists(st.integers(-5, 300), max_size=4)
                                                              | json_values, max_size=3)}),
)


@pytest.fixture(scope="module")
def case_bytes(phantom_cases) -> tuple[bytes, bytes]:
    return phantom_cases[0].image.read_bytes(), phantom_cases[0].label.read_bytes()


def _healthy_and_unchanged(server, before) -> None:
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    assert stored(server) == before


@FUZZ
@given(schema=schemas, raw=st.booleans())
def test_random_schemas_never_get_a_5xx(server, case_bytes, schema, raw):
    text = json.dumps(schema) if not raw else json.dumps(schema)[:-1]  # sometimes cut short
    image, label = case_bytes
    before = stored(server)
    body, headers = multipart([(b"image", b"case_0000.nii.gz", image), (b"label", b"case.nii.gz", label),
                               (b"schema", None, text.encode())])
    with server.http() as http:
        response = http.post("/cases", content=body, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code == 201:  # a valid schema by chance: remove the case again
        with server.http() as http:
            http.delete(f"/cases/{response.json()['id']}")
    else:
        assert isinstance(response.json()["detail"], str)
    _healthy_and_unchanged(server, before)


field_names = st.sampled_from([b"image", b"label", b"schema", b"modality", b"allow_empty_target", b"x"]) | st.binary(max_size=8)
file_names = st.sampled_from([b"a.nii.gz", b"a.nii", b"a.nrrd", b"a.mha", b"a.txt", b"", b"a\x00.nii"]) | st.binary(max_size=20)


@FUZZ
@given(parts=st.lists(st.tuples(field_names, st.none() | file_names, st.sampled_from(["image", "label", "junk"]),
                                st.floats(0, 1)), max_size=5),
       content_type=st.sampled_from(["multipart", "json", "garbage"]))
def test_random_multipart_uploads_never_get_a_5xx(server, case_bytes, parts, content_type):
    image, label = case_bytes
    contents = {"image": image, "label": label, "junk": b"\x1f\x8b" + bytes(64)}
    before = stored(server)
    body, headers = multipart([(name, filename, contents[which][: int(len(contents[which]) * keep)])
                               for name, filename, which, keep in parts])
    if content_type == "json":
        headers = {"Content-Type": "application/json"}
    elif content_type == "garbage":
        headers = {"Content-Type": "multipart/form-data; boundary=\x7f"}
    with server.http() as http:
        response = http.post("/cases", content=body, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code == 201:
        with server.http() as http:
            http.delete(f"/cases/{response.json()['id']}")
    else:
        _healthy_and_unchanged(server, before)
