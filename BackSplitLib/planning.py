"""Planning a training run from its data: the schema the network learns, the label lookup, and the
preprocessing (RAS orientation, the dataset's median spacing, CT clip/mean/std from foreground voxels,
the patch size). Fine-tuning takes the base run's preprocessing instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from BackSplitLib import runs as runfiles
from BackSplitLib.dataset import CaseFiles, Dataset
from BackSplitLib.errors import DatasetError
from BackSplitLib.io import check_same_geometry, read_image, resample_like
from BackSplitLib.schema import BACKGROUND, LabelSchema

DEFAULT_PATCH = 64


@dataclass
class Plan:
    """What the trainer needs from planning: the schema trained, the label lookup from the dataset's values
    to it (None when they are the same), the preprocessing stored in model.json, and per case which
    classes its label map annotates."""

    schema: LabelSchema
    lookup: np.ndarray | None
    preprocessing: dict
    labelled: dict[str, np.ndarray] = field(default_factory=dict)


def training_schema(dataset: Dataset, mode: str, base: runfiles.RunInfo | None) -> LabelSchema:
    """The schema the network is trained with: the dataset's (binary: coarsened), unioned by class name
    with the base run's when fine-tuning (its classes keep their channels)."""
    schema = dataset.schema.binary() if mode == "binary" else dataset.schema
    if base is not None:
        schema = base.schema.union(schema)
    return schema


def plan(dataset: Dataset, cases: list[CaseFiles], config,
         base: runfiles.RunInfo | None = None) -> Plan:
    """Check every case (readable, 3D, finite, geometry, label values) and derive the preprocessing:
    the dataset's median spacing, CT clip/mean/std from foreground voxels, and the patch size.
    ``config`` is the run's ``training.TrainConfig``."""
    schema = training_schema(dataset, config.mode, base)
    source_schema = dataset.schema
    lookup = None
    if config.mode == "binary":
        lookup = np.zeros(max(source_schema.labels.values()) + 1, dtype=np.int64)
        lookup[source_schema.target_value] = schema.target_value
        if source_schema.ignore_value is not None:
            lookup[source_schema.ignore_value] = schema.ignore_value
    elif schema.labels != source_schema.labels:
        lookup = schema.lookup_from(source_schema)

    spacings, shapes, samples, lesion_cases = [], [], [], 0
    rng = np.random.default_rng(0)
    for case in cases:
        image = read_image(case.image, "image")
        label = read_image(case.label, "label")
        if config.resample_labels:
            label = resample_like(label, image)  # the statistics below need voxel-aligned labels
        else:
            check_same_geometry(image, label, f"image {case.image}", f"label {case.label}")
        label_array = sitk.GetArrayViewFromImage(label)
        source_schema.check_label_values(label_array, str(case.label))
        lesion_cases += bool(np.any(label_array == source_schema.target_value))
        spacing, shape = _ras_spacing_and_shape(image)
        spacings.append(spacing)
        shapes.append(shape)
        foreground = label_array > 0
        if source_schema.ignore_value is not None:
            foreground &= label_array != source_schema.ignore_value
        values = sitk.GetArrayViewFromImage(image)[foreground]
        if values.size:
            samples.append(rng.choice(values, size=min(values.size, 20000), replace=False))
    if lesion_cases == 0:
        raise DatasetError(f"no training case in {dataset.root} contains the target '{source_schema.target}'",
                           "check dataset.json 'target' and the label values")

    if base is not None:
        preprocessing = dict(base.preprocessing)
    else:
        spacing = np.median(np.asarray(spacings), axis=0)
        median_shape = np.median(np.asarray(shapes) * np.asarray(spacings) / spacing, axis=0)
        preprocessing = {
            "orientation": "RAS",
            "spacing": [float(s) for s in spacing],
            "normalization": _normalization(dataset.normalization, samples),
            "patch_size": list(config.patch_size or _patch_size(median_shape, config)),
        }

    labelled = {}
    for case in cases:
        names = set(schema.class_names) if config.mode == "binary" else set(case.labelled) & set(schema.class_names)
        names |= {BACKGROUND, schema.target}
        labelled[case.name] = np.array([n in names for n in schema.class_names])
    return Plan(schema, lookup, preprocessing, labelled)


def _ras_spacing_and_shape(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Spacing and size along R, A, S after reorientation (each image axis goes to its closest world axis)."""
    direction = np.abs(np.asarray(image.GetDirection()).reshape(3, 3))
    order = np.argmax(direction, axis=0)  # world axis of each image axis
    spacing, shape = np.zeros(3), np.zeros(3)
    spacing[order] = image.GetSpacing()
    shape[order] = image.GetSize()
    return spacing, shape


def _normalization(scheme: str, samples: list[np.ndarray]) -> dict:
    if scheme != "CT":
        return {"scheme": "zscore"}
    values = np.concatenate(samples).astype(np.float64) if samples else np.zeros(1)
    lo, hi = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(values, lo, hi)
    return {"scheme": "CT", "clip": [float(lo), float(hi)], "mean": float(clipped.mean()),
            "std": float(max(clipped.std(), 1e-3))}


def _patch_size(median_shape: np.ndarray, config) -> tuple[int, int, int]:
    from BackSplitLib.networks import default_params, patch_divisor

    divisor = patch_divisor(config.arch, config.arch_params or default_params(config.arch))
    patch = []
    for extent in median_shape:
        size = min(DEFAULT_PATCH, int(extent) // divisor * divisor)
        patch.append(max(divisor, size))
    return tuple(patch)
