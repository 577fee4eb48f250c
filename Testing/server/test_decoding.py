"""Issue 19, what an upload costs before it is refused: absurd geometry (NaN, 0, 1e300 spacing, NaN origin,
singular direction) is a 400 that names the part, never silently rewritten; the image's and the label's
headers are compared before either is decoded; the bytes decoded at once across requests are bounded by
--decode-budget; /predict bounds the image's size once resampled to the model's spacing (413, not a 500)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from BackSplitLib.bench.cost import _preprocessing, make_run
from BackSplitLib.bench.hostile import gzip_nifti, metaimage_volume, nifti_volume
from BackSplitLib.phantom import PHANTOM_SCHEMA
from BackSplitLib.run_folder import pack_run
from server_harness import stored

SCHEMA = json.dumps({"labels": {"background": 0, "lesion": 1}, "target": "lesion"})
NAN = float("nan")
MiB = 1 << 20

BAD_GEOMETRY = {  # file name, content, the word the 400 must name
    "NaN spacing (NIfTI pixdim)": ("g.nii", nifti_volume(pixdim=(NAN, 1, 1)), "spacing"),
    "zero spacing (NIfTI pixdim)": ("g.nii", nifti_volume(pixdim=(1, 0, 1)), "spacing"),
    "negative spacing (NIfTI pixdim)": ("g.nii", nifti_volume(pixdim=(-2, 1, 1)), "spacing"),
    "NaN origin (NIfTI qoffset)": ("g.nii", nifti_volume(qoffset=(NAN, 0, 0)), "origin"),
    "spacing 1e300 (MetaImage)": ("g.mha", metaimage_volume("ElementSpacing = 1e300 1 1"), "spacing"),
    "spacing 1e-300 (MetaImage)": ("g.mha", metaimage_volume("ElementSpacing = 1e-300 1 1"), "spacing"),
    "NaN origin (MetaImage Offset)": ("g.mha", metaimage_volume("Offset = nan 0 0"), "origin"),
    "singular direction (MetaImage)": ("g.mha", metaimage_volume("TransformMatrix = 1 0 0 1 0 0 0 0 1"), "direction"),
    "NaN direction (MetaImage)": ("g.mha", metaimage_volume("TransformMatrix = 1 0 0 0 1 0 0 0 nan"), "direction"),
}


@pytest.mark.parametrize("probe", list(BAD_GEOMETRY))
def test_absurd_geometry_is_a_400_that_names_the_part_and_nothing_is_stored(strict_server, probe):
    name, content, part = BAD_GEOMETRY[probe]
    before = stored(strict_server)
    with strict_server.http() as http:
        response = http.post("/cases", files={"image": (name, content), "label": ("l.nii", nifti_volume())},
                             data={"schema": SCHEMA})
        predicted = http.post("/predict", files={"image": (name, content)})
    assert response.status_code == 400, response.text
    assert part in response.json()["detail"] and f"image '{name}'" in response.json()["detail"]
    assert predicted.status_code == 400 and part in predicted.json()["detail"]  # before any model is looked up
    assert stored(strict_server) == before


def test_a_label_of_another_size_is_refused_before_the_image_is_decoded(strict_server):
    image = gzip_nifti((256, 256, 256))  # 64 MiB of float32 once decoded, 0.3 MB on the wire
    label = gzip_nifti((128, 128, 128), 2, 8)
    with strict_server.http() as http:
        assert http.get("/health").status_code == 200
        strict_server.reset_peak_memory()
        idle = strict_server.memory_kib("VmRSS")
        response = http.post("/cases", files={"image": ("i.nii.gz", image), "label": ("l.nii.gz", label)},
                             data={"schema": SCHEMA})
    rise_mib = (strict_server.memory_kib("VmHWM") - idle) / 1024
    assert response.status_code == 400 and "size differs" in response.json()["detail"], response.text
    assert rise_mib < 32, f"the API process grew {rise_mib:.0f} MiB for a refused pair of headers"


def test_concurrent_uploads_share_one_decode_budget(strict_server):
    """Each request needs 80 MiB decoded (a 64 MiB float32 image and a 16 MiB label); the budget (128 MiB)
    holds one at a time, so four at once cost about what one costs: they wait their turn or get 429."""
    image, label = gzip_nifti((256, 256, 256)), gzip_nifti((256, 256, 256), 2, 8)

    def upload(_=None):
        with strict_server.http() as http:
            return http.post("/cases", files={"image": ("i.nii.gz", image), "label": ("l.nii.gz", label)},
                             data={"schema": SCHEMA})

    def peak_rise_mib(send) -> tuple[float, list]:
        strict_server.reset_peak_memory()
        idle = strict_server.memory_kib("VmRSS")
        responses = send()
        return (strict_server.memory_kib("VmHWM") - idle) / 1024, responses

    one, first = peak_rise_mib(lambda: [upload()])
    with ThreadPoolExecutor(4) as pool:
        four, responses = peak_rise_mib(lambda: list(pool.map(upload, range(4))))
    statuses = [r.status_code for r in first + responses]
    print(f"one 80 MiB case: peak +{one:.0f} MiB; four at once: +{four:.0f} MiB, statuses {statuses}")
    assert set(statuses) <= {400, 429}, [r.text for r in first + responses]
    assert all("no voxels of the target" in r.json()["detail"] for r in first + responses if r.status_code == 400)
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 429)
    assert four < 1.6 * one + 32, f"four uploads at once grew the API process {four:.0f} MiB, one {one:.0f} MiB"


def test_a_case_larger_than_the_whole_budget_is_413(tmp_path):
    from BackSplitLib.server.decode_budget import DecodeBudget
    from BackSplitLib.server.uploads import UploadError

    budget = DecodeBudget(100, wait_s=0.05)
    with pytest.raises(UploadError) as too_big:
        with budget.hold(101, "this case"):
            pass
    assert too_big.value.status == 413 and "--decode-budget" in too_big.value.detail
    with budget.hold(60, "one"):
        start = time.monotonic()
        with pytest.raises(UploadError) as busy:
            with budget.hold(60, "two"):
                pass
        assert busy.value.status == 429 and time.monotonic() - start >= 0.05
    with budget.hold(100, "three"):  # released: the whole budget is free again
        pass


@pytest.fixture(scope="module")
def fine_model(strict_server, tmp_path_factory) -> str:
    """A model at 0.3 mm spacing: within the upload bounds (a 300 mm volume is 10^9 voxels)."""
    run = make_run(tmp_path_factory.mktemp("fine") / "run", "unet", PHANTOM_SCHEMA,
                   _preprocessing((0.3, 0.3, 0.3), (32, 32, 32)))
    with strict_server.http() as http:
        response = http.post("/models", files={"file": ("fine.zip", pack_run(run, run.with_suffix(".zip")).read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_predict_refuses_an_image_too_large_once_resampled_to_the_models_spacing(strict_server, fine_model):
    image = nifti_volume((128, 128, 64), pixdim=(1.0, 1.0, 2.0))  # 1 MiB; 310 MB of float32 at 0.3 mm
    with strict_server.http() as http:
        response = http.post("/predict", files={"image": ("big.nii", image)}, data={"model": fine_model})
    assert response.status_code == 413, response.text
    assert "resampled to the model's spacing" in response.json()["detail"]


def test_predict_at_the_models_spacing_within_the_limit_still_works(strict_server, fine_model):
    image = nifti_volume((16, 16, 16), pixdim=(0.3, 0.3, 0.3), datatype=4, bitpix=16)
    response = httpx.post(f"{strict_server.url}/predict", files={"image": ("small.nii", image)},
                          data={"model": fine_model}, timeout=120,
                          headers={"Authorization": f"Bearer {strict_server.token}"})
    assert response.status_code == 200, response.text
