"""Lesion-wise evaluation: Dice, 26-connected detection counts and HD95, checked against hand-built masks
and an independent brute-force computation; folder evaluation on tiny real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.dataset import write_dataset_json
from BackSplitLib.errors import DatasetError, GeometryError, LabelError
from BackSplitLib.metrics import evaluate_case, evaluate_folder, write_evaluation
from BackSplitLib.schema import LabelSchema

SHAPE = (12, 14, 16)


def box(shape=SHAPE, *boxes) -> np.ndarray:
    """Boolean mask with each (z0, z1, y0, y1, x0, x1) box set."""
    mask = np.zeros(shape, dtype=bool)
    for z0, z1, y0, y1, x0, x1 in boxes:
        mask[z0:z1, y0:y1, x0:x1] = True
    return mask


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-neighbour outside it (the volume border counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            inner &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~inner


def brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Max of the two directed 95th percentiles of surface-to-surface distances (all pairs, in mm)."""
    pa = np.argwhere(surface(a)) * np.asarray(spacing)
    pb = np.argwhere(surface(b)) * np.asarray(spacing)
    d = np.linalg.norm(pa[:, None, :] - pb[None, :, :], axis=-1)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


# --------------------------------------------------------------------------- Dice
def test_dice_equals_twice_the_overlap_over_the_sizes():
    truth = box(SHAPE, (2, 8, 2, 8, 2, 8))
    prediction = box(SHAPE, (3, 9, 2, 8, 4, 10))
    expected = 2 * np.count_nonzero(truth & prediction) / (truth.sum() + prediction.sum())
    assert evaluate_case(prediction, truth)["dice"] == pytest.approx(expected, abs=1e-6)


def test_dice_is_one_when_truth_and_prediction_are_both_empty():
    empty = np.zeros(SHAPE, dtype=bool)
    assert evaluate_case(empty, empty)["dice"] == 1.0


def test_dice_is_zero_for_a_prediction_on_an_empty_truth_and_for_an_empty_prediction():
    empty, lesion = np.zeros(SHAPE, dtype=bool), box(SHAPE, (2, 5, 2, 5, 2, 5))
    assert evaluate_case(lesion, empty)["dice"] == 0.0
    assert evaluate_case(empty, lesion)["dice"] == 0.0


# --------------------------------------------------------------------------- detection
def test_lesions_are_counted_as_hit_missed_or_false_positive_components():
    truth = box(SHAPE, (1, 4, 1, 4, 1, 4), (1, 4, 8, 11, 8, 11), (8, 11, 1, 4, 10, 13))
    prediction = box(SHAPE, (2, 4, 2, 4, 2, 4),   # overlaps lesion 1
                     (3, 4, 10, 11, 10, 11),      # one voxel inside lesion 2 still detects it
                     (7, 10, 9, 12, 2, 5),        # 27-voxel false positive
                     (11, 12, 12, 13, 14, 16))    # 2-voxel speck, also a false positive
    result = evaluate_case(prediction, truth, min_lesion_voxels=10)
    assert (result["tp_lesions"], result["fn_lesions"]) == (2, 1)
    assert (result["fp_components"], result["fp_components_all_sizes"]) == (1, 2)
    assert (result["true_lesions"], result["predicted_components"]) == (3, 4)


def test_voxels_touching_only_at_a_corner_form_one_lesion():
    truth = np.zeros(SHAPE, dtype=bool)
    truth[4, 4, 4] = truth[5, 5, 5] = True  # 26-connected, not 6- or 18-connected
    prediction = np.zeros(SHAPE, dtype=bool)
    prediction[5, 5, 5] = True
    result = evaluate_case(prediction, truth, min_lesion_voxels=1)
    assert (result["true_lesions"], result["tp_lesions"], result["fn_lesions"]) == (1, 1, 0)


def test_one_prediction_spanning_two_lesions_detects_both_and_is_no_false_positive():
    truth = box(SHAPE, (4, 6, 4, 6, 2, 4), (4, 6, 4, 6, 8, 10))
    prediction = box(SHAPE, (4, 6, 4, 6, 2, 10))
    result = evaluate_case(prediction, truth)
    assert (result["tp_lesions"], result["fn_lesions"], result["fp_components_all_sizes"]) == (2, 0, 0)


@pytest.mark.parametrize("min_voxels, counted", [(9, 1), (10, 1), (11, 0)])
def test_false_positives_smaller_than_min_lesion_voxels_are_not_counted(min_voxels, counted):
    truth = box(SHAPE, (1, 3, 1, 3, 1, 3))
    prediction = box(SHAPE, (8, 10, 8, 13, 8, 9))  # exactly 10 voxels, away from the lesion
    result = evaluate_case(prediction, truth, min_lesion_voxels=min_voxels)
    assert result["fp_components"] == counted
    assert result["fp_components_all_sizes"] == 1
    assert result["fn_lesions"] == 1


