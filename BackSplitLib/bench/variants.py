"""Dataset variants for the experiments: fewer training cases; partial, fewer, noisy, degraded or automatic
auxiliary labels.

Each variant is a dataset folder of its own beside the source: ``imagesTr`` is a symbolic link to the
source's (images are never copied), ``labelsTr`` holds rewritten label maps and ``dataset.json`` the
variant's schema. Variants have no test cases: experiments evaluate on the *source* dataset's test set, so
every variant is scored against the same truth. The target (and ``ignore``) voxels are never changed.
:func:`first_cases_variant` (the first n training cases) links each image and label instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from BackSplitLib.dataset import Dataset
from BackSplitLib.errors import DatasetError
from BackSplitLib.atomic import staged_folder
from BackSplitLib.io import read_image, write_label
from BackSplitLib.schema import LabelSchema

NOISE_KINDS = ("erode", "dilate", "shift")
_KEYS_DROPPED = ("cases_without_auxiliary", "case_labels", "validation", "phantom")


def _write_variant(source: Dataset, out: Path, schema: LabelSchema,
                   relabel: Callable[[str, np.ndarray], np.ndarray],
                   extra: dict | Callable[[], dict] | None = None) -> Path:
    """Write ``out`` (replacing an earlier variant) with labels ``relabel(case, source_label)`` and ``extra``
    keys in dataset.json (a callable is called after every case is relabelled).

    Built in a temporary folder and renamed into place, so an interrupted benchmark leaves no half
    variant that a rerun would trust.
    """
    with staged_folder(out) as work:
        os.symlink(source.root.resolve() / "imagesTr", work / "imagesTr")
        for case in source.training:
            label = read_image(case.label, "label", require_finite=False)
            array = relabel(case.name, sitk.GetArrayFromImage(label).astype(np.int64))
            write_label(array, label, work / "labelsTr" / case.label.name, schema)
        raw = {k: v for k, v in source.raw.items() if k not in _KEYS_DROPPED}
        raw.update(labels=dict(schema.labels), target=schema.target,
                   colors={k: list(v) for k, v in schema.colors.items()})
        if source.validation is not None:
            raw["validation"] = list(source.validation)
        raw.update((extra() if callable(extra) else extra) or {})
        (work / "dataset.json").write_text(json.dumps(raw, indent=2) + "\n")
    return out


def _keep_target_and_ignore(source: LabelSchema, schema: LabelSchema, label: np.ndarray,
                            auxiliary: np.ndarray) -> np.ndarray:
    """``auxiliary`` (values of ``schema``) with the source's target and ignore voxels painted on top."""
    result = auxiliary.copy()
    if source.ignore_value is not None and schema.ignore_value is not None:
        result[label == source.ignore_value] = schema.ignore_value
    result[label == source.target_value] = schema.target_value  # target wins
    return result


def labelled_cases(source: Dataset, fraction: float, seed: int) -> list[str]:
    """The ``round(fraction * n)`` training cases that keep their auxiliary labels (seeded choice)."""
    if not 0 <= fraction <= 1:
        raise DatasetError(f"the share of cases with auxiliary labels must be in [0, 1], got {fraction}")
    names = sorted(c.name for c in source.training)
    order = np.random.default_rng(seed).permutation(len(names))
    return sorted(names[i] for i in order[: int(round(fraction * len(names)))])


def partial_variant(source: Dataset, out: Path, fraction: float, seed: int) -> Path:
    """Only ``fraction`` of the training cases keep auxiliary labels; the rest hold just the target and
    are listed in ``cases_without_auxiliary`` (so the marginal loss knows, and the naive one does not care)."""
    keep = set(labelled_cases(source, fraction, seed))
    schema = source.schema

    def relabel(case: str, label: np.ndarray) -> np.ndarray:
        if case in keep:
            return label
        return _keep_target_and_ignore(schema, schema, label, np.zeros_like(label))

    without = sorted(c.name for c in source.training if c.name not in keep)
    return _write_variant(source, out, schema, relabel, {"cases_without_auxiliary": without})


def subset_variant(source: Dataset, out: Path, names: Sequence[str]) -> Path:
    """Keep only the auxiliary classes ``names`` (the others become background)."""
    unknown = [n for n in names if n not in source.schema.auxiliary_names]
    if unknown:
        raise DatasetError(f"auxiliary classes {unknown} are not in {source.root}/dataset.json "
                           f"(known: {source.schema.describe_classes()})")
    ordered = [n for n in source.schema.auxiliary_names if n in set(names)]
    schema = LabelSchema.from_names(source.schema.target, ordered, ignore=source.schema.ignore_value is not None,
                                    colors=source.schema.colors)
    lookup = np.zeros(max(source.schema.labels.values()) + 1, dtype=np.int64)
    for name in ordered:
        lookup[source.schema.labels[name]] = schema.labels[name]

    def relabel(case: str, label: np.ndarray) -> np.ndarray:
        return _keep_target_and_ignore(source.schema, schema, label, lookup[label])

    return _write_variant(source, out, schema, relabel)


