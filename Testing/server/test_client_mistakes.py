"""Issue 9, 500 -> 4xx: client mistakes that used to escape as internal errors get a 4xx with one sentence;
names with control or bidi-override characters are refused; messages hold no absolute server path."""

from __future__ import annotations

import json

import pytest

from server_harness import case_form, multipart, stored


def _post_case(server, case, **change):
    files, data = case_form(case)
    files.update(change.pop("files", {}))
    data.update(change)
    with server.http() as http:
        return http.post("/cases", files=files, data=data)


def _assert_sentence(response, status_range=(400, 499)):
    assert status_range[0] <= response.status_code <= status_range[1], response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and 10 < len(detail) < 600 and "\n" not in detail
    return detail


def test_a_schema_nested_100k_deep_is_a_400(server, phantom_cases):
    before = stored(server)
    detail = _assert_sentence(_post_case(server, phantom_cases[0], schema="[" * 100_000 + "]" * 100_000))
    assert "nested too deeply" in detail
    assert stored(server) == before


def test_a_job_body_nested_100k_deep_is_a_4xx(server):
    with server.http() as http:
        response = http.post("/jobs", content="[" * 100_000 + "]" * 100_000,
                             headers={"Content-Type": "application/json"})
    _assert_sentence(response)


@pytest.mark.parametrize("colors", [{"lesion": "red"}, {"lesion": [1, 2]}, {"lesion": [1, 2, "x"]}, "blue", [1]])
def test_bad_colors_are_a_400(server, phantom_cases, colors):
    schema = {**phantom_cases[0].schema.to_dict(), "colors": colors}
    before = stored(server)
    _assert_sentence(_post_case(server, phantom_cases[0], schema=json.dumps(schema)))
    assert stored(server) == before


@pytest.mark.parametrize("filename", ["a\x00b.nii.gz", "x" * 250 + ".nii.gz", "scan\u202egpj.nii.gz",
                                      "tab\tname.nii.gz"], ids=["NUL", "250 characters", "bidi override", "tab"])
def test_bad_filenames_for_predict_are_refused_with_a_sentence(server, phantom_cases, filename):
    body, headers = multipart([(b"image", filename.encode(), phantom_cases[0].image.read_bytes())])
    with server.http() as http:
        response = http.post("/predict", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert "rename it" in response.json()["detail"] or "shorter name" in response.json()["detail"]
    assert not list((server.data / "tmp").iterdir())


@pytest.mark.parametrize("where", ["case file name", "class name", "target name", "modality"])
@pytest.mark.parametrize("character", ["\x00", "\u202e", "\u2066", "\x1b"], ids=["NUL", "RLO", "LRI", "ESC"])
def test_control_and_bidi_characters_in_names_are_refused(server, phantom_cases, where, character):
    case = phantom_cases[0]
    schema = case.schema.to_dict()
    image_name, modality = case.image.name, "CT"
    if where == "case file name":
        image_name = f"pat{character}ient.nii.gz"
    elif where == "modality":
        modality = f"C{character}T"
    elif where == "class name":
        schema["labels"] = {**schema["labels"], f"liv{character}er": len(schema["labels"])}
    else:
        value = schema["labels"].pop(schema["target"])
        schema["target"] = f"les{character}ion"
        schema["labels"][schema["target"]] = value
    body, headers = multipart([(b"image", image_name.encode(), case.image.read_bytes()),
                               (b"label", case.label.name.encode(), case.label.read_bytes()),
                               (b"schema", None, json.dumps(schema).encode()), (b"modality", None, modality.encode())])
    before = stored(server)
    with server.http() as http:
        response = http.post("/cases", content=body, headers=headers)
    assert response.status_code == 422, response.text
    detail = _assert_sentence(response)
    assert character not in detail and "control or bidirectional-override" in detail
    assert stored(server) == before


def test_messages_about_uploaded_models_name_no_server_path(server, tmp_path):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("model.json", json.dumps({"format_version": 1, "schema": {"labels": {"background": 0, "x": 1},
                                                                              "target": "x"},
                                              "arch": {"name": "unet", "params": {}},
                                              "preprocessing": {"spacing": [1, 1, 1], "patch_size": [32, 32, 32]}}))
    with server.http() as http:
        response = http.post("/models", files={"file": ("m.zip", buffer.getvalue())})
    detail = _assert_sentence(response)
    assert "/" + server.data.name not in detail and str(server.data.parent) not in detail
    assert "has no weights" in detail