# --------------------------------------------------------------------------- HD95
@pytest.mark.parametrize("offset, spacing, expected", [
    ((3, 0, 0), (2.5, 1.0, 0.5), 7.5),             # along z with thick slices
    ((0, 0, 3), (2.5, 1.0, 0.5), 1.5),             # along x with fine spacing
    ((0, 4, 3), (1.0, 2.0, 2.0), 10.0),            # in-plane diagonal: sqrt(8^2 + 6^2)
])
def test_hd95_between_two_voxels_is_their_distance_in_mm(offset, spacing, expected):
    truth, prediction = np.zeros(SHAPE, dtype=bool), np.zeros(SHAPE, dtype=bool)
    truth[2, 2, 2] = True
    prediction[2 + offset[0], 2 + offset[1], 2 + offset[2]] = True
    assert evaluate_case(prediction, truth, spacing)["hd95"] == pytest.approx(expected, rel=1e-5)


def test_hd95_of_shifted_boxes_matches_a_brute_force_surface_distance():
    truth = box(SHAPE, (2, 7, 3, 9, 2, 8))
    prediction = box(SHAPE, (3, 9, 4, 11, 5, 14), (10, 12, 1, 3, 1, 3))  # shifted, larger, plus an outlier
    spacing = (2.5, 1.5, 0.7)
    expected = brute_force_hd95(prediction, truth, spacing)
    assert evaluate_case(prediction, truth, spacing)["hd95"] == pytest.approx(expected, rel=1e-4)


def test_hd95_of_identical_masks_is_zero():
    lesion = box(SHAPE, (2, 6, 2, 6, 2, 6))
    assert evaluate_case(lesion, lesion.copy())["hd95"] == pytest.approx(0.0)


def test_hd95_is_none_when_either_mask_is_empty():
    empty, lesion = np.zeros(SHAPE, dtype=bool), box(SHAPE, (2, 5, 2, 5, 2, 5))
    assert evaluate_case(empty, empty)["hd95"] is None
    assert evaluate_case(lesion, empty)["hd95"] is None
    assert evaluate_case(empty, lesion)["hd95"] is None


def test_masks_of_different_shapes_are_refused():
    with pytest.raises(GeometryError, match="shape"):
        evaluate_case(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))


# --------------------------------------------------------------------------- folders
SCHEMA = LabelSchema.from_names(target="lesion", auxiliary=["kidney"])
SPACING = (0.8, 0.8, 2.0)  # (x, y, z)


def write(array: np.ndarray, path: Path, spacing=SPACING) -> Path:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, 3.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def label_map(*lesions) -> np.ndarray:
    """Kidney around the middle of the volume, with lesion boxes painted over it (target wins)."""
    kidney = box(SHAPE, (2, 10, 2, 12, 2, 14))
    return SCHEMA.merge(box(SHAPE, *lesions), {"kidney": kidney})


@pytest.fixture
def dataset(tmp_path) -> Path:
    """caseA (one lesion) in labelsTs and caseB (two lesions) in labelsTr."""
    root = tmp_path / "Dataset"
    write_dataset_json(root, SCHEMA, num_training=1)
    write(label_map((3, 6, 3, 6, 3, 6)), root / "labelsTs" / "caseA.nii.gz")
    write(label_map((3, 6, 3, 6, 3, 6), (6, 9, 8, 11, 8, 11)), root / "labelsTr" / "caseB.nii.gz")
    return root


def test_evaluate_folder_collapses_truth_to_the_lesion_and_summarises_cases(dataset, tmp_path):
    pred = tmp_path / "pred"
    write(box(SHAPE, (3, 6, 3, 6, 3, 6)), pred / "caseA.nii.gz")  # exact: kidney must not count as truth
    write(box(SHAPE, (3, 6, 3, 6, 3, 6), (0, 2, 0, 3, 12, 16)), pred / "caseB.nrrd")  # misses one, 24-voxel FP
    write(np.ones(SHAPE), pred / "caseA_prob.nii.gz")  # probability and class maps are skipped
    write(label_map(), pred / "caseA_classes.nii.gz")

    result = evaluate_folder(pred, dataset)

    assert set(result["cases"]) == {"caseA", "caseB"}
    a, b = result["cases"]["caseA"], result["cases"]["caseB"]
    assert (a["dice"], a["hd95"], a["fp_components"]) == (1.0, 0.0, 0)
    assert (b["tp_lesions"], b["fn_lesions"], b["fp_components"]) == (1, 1, 1)
    assert result["mean_dice"] == pytest.approx((1.0 + b["dice"]) / 2)
    assert result["lesion_sensitivity"] == pytest.approx(2 / 3)
    assert result["fp_components_per_case"] == pytest.approx(0.5)
    assert result["fp_components_all_sizes_per_case"] == pytest.approx(0.5)
    assert result["mean_hd95"] == pytest.approx((a["hd95"] + b["hd95"]) / 2)


def test_evaluate_folder_uses_the_file_spacing_for_hd95(dataset, tmp_path):
    pred = tmp_path / "pred"
    shifted = box(SHAPE, (4, 7, 3, 6, 3, 6))  # the lesion moved one slice (2 mm) along z
    write(shifted, pred / "caseA.nii.gz")
    assert evaluate_folder(pred, dataset)["cases"]["caseA"]["hd95"] == pytest.approx(2.0)