def perturb_auxiliary(label: np.ndarray, schema: LabelSchema, kind: str, voxels: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Auxiliary masks eroded, dilated (each class on its own, painted in value order) or the whole
    auxiliary map shifted by ``voxels`` along a random axis; the target and ignore voxels stay."""
    if kind not in NOISE_KINDS:
        raise DatasetError(f"unknown label noise '{kind}'", f"use one of {', '.join(NOISE_KINDS)}")
    auxiliary = np.where(np.isin(label, [schema.labels[n] for n in schema.auxiliary_names]), label, 0)
    if kind == "shift":
        axis, sign = int(rng.integers(0, label.ndim)), int(rng.choice([-1, 1]))
        moved = np.zeros_like(auxiliary)
        src = [slice(None)] * label.ndim
        dst = [slice(None)] * label.ndim
        src[axis] = slice(0, -voxels) if sign > 0 else slice(voxels, None)
        dst[axis] = slice(voxels, None) if sign > 0 else slice(0, -voxels)
        moved[tuple(dst)] = auxiliary[tuple(src)]
        result = moved
    else:
        result = np.zeros_like(auxiliary)
        operation = ndimage.binary_erosion if kind == "erode" else ndimage.binary_dilation
        for name in schema.auxiliary_names:
            value = schema.labels[name]
            mask = auxiliary == value
            if mask.any():
                result[operation(mask, iterations=voxels)] = value
    return _keep_target_and_ignore(schema, schema, label, result)


def noisy_variant(source: Dataset, out: Path, kind: str, voxels: int, seed: int) -> Path:
    """Every training case's auxiliary labels perturbed by :func:`perturb_auxiliary`."""
    if voxels < 1:
        raise DatasetError(f"label noise needs at least 1 voxel, got {voxels}")
    rngs = {c.name: np.random.default_rng([seed, i]) for i, c in enumerate(sorted(source.training, key=lambda c: c.name))}

    def relabel(case: str, label: np.ndarray) -> np.ndarray:
        return perturb_auxiliary(label, source.schema, kind, voxels, rngs[case])

    return _write_variant(source, out, source.schema, relabel)


def tissue_variant(source: Dataset, out: Path) -> Path:
    """Organ labels replaced by automatic CT tissue classes (``auxiliary.ct_tissue_classes``)."""
    from BackSplitLib.auxiliary import add_classes_to_dataset, ct_tissue_classes

    if source.normalization != "CT":
        raise DatasetError(f"{source.root} is not CT (channel_names), so CT tissue classes do not apply")
    with staged_folder(out) as work:
        subset_variant(source, work, ())  # organs removed: target (and ignore) only
        add_classes_to_dataset(work, ct_tissue_classes)
    return out


def first_cases_variant(source: Dataset, out: Path, cases: int) -> Path:
    """The first ``cases`` training cases of ``source`` in its order (file name order), unchanged: images and
    labels are linked one by one, so the first n of a dataset are inside its first m for n < m (part B's
    learning curve). No test cases, like every variant."""
    if not 1 <= cases <= len(source.training):
        raise DatasetError(f"{source.root} has {len(source.training)} training cases, {cases} were asked for",
                           "write the phantom with more cases (bench quality --cases N) or ask for fewer")
    chosen = source.training[:cases]
    with staged_folder(out) as work:
        for folder in ("imagesTr", "labelsTr"):
            (work / folder).mkdir()
        for case in chosen:
            os.symlink(case.image.resolve(), work / "imagesTr" / case.image.name)
            os.symlink(case.label.resolve(), work / "labelsTr" / case.label.name)
        raw = {k: v for k, v in source.raw.items() if k not in ("validation", "phantom")}
        raw.update(numTraining=cases, first_cases_of=str(source.root))
        names = {c.name for c in chosen}
        if source.validation is not None:
            raw["validation"] = [v for v in source.validation if v in names]
        for key in ("cases_without_auxiliary",):
            if key in raw:
                raw[key] = [c for c in raw[key] if c in names]
        if "case_labels" in raw:
            raw["case_labels"] = {c: v for c, v in raw["case_labels"].items() if c in names}
        (work / "dataset.json").write_text(json.dumps(raw, indent=2) + "\n")
    return out


def degraded_variant(source: Dataset, out: Path, seed: int) -> Path:
    """Every training case's organ labels degraded by :func:`BackSplitLib.auxiliary.degrade_organs` with its
    default errors, the generator seeded by ``(seed, i)`` for the i-th case in name order; the target (and
    ignore) voxels stay the ground truth's. dataset.json's ``degraded`` records what was done per case and
    each organ's mean Dice against the ground truth."""
    from BackSplitLib.auxiliary import SegmenterErrors, degrade_organs

    schema = source.schema
    organs = {name: schema.labels[name] for name in schema.auxiliary_names}
    protected = [v for v in (schema.target_value, schema.ignore_value) if v is not None]
    order = {c.name: i for i, c in enumerate(sorted(source.training, key=lambda c: c.name))}
    records: dict[str, dict] = {}
    dice: dict[str, list[float]] = {name: [] for name in organs}

    def relabel(case: str, label: np.ndarray) -> np.ndarray:
        degraded, record = degrade_organs(label, organs, np.random.default_rng([seed, order[case]]), protected)
        records[case] = record
        for name, value in organs.items():
            truth, made = label == value, degraded == value
            if truth.any() or made.any():
                dice[name].append(2 * float(np.sum(truth & made)) / float(truth.sum() + made.sum()))
        return degraded

    return _write_variant(source, out, schema, relabel, lambda: {"degraded": {
        "seed": seed, "errors": asdict(SegmenterErrors()), "cases": records,
        "mean_organ_dice": {n: float(np.mean(v)) for n, v in dice.items() if v}}})
