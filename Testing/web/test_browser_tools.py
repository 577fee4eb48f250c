"""The radiologist's tools in a real browser: Chromium (Playwright) against `backsplit web` and `backsplit serve`.

Its own app and server (conftest's module fixtures), and a model trained for three iterations, which finds no
lesion: the slice views' names, edge letters and the HU under the pointer, left-drag window/level, paint on
two slices and fill between them from the panel's button, and a prediction that finds no lesion saying what
to do next. Every wait is on the app's state or the page's DOM.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk

from test_browser import axial_view, drag, facts, segments, select_segment, wait_until

pytestmark = pytest.mark.slow
AIR_SHAPE = (24, 48, 48)  # (z, y, x): small, so prediction is quick
AIR_HU = -1000  # in the middle of the volume


@pytest.fixture(scope="module")
def untrained_model(backsplit_server, tmp_path_factory) -> dict:
    """A binary model after three iterations: its lesion channel has not started, so it finds no lesion."""
    from BackSplitLib.client import BackSplitClient
    from BackSplitLib.phantom import write_phantom_dataset
    from BackSplitLib.training import TrainConfig, train

    root = tmp_path_factory.mktemp("web-tools-model")
    data = write_phantom_dataset(root / "Dataset001_Phantom", cases=2, test_cases=0, seed=5, shape=AIR_SHAPE)
    run = train(data, root / "run", TrainConfig(mode="binary", iterations=3, patch_size=(16, 32, 32), device="cpu",
                                                 seed=0, batch_size=1))
    return BackSplitClient(backsplit_server.url, backsplit_server.token).upload_model(run, promote=True)


@pytest.fixture(scope="module")
def air_volume(tmp_path_factory):
    path = tmp_path_factory.mktemp("web-air") / "air.nii.gz"
    voxels = np.full(AIR_SHAPE, AIR_HU, np.int16)
    voxels[:, :, :8] = 40  # a strip of soft tissue at the edge: a range to window, air in the middle
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="module")
def page(browser, web_app, backsplit_server, untrained_model, air_volume):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(web_app.url)
    page.fill("#bs-token", backsplit_server.token)
    page.click("#bs-sign-in")
    wait_until(lambda: facts(page)["panel"]["connection"] == "connected", 60, "the panel to connect")
    page.set_input_files("#bs-file-volume", str(air_volume))
    wait_until(lambda: facts(page)["volume"], 60, "the uploaded volume")
    yield page
    context.close()


def test_slice_views_show_their_name_edge_letters_and_the_hu_under_the_pointer(page):
    view = axial_view(page)
    view.locator(".bs-view-title", has_text="Axial").wait_for(timeout=30_000)
    letters = {edge: view.locator(f".bs-edge-{edge}").inner_text() for edge in ("left", "right", "top", "bottom")}
    assert letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    box = view.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.mouse.move(box["x"] + box["width"] * 0.52, box["y"] + box["height"] * 0.5)
    view.locator(".bs-probe", has_text=f"{AIR_HU} HU at voxel").wait_for(timeout=30_000)


def test_a_left_drag_without_a_tool_changes_window_and_level(page):
    before = facts(page)["volume"]["window_level"]
    drag(page, axial_view(page), (0.5, 0.5), (0.7, 0.6))
    wait_until(lambda: facts(page)["volume"]["window_level"] != before, 30, "a new window/level")


def test_fill_between_slices_runs_from_the_page(page):
    page.get_by_text("Add segment").first.click()
    wait_until(lambda: len(facts(page)["segments"]) == 1, 30, "the segment")
    (name,) = segments(page)
    page.locator("button:has(.mdi-brush)").last.click()
    select_segment(page, 0)
    view = axial_view(page)
    drag(page, view, (0.45, 0.45), (0.55, 0.55))
    first = wait_until(lambda: segments(page)[name]["voxels"] or None, 30, "paint on the first slice")
    box = view.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    for _ in range(4):  # four slices up, as a hand on the wheel
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(150)
    drag(page, view, (0.45, 0.45), (0.55, 0.55))
    two = wait_until(lambda: (lambda n: n if n > first else None)(segments(page)[name]["voxels"]), 30,
                     "paint on a second slice")
    page.locator("button:has(.mdi-cursor-default)").last.click()
    page.click("#bs-fill-between-slices")
    status = wait_until(lambda: (lambda t: t if t.startswith("Filled between slices") else None)(
        facts(page)["panel"]["status"]), 60, "the fill")
    assert "painted on 2 slice(s)" in status, status
    filled = int(re.search(r"now (\d+)", status).group(1))
    assert filled > 2 and segments(page)[name]["voxels"] > two


def test_a_prediction_that_finds_no_lesion_says_so_and_what_to_do(page):
    from BackSplitLib.vocabulary import NO_LESION_FOUND_HINT

    wait_until(lambda: facts(page)["panel"]["enabled"]["predict"], 30, "Predict enabled")
    page.click("#bs-predict")
    found = wait_until(lambda: facts(page)["panel"]["prediction"], 120, "the prediction")
    assert found["voxels"] == 0, "the three-iteration model found a lesion in air"
    page.locator("#bs-prediction-text", has_text="no lesion found").wait_for(timeout=30_000)
    page.locator("#bs-prediction-hint", has_text=f"What to do: {NO_LESION_FOUND_HINT}").wait_for(timeout=30_000)