def test_a_prediction_without_truth_is_an_error_naming_the_case(dataset, tmp_path):
    write(box(SHAPE, (3, 6, 3, 6, 3, 6)), tmp_path / "pred" / "caseA.nii.gz")
    write(box(SHAPE, (3, 6, 3, 6, 3, 6)), tmp_path / "pred" / "caseZ.nii.gz")
    with pytest.raises(DatasetError, match="caseZ"):
        evaluate_folder(tmp_path / "pred", dataset)


def test_a_folder_without_predictions_is_an_error(dataset, tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "notes.txt").write_text("nothing here")
    with pytest.raises(DatasetError, match="no prediction files"):
        evaluate_folder(tmp_path / "pred", dataset)


def test_a_prediction_on_another_grid_is_a_geometry_error(dataset, tmp_path):
    write(box(SHAPE, (3, 6, 3, 6, 3, 6)), tmp_path / "pred" / "caseA.nii.gz", spacing=(1.0, 1.0, 2.0))
    with pytest.raises(GeometryError, match="caseA"):
        evaluate_folder(tmp_path / "pred", dataset)


def test_a_class_map_given_as_prediction_is_refused(dataset, tmp_path):
    write(label_map((3, 6, 3, 6, 3, 6)), tmp_path / "pred" / "caseA.nii.gz")
    with pytest.raises(LabelError, match="binary lesion mask"):
        evaluate_folder(tmp_path / "pred", dataset)


# --------------------------------------------------------------------------- writing
def test_write_evaluation_writes_json_with_nulls_and_a_csv_row_per_case(tmp_path):
    result = {"mean_dice": 0.5, "mean_hd95": float("nan"), "cases": {
        "b": {"dice": 0.0, "fp_components": 2, "fp_components_all_sizes": 3, "tp_lesions": 0,
              "fn_lesions": 1, "hd95": None},
        "a": {"dice": 1.0, "fp_components": 0, "fp_components_all_sizes": 0, "tp_lesions": 1,
              "fn_lesions": 0, "hd95": 1.25},
    }}
    json_path, csv_path = write_evaluation(result, tmp_path / "out" / "evaluation.json")

    assert csv_path == tmp_path / "out" / "evaluation.csv"
    data = json.loads(json_path.read_text())
    assert data["mean_hd95"] is None and data["cases"]["b"]["hd95"] is None
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["case"] for r in rows] == ["b", "a"]
    assert rows[0]["hd95"] == "" and float(rows[1]["hd95"]) == 1.25 and rows[0]["fp_components"] == "2"
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["evaluation.csv", "evaluation.json"]


# --------------------------------------------------------------------------- per lesion and size bins
def test_each_true_lesion_gets_its_volume_detection_and_dice_against_the_components_touching_it():
    truth = box(SHAPE, (1, 4, 1, 4, 1, 4), (1, 4, 8, 11, 8, 11), (8, 11, 1, 4, 10, 13))
    prediction = box(SHAPE, (2, 4, 2, 4, 2, 4),   # 8 voxels inside lesion 1
                     (3, 4, 10, 11, 10, 11),      # 1 voxel inside lesion 2
                     (7, 10, 9, 12, 2, 5))        # a false positive touches no lesion
    records = evaluate_case(prediction, truth)["lesions"]
    assert [r["voxels"] for r in records] == [27, 27, 27]
    assert [r["detected"] for r in records] == [True, True, False]
    assert [r["dice"] for r in records] == pytest.approx([16 / 35, 2 / 28, 0.0])


def test_a_component_merging_two_lesions_counts_whole_against_each():
    truth = box(SHAPE, (4, 6, 4, 6, 2, 4), (4, 6, 4, 6, 8, 10))
    prediction = box(SHAPE, (4, 6, 4, 6, 2, 10))  # 32 voxels over two 8-voxel lesions
    assert [r["dice"] for r in evaluate_case(prediction, truth)["lesions"]] == pytest.approx([0.4, 0.4])


def test_size_bins_pool_lesions_by_true_volume_with_the_edges_fixed_in_advance():
    from BackSplitLib.metrics import size_bins

    cases = {"a": {"lesions": [{"voxels": 8, "detected": True, "dice": 0.5}, {"voxels": 50, "detected": False, "dice": 0.0}]},
             "b": {"lesions": [{"voxels": 49, "detected": False, "dice": 0.0}, {"voxels": 600, "detected": True, "dice": 0.9}]}}
    bins = size_bins(cases, [50, 500])
    assert list(bins) == ["< 50", "50-500", ">= 500"]
    assert (bins["< 50"]["lesions"], bins["< 50"]["sensitivity"], bins["< 50"]["lesion_dice"]) == (2, 0.5, 0.25)
    assert (bins["50-500"]["lesions"], bins["50-500"]["sensitivity"]) == (1, 0.0)
    assert bins[">= 500"]["lesion_dice"] == pytest.approx(0.9)
    assert size_bins({"a": {"lesions": []}}, [50])["< 50"] == {"lesions": 0, "detected": 0, "sensitivity": None,
                                                                 "lesion_dice": None}
    with pytest.raises(ValueError, match="increasing"):
        size_bins(cases, [500, 50])
