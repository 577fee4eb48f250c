"""Lesion-wise evaluation: Dice, detection of lesions as 26-connected components, and HD95.

Conventions (the issue's "Evaluation" format, kept exactly):

- **Dice** of an empty truth and an empty prediction is 1; of an empty truth and a non-empty prediction 0.
- **Lesions** are 26-connected components (SimpleITK ``ConnectedComponent`` with ``fullyConnected``). A
  true lesion touched by any predicted voxel is detected (``tp_lesions``), otherwise missed
  (``fn_lesions``). A predicted component touching no true lesion is a false positive; components smaller
  than ``min_lesion_voxels`` are not counted in ``fp_components`` (specks would dominate the count) but are
  in ``fp_components_all_sizes``.
- **HD95** (mm) is MONAI's symmetric 95th-percentile Hausdorff distance between the mask surfaces with the
  voxel spacing. It is undefined - ``None``, written as JSON ``null`` - when either mask is empty: there is
  no surface to measure from, and any finite stand-in (e.g. the image diagonal) would dominate a mean.
  The case's Dice and detection counts still record the miss or the false alarm; ``mean_hd95`` averages
  the cases where it is defined and ``hd95_cases`` says how many those are.
- **Per lesion** (``lesions``: one record per true lesion): its ``voxels``, whether it was ``detected`` and its
  ``dice`` against the predicted components that touch it (0 when missed; a component touching two lesions
  counts whole for each, so merging them costs Dice). :func:`size_bins` pools these records into lesion-wise
  sensitivity and mean per-lesion Dice per bin of true lesion volume.

MONAI and torch are imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import csv
import io as _stdio
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BackSplitLib.atomic import write_text_atomic
from BackSplitLib.dataset import Dataset
from BackSplitLib.errors import DatasetError, GeometryError, LabelError
from BackSplitLib.io import IMAGE_EXTENSIONS, check_same_geometry, image_extension, read_image

DEFAULT_MIN_LESION_VOXELS = 10
HD_PERCENTILE = 95
CASE_KEYS = ("dice", "fp_components", "fp_components_all_sizes", "tp_lesions", "fn_lesions", "hd95")
AUXILIARY_OUTPUT_SUFFIXES = ("_prob", "_classes")  # written beside predictions by `backsplit predict`


# --------------------------------------------------------------------------- one case
def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected component ids (0 = background) and their count."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    labelled = sitk.ConnectedComponent(image, True)  # fullyConnected=True: 26-connectivity in 3D
    ids = sitk.GetArrayFromImage(labelled)
    return ids, int(ids.max()) if ids.size else 0


def lesion_findings(mask: sitk.Image) -> dict:
    """What a predicted lesion mask holds, in the units a clinician reads: ``voxels``, ``volume_ml``,
    ``components`` (26-connected, as everywhere here) and ``largest_diameter_mm`` (the largest component's
    Feret diameter, its longest extent in physical space); an empty mask gives zeros."""
    binary = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(binary)))
    findings = {"voxels": voxels, "volume_ml": voxels * math.prod(mask.GetSpacing()) / 1000.0, "components": 0,
                "largest_diameter_mm": 0.0}
    if voxels:
        shapes = sitk.LabelShapeStatisticsImageFilter()
        shapes.ComputeFeretDiameterOn()
        shapes.Execute(sitk.ConnectedComponent(binary, True))
        largest = max(shapes.GetLabels(), key=shapes.GetNumberOfPixels)
        findings.update(components=len(shapes.GetLabels()),
                        largest_diameter_mm=float(shapes.GetFeretDiameter(largest)))
    return findings


def describe_findings(findings: dict) -> str:
    """One line: "no lesion found", or the volume, the component count and the largest one's diameter."""
    if not findings.get("voxels"):
        return "no lesion found"
    n = findings["components"]
    return (f"lesion {findings['volume_ml']:.2f} mL in {n} component{'s' if n != 1 else ''}, "
            f"the largest {findings['largest_diameter_mm']:.1f} mm across")


