"""Dataset mode: add automatic auxiliary classes to every case of a dataset folder, in place and atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BackSplitLib.atomic import write_json_atomic
from BackSplitLib.auxiliary.labels import AuxiliaryLabels
from BackSplitLib.errors import DatasetError
from BackSplitLib.io import check_same_geometry, image_extension, read_image, write_label
from BackSplitLib.schema import BACKGROUND, IGNORE, LabelSchema


@dataclass
class DatasetUpdate:
    """What adding classes to a dataset did."""

    schema: LabelSchema
    added: list[str]
    cases: int
    voxels: dict[str, int]


def read_training_case(case) -> tuple[sitk.Image, sitk.Image]:
    """A dataset case's image and label, checked to share one grid."""
    image = read_image(case.image, f"image of case {case.name}")
    label = read_image(case.label, f"label of case {case.name}", require_finite=False)
    check_same_geometry(image, label, str(case.image), str(case.label))
    return image, label


def add_classes_to_dataset(root: str | Path, make_classes: Callable[[sitk.Image], AuxiliaryLabels],
                           progress: Callable[[int, int, str], None] | None = None) -> DatasetUpdate:
    """Add automatic classes to every training case of a dataset, in place.

    New classes get values after the existing ones (``ignore`` stays highest; its voxels are remapped).
    Existing labels (target, organs, ignore) win: the new classes only fill background voxels. All label
    files are written to temporary names first and renamed only when every case succeeded; dataset.json
    is replaced last, atomically. Test labels (labelsTs) are remapped when ``ignore`` moves.
    """
    from BackSplitLib.dataset import Dataset

    dataset = Dataset.load(root)
    old = dataset.schema
    staged: list[tuple[Path, Path]] = []
    new_schema: LabelSchema | None = None
    voxels: dict[str, int] = {}
    try:
        for i, case in enumerate(dataset.training):
            if progress:
                progress(i, len(dataset.training), case.name)
            image, label = read_training_case(case)
            aux = make_classes(image)
            if new_schema is None:
                clash = [n for n in aux.classes if n in (old.target, IGNORE, BACKGROUND)]
                if clash:
                    raise DatasetError(f"{dataset.root}/dataset.json: new class names {clash} clash with the target"
                                       " or reserved names")
                new_schema = old.with_auxiliary(aux.classes, colors=aux.colors)
            old_array = sitk.GetArrayFromImage(label).astype(np.int64)
            old.check_label_values(old_array, str(case.label))
            remap = new_schema.lookup_from(old)
            aux_lookup = np.zeros(max(aux.classes.values()) + 1, dtype=np.int64)
            for name, value in aux.classes.items():
                aux_lookup[value] = new_schema.labels[name]
            new_array = remap[old_array]
            fill = (old_array == 0) & (aux.array() > 0)
            new_array[fill] = aux_lookup[aux.array()[fill]]
            for name in aux.classes:
                voxels[name] = voxels.get(name, 0) + int(np.count_nonzero(new_array == new_schema.labels[name]))
            staged.append((_stage(new_array, label, case.label, new_schema), case.label))
        assert new_schema is not None
        remap = new_schema.lookup_from(old)
        if not np.array_equal(remap, np.arange(remap.size)):
            for case in dataset.test:
                if case.label is not None:
                    label = read_image(case.label, f"test label of case {case.name}", require_finite=False)
                    old_array = sitk.GetArrayFromImage(label).astype(np.int64)
                    old.check_label_values(old_array, str(case.label))
                    staged.append((_stage(remap[old_array], label, case.label, new_schema), case.label))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    _write_dataset_json(dataset, new_schema, list(aux.classes))
    if progress:
        progress(len(dataset.training), len(dataset.training), "")
    added = [n for n in new_schema.auxiliary_names if n not in old.labels]
    return DatasetUpdate(new_schema, added, len(dataset.training), voxels)


def _stage(array: np.ndarray, like: sitk.Image, final: Path, schema: LabelSchema) -> Path:
    """Write a label array beside ``final`` under a hidden temporary name (renamed once every case is
    written); returns that name."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=image_extension(final) or ".nii.gz", dir=final.parent)
    os.close(fd)
    return write_label(array, like, tmp, schema)


def _write_dataset_json(dataset, schema: LabelSchema, new_classes: Sequence[str]) -> None:
    """Update dataset.json in place (other keys kept): labels, colours, and per-case labelled classes.

    Cases that labelled only some classes keep that list, plus the new classes (they are labelled now).
    """
    raw = dict(dataset.raw)
    raw["labels"] = dict(schema.labels)
    raw["target"] = schema.target
    raw["colors"] = {k: list(v) for k, v in schema.colors.items()}
    all_classes = set(dataset.schema.class_names)
    case_labels = dict(raw.get("case_labels") or {})
    for case in dataset.training:
        if set(case.labelled) != all_classes:
            names = sorted(set(case.labelled) - {BACKGROUND}, key=schema.labels.__getitem__)
            case_labels[case.name] = names + [n for n in new_classes if n not in names]
    if case_labels:
        raw["case_labels"] = case_labels
    if raw.get("cases_without_auxiliary"):
        # those cases now hold the new classes: case_labels (which takes priority) says which
        raw["cases_without_auxiliary"] = [c for c in raw["cases_without_auxiliary"] if c not in case_labels]
    write_json_atomic(dataset.root / "dataset.json", raw)
