"""Dataset folders in nnU-Net v2 layout, plus BackSplit's keys. Torch-free.

::

    DATASET/dataset.json
    DATASET/imagesTr/<case>_0000.nii.gz     DATASET/labelsTr/<case>.nii.gz
    DATASET/imagesTs/<case>_0000.nii.gz     DATASET/labelsTs/<case>.nii.gz   (optional)

dataset.json holds nnU-Net's ``channel_names``, ``labels``, ``numTraining`` and ``file_ending``, plus
``"target"`` (the lesion class), optionally ``"cases_without_auxiliary"`` (their label holds only the
target), ``"case_labels"`` ({case: [class names the case labels]}) and ``"validation"`` ([case, ...]).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from BackSplitLib.atomic import write_json_atomic
from BackSplitLib.errors import DatasetError, LabelError
from BackSplitLib.io import case_name, image_extension
from BackSplitLib.schema import BACKGROUND, IGNORE, LabelSchema

CT_CHANNEL_NAMES = {"ct"}


@dataclass(frozen=True)
class CaseFiles:
    """One case as files, wherever it lives: a dataset folder, the server's store, a Slicer export.

    ``label`` is None for an unlabelled (test or prediction) image; ``labelled`` names the classes the label
    map holds; ``schema`` is the schema its values are written in when the case has its own (an upload, an
    export), None when it uses its dataset's schema. Torch-free: the Slicer module and the server share it.
    """

    name: str
    image: Path
    label: Path | None
    labelled: frozenset[str] = field(default_factory=frozenset)
    schema: LabelSchema | None = None

    @classmethod
    def with_schema(cls, name: str, image: str | Path, label: str | Path, schema: LabelSchema) -> CaseFiles:
        """A labelled case whose label map is written in its own ``schema`` (it labels all of its classes)."""
        return cls(name, Path(image), Path(label), frozenset(schema.class_names), schema)


@dataclass
class Dataset:
    root: Path
    schema: LabelSchema
    channel_names: dict[str, str]
    file_ending: str
    training: list[CaseFiles]
    test: list[CaseFiles]
    validation: list[str] | None
    raw: dict

    @property
    def normalization(self) -> str:
        """nnU-Net's rule: channel named CT -> CT windowing, anything else -> per-image z-score."""
        first = next(iter(self.channel_names.values()), "")
        return "CT" if str(first).lower() in CT_CHANNEL_NAMES else "zscore"

    @classmethod
    def load(cls, root: str | Path, require_training: bool = True) -> Dataset:
        root = Path(root)
        meta_path = root / "dataset.json"
        if not root.is_dir():
            raise DatasetError(f"dataset folder {root} does not exist")
        if not meta_path.is_file():
            raise DatasetError(f"{root} has no dataset.json",
                               "create one (see README, 'Dataset format') or run 'backsplit phantom' for an example")
        try:
            raw = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{meta_path} is not valid JSON: {e.msg} at line {e.lineno}") from None
        if not isinstance(raw, dict):
            raise DatasetError(f"{meta_path} must hold a JSON object")
        if "target" not in raw and isinstance(raw.get("labels"), dict):
            foreground = [k for k in raw["labels"] if k not in (BACKGROUND, IGNORE)]
            if len(foreground) == 1:  # a plain binary nnU-Net dataset: its one class is the target
                raw = {**raw, "target": foreground[0]}
        try:
            schema = LabelSchema.from_dict(raw, str(meta_path))
        except LabelError as e:
            raise DatasetError(e.message, e.hint) from None
        file_ending = str(raw.get("file_ending", ".nii.gz"))
        channel_names = {str(k): str(v) for k, v in (raw.get("channel_names") or {"0": "CT"}).items()}
        if len(channel_names) != 1:
            raise DatasetError(f"{meta_path}: BackSplit supports one input channel, channel_names has {len(channel_names)}")

        without_aux = set(raw.get("cases_without_auxiliary") or [])
        case_labels = raw.get("case_labels") or {}
        all_classes = frozenset(schema.class_names)

        def labelled(case: str) -> frozenset[str]:
            if case in case_labels:
                names = set(case_labels[case]) | {BACKGROUND, schema.target}
                unknown = names - set(schema.labels)
                if unknown:
                    raise DatasetError(f"{meta_path}: case_labels of '{case}' names unknown classes {sorted(unknown)}"
                                       f" (known: {schema.describe_classes()})")
                return frozenset(names - {IGNORE})
            if case in without_aux:
                return frozenset({BACKGROUND, schema.target})
            return all_classes

        training = _collect(root / "imagesTr", root / "labelsTr", file_ending, labelled, require_labels=True)
        test = _collect(root / "imagesTs", root / "labelsTs", file_ending, labelled, require_labels=False)
        if require_training and not training:
            raise DatasetError(f"{root}/imagesTr holds no images ending in {file_ending}",
                               "put <case>_0000" + file_ending + " files there, with labels in labelsTr/")
        validation = raw.get("validation")
        if validation is not None:
            names = {c.name for c in training}
            missing = [v for v in validation if v not in names]
            if missing:
                raise DatasetError(f"{meta_path}: validation cases {missing} are not in imagesTr")
        return cls(root, schema, channel_names, file_ending, training, test, validation, raw)

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[CaseFiles], list[CaseFiles]]:
        """Training and validation cases: dataset.json's ``validation`` list, else a seeded fraction."""
        if self.validation is not None:
            val = [c for c in self.training if c.name in set(self.validation)]
        else:
            n_val = int(round(val_fraction * len(self.training)))
            if val_fraction > 0 and len(self.training) > 1:
                n_val = max(1, n_val)
            n_val = min(n_val, len(self.training) - 1)
            order = sorted(self.training, key=lambda c: c.name)
            random.Random(seed).shuffle(order)
            val = sorted(order[:n_val], key=lambda c: c.name)
        val_names = {c.name for c in val}
        train = [c for c in self.training if c.name not in val_names]
        return train, val


def _collect(images: Path, labels: Path, file_ending: str, labelled, require_labels: bool) -> list[CaseFiles]:
    if not images.is_dir():
        return []
    cases = []
    for path in sorted(images.iterdir()):
        if not path.name.endswith(file_ending) or path.name.startswith("."):
            continue
        stem = path.name[: -len(file_ending)]
        if not stem.endswith("_0000"):
            continue  # other channels: only _0000 is used
        name = case_name(path)
        label = labels / f"{name}{file_ending}"
        if not label.is_file():
            if require_labels:
                raise DatasetError(f"image {path} has no label {label}",
                                   f"add labelsTr/{name}{file_ending} or remove the image")
            label = None
        cases.append(CaseFiles(name, path, label, labelled(name)))
    return cases


def write_dataset_json(root: str | Path, schema: LabelSchema, num_training: int, file_ending: str = ".nii.gz",
                       channel_names: dict[str, str] | None = None, **extra) -> Path:
    """Write dataset.json (nnU-Net v2 keys + BackSplit's ``target`` / ``colors``) and return its path."""
    if not image_extension("x" + file_ending):
        raise DatasetError(f"unsupported file_ending {file_ending}")
    data = {
        "name": extra.pop("name", Path(root).name),
        "channel_names": channel_names or {"0": "CT"},
        "labels": dict(schema.labels),
        "target": schema.target,
        "colors": {k: list(v) for k, v in schema.colors.items()},
        "numTraining": int(num_training),
        "file_ending": file_ending,
        **extra,
    }
    return write_json_atomic(Path(root) / "dataset.json", data)