def _as_onehot_tensor(mask: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def dice_score(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice with the empty-truth conventions, via MONAI's ``compute_dice``.

    MONAI's ``ignore_empty=False`` gives exactly our convention (1 when both are empty, 0 when only the
    truth is), so we use it rather than re-deriving the edge cases.
    """
    from monai.metrics import compute_dice

    value = compute_dice(_as_onehot_tensor(prediction), _as_onehot_tensor(truth), include_background=True,
                         ignore_empty=False)
    return float(value.reshape(-1)[0])


def hd95_mm(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float | None:
    """Symmetric 95th-percentile Hausdorff distance in mm (MONAI); None when either mask is empty."""
    if not prediction.any() or not truth.any():
        return None
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():  # MONAI warns about its own internal use of a deprecated argument
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        value = compute_hausdorff_distance(
            _as_onehot_tensor(prediction), _as_onehot_tensor(truth), include_background=True,
            distance_metric="euclidean", percentile=HD_PERCENTILE, spacing=[float(s) for s in spacing],
        )
    value = float(value.reshape(-1)[0])
    return value if math.isfinite(value) else None


def evaluate_case(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                  min_lesion_voxels: int = DEFAULT_MIN_LESION_VOXELS) -> dict:
    """Dice, lesion detection counts and HD95 for binary masks in (z, y, x) order with (z, y, x) spacing.

    Non-zero voxels are lesion. Returns ``dice``, ``fp_components``, ``fp_components_all_sizes``,
    ``tp_lesions``, ``fn_lesions``, ``hd95`` (mm or None), plus ``true_lesions`` and
    ``predicted_components`` for context, and ``lesions`` (:func:`lesion_records`).
    """
    prediction = np.asarray(prediction) != 0
    truth = np.asarray(truth) != 0
    if prediction.shape != truth.shape:
        raise GeometryError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")
    if len(spacing) != truth.ndim:
        raise GeometryError(f"spacing {tuple(spacing)} needs one value per axis of the {truth.ndim}D masks")
    if min_lesion_voxels < 0:
        raise ValueError(f"min_lesion_voxels must be >= 0, got {min_lesion_voxels}")

    true_ids, n_true = _components(truth)
    pred_ids, n_pred = _components(prediction)
    detected = np.unique(true_ids[prediction])
    tp = int(np.count_nonzero(detected))  # component id 0 is background, not a lesion
    touching = np.zeros(n_pred + 1, dtype=bool)
    touching[np.unique(pred_ids[truth])] = True
    sizes = np.bincount(pred_ids.ravel(), minlength=n_pred + 1)
    false = ~touching[1:]
    return {
        "dice": dice_score(prediction, truth),
        "fp_components": int(np.count_nonzero(false & (sizes[1:] >= min_lesion_voxels))),
        "fp_components_all_sizes": int(np.count_nonzero(false)),
        "tp_lesions": tp,
        "fn_lesions": n_true - tp,
        "hd95": hd95_mm(prediction, truth, spacing),
        "true_lesions": n_true,
        "predicted_components": n_pred,
        "lesions": lesion_records(true_ids, n_true, pred_ids, sizes, prediction),
    }


def lesion_records(true_ids: np.ndarray, n_true: int, pred_ids: np.ndarray, pred_sizes: np.ndarray,
                   prediction: np.ndarray) -> list[dict]:
    """One record per true lesion (component id order): ``voxels``, ``detected`` and ``dice`` = 2|P ∩ T| /
    (|P| + |T|) with T the lesion and P the predicted components touching it (0 when none does)."""
    if n_true == 0:
        return []
    true_sizes = np.bincount(true_ids.ravel(), minlength=n_true + 1)
    overlap = np.bincount(true_ids[prediction], minlength=n_true + 1)  # predicted voxels inside each lesion
    touching = np.zeros(n_true + 1)  # voxels of the predicted components that touch each lesion
    both = (true_ids > 0) & (pred_ids > 0)
    pairs = np.unique(np.stack([true_ids[both], pred_ids[both]]), axis=1) if both.any() else np.zeros((2, 0), int)
    np.add.at(touching, pairs[0], pred_sizes[pairs[1]])
    return [{"voxels": int(true_sizes[k]), "detected": bool(overlap[k] > 0),
             "dice": float(2 * overlap[k] / (touching[k] + true_sizes[k]))} for k in range(1, n_true + 1)]


def size_bin_labels(edges: Sequence[int]) -> list[str]:
    """``[50, 500]`` -> ``["< 50", "50-500", ">= 500"]`` (true lesion volume in voxels)."""
    edges = list(edges)
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] <= 0:
        raise ValueError(f"size bin edges must be positive and increasing, got {edges}")
    return ([f"< {edges[0]}"] + [f"{a}-{b}" for a, b in zip(edges, edges[1:])] + [f">= {edges[-1]}"])


def size_bins(cases: dict[str, dict], edges: Sequence[int]) -> dict[str, dict]:
    """Per bin of true lesion volume (voxels; bin i holds edges[i-1] <= voxels < edges[i]) over every case's
    ``lesions`` records: ``lesions`` (count), ``detected``, ``sensitivity`` (detected / lesions) and
    ``lesion_dice`` (mean per-lesion Dice, missed lesions counting 0); None where a bin holds no lesion."""
    labels = size_bin_labels(edges)
    records = [r for case in cases.values() for r in case["lesions"]]
    which = np.searchsorted(np.asarray(edges), [r["voxels"] for r in records], side="right")
    result = {}
    for i, label in enumerate(labels):
        chosen = [r for r, b in zip(records, which) if b == i]
        detected = sum(r["detected"] for r in chosen)
        result[label] = {"lesions": len(chosen), "detected": int(detected),
                         "sensitivity": detected / len(chosen) if chosen else None,
                         "lesion_dice": float(np.mean([r["dice"] for r in chosen])) if chosen else None}
    return result


# --------------------------------------------------------------------------- a folder of predictions
def _prediction_files(pred_dir: Path) -> dict[str, Path]:
    """Lesion masks in ``pred_dir`` by case name, skipping probability/class maps and temporary files."""
    if not pred_dir.is_dir():
        raise DatasetError(f"prediction folder {pred_dir} does not exist",
                           "run 'backsplit predict RUN INPUT --out PRED_DIR' first")
    found: dict[str, Path] = {}
    for path in sorted(pred_dir.iterdir()):
        ext = image_extension(path)
        if not path.is_file() or not ext or path.name.startswith("."):
            continue
        case = path.name[: -len(ext)]
        if case.endswith(AUXILIARY_OUTPUT_SUFFIXES):
            continue
        if case in found:
            raise DatasetError(f"case '{case}' has two predictions in {pred_dir}: {found[case].name} and {path.name}",
                               "keep one file per case")
        found[case] = path
    if not found:
        raise DatasetError(f"{pred_dir} holds no prediction files ({', '.join(IMAGE_EXTENSIONS)})",
                           "point to the folder written by 'backsplit predict'")
    return found


def _truth_file(dataset: Dataset, case: str) -> Path | None:
    for folder in ("labelsTs", "labelsTr"):
        path = dataset.root / folder / f"{case}{dataset.file_ending}"
        if path.is_file():
            return path
    return None


def _binary_prediction(image: sitk.Image, path: Path) -> np.ndarray:
    array = sitk.GetArrayFromImage(image)
    values = np.unique(array)
    foreground = values[values != 0]
    if len(foreground) > 1:
        shown = ", ".join(f"{v:g}" for v in values[:8])
        raise LabelError(f"prediction {path} holds values {shown}{' ...' if len(values) > 8 else ''}; "
                         "expected a binary lesion mask (0 and one lesion value)",
                         "evaluate the lesion masks written by 'backsplit predict', not class maps or probabilities")
    return array != 0


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def evaluate_folder(pred_dir: str | Path, dataset_dir: str | Path,
                    min_lesion_voxels: int = DEFAULT_MIN_LESION_VOXELS) -> dict:
    """Evaluate every lesion mask in ``pred_dir`` against the dataset's truth (labelsTs, then labelsTr).

    Truth label maps are collapsed to the target class with the dataset's schema. Every prediction must
    have a truth on the same grid. Returns ``mean_dice``, ``fp_components_per_case``,
    ``fp_components_all_sizes_per_case``, ``lesion_sensitivity`` (detected / all true lesions, None if
    there are none), ``mean_hd95`` (over cases where defined), ``hd95_cases``, ``num_cases``,
    ``min_lesion_voxels`` and ``cases`` ({case: evaluate_case's dict}).
    """
    pred_dir, dataset_dir = Path(pred_dir), Path(dataset_dir)
    predictions = _prediction_files(pred_dir)
    dataset = Dataset.load(dataset_dir, require_training=False)
    truths = {case: _truth_file(dataset, case) for case in predictions}
    missing = sorted(case for case, path in truths.items() if path is None)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(
            f"no truth for predicted case{'s' if len(missing) > 1 else ''} {shown} in {dataset_dir}/labelsTs or "
            f"{dataset_dir}/labelsTr (looked for <case>{dataset.file_ending})",
            "add the labels, or evaluate only predictions of labelled cases",
        )
    cases: dict[str, dict] = {}
    for case, pred_path in predictions.items():
        truth_path = truths[case]
        truth_image = read_image(truth_path, "label")
        pred_image = read_image(pred_path, "prediction")
        check_same_geometry(truth_image, pred_image, f"label {truth_path}", f"prediction {pred_path}")
        truth_labels = sitk.GetArrayFromImage(truth_image)
        dataset.schema.check_label_values(truth_labels, str(truth_path))
        truth = dataset.schema.collapse_labels(truth_labels).astype(bool)
        spacing_zyx = tuple(truth_image.GetSpacing())[::-1]
        cases[case] = evaluate_case(_binary_prediction(pred_image, pred_path), truth, spacing_zyx,
                                    min_lesion_voxels)
    return summarize(cases, min_lesion_voxels)


def summarize(cases: dict[str, dict], min_lesion_voxels: int = DEFAULT_MIN_LESION_VOXELS) -> dict:
    """Dataset-level numbers from per-case results (evaluate_case dicts)."""
    if not cases:
        raise DatasetError("there are no evaluated cases to summarise")
    values = list(cases.values())
    true_lesions = sum(c["tp_lesions"] + c["fn_lesions"] for c in values)
    hd95 = [c["hd95"] for c in values if c["hd95"] is not None]
    return {
        "mean_dice": _mean([c["dice"] for c in values]),
        "fp_components_per_case": _mean([c["fp_components"] for c in values]),
        "fp_components_all_sizes_per_case": _mean([c["fp_components_all_sizes"] for c in values]),
        "lesion_sensitivity": sum(c["tp_lesions"] for c in values) / true_lesions if true_lesions else None,
        "mean_hd95": _mean(hd95),
        "hd95_cases": len(hd95),
        "num_cases": len(values),
        "min_lesion_voxels": int(min_lesion_voxels),
        "cases": dict(sorted(cases.items())),
    }


# --------------------------------------------------------------------------- writing
def _json_safe(value):
    """NaN/inf -> None so the JSON is standard (null), numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value




def write_evaluation(result: dict, json_path: str | Path) -> tuple[Path, Path]:
    """Write the evaluation JSON and, beside it (same stem, ``.csv``), one CSV row per case. Atomic."""
    json_path = Path(json_path)
    if "cases" not in result:
        raise DatasetError("an evaluation result needs 'cases' (use evaluate_folder's output)")
    csv_path = json_path.with_suffix(".csv")
    if csv_path == json_path:
        raise DatasetError(f"{json_path} must not end in .csv: the per-case CSV is written beside it",
                           "name the JSON file e.g. evaluation.json")
    safe = _json_safe(result)
    buffer = _stdio.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", *CASE_KEYS])
    for case, row in safe["cases"].items():
        writer.writerow([case, *("" if row.get(k) is None else row.get(k) for k in CASE_KEYS)])
    write_text_atomic(json_path, json.dumps(safe, indent=2, allow_nan=False) + "\n")
    write_text_atomic(csv_path, buffer.getvalue())
    return json_path, csv_path
