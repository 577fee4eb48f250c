"""The label schema: which class is the target (the lesion), which are auxiliary, and how they collapse.

One JSON form travels everywhere (dataset.json subset, model.json, the server, the Slicer module)::

    {"labels": {"background": 0, "kidney": 1, "cyst": 2}, "target": "cyst",
     "colors": {"kidney": [185, 102, 83]}}

Class values follow nnU-Net's rules: ``background`` is 0, class values are consecutive, and an optional
``ignore`` label (excluded from the loss) has the highest value. Class identity is the *name*: merging two
schemas, adapting a network head or exporting from Slicer always matches classes by name, never by order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from BackSplitLib.atomic import write_json_atomic
from BackSplitLib.colors import BACKGROUND_COLOR, IGNORE_COLOR, TARGET_COLOR, class_color
from BackSplitLib.errors import LabelError

BACKGROUND = "background"
IGNORE = "ignore"


def label_dtype(max_value: int) -> type[np.unsignedinteger]:
    """The pixel type of a label map whose largest value is ``max_value``: uint8, or uint16 past 255."""
    return np.uint8 if max_value < 256 else np.uint16


def default_color(name: str, index: int) -> tuple[int, int, int]:
    """Colour for a class without one (the target gets ``TARGET_COLOR`` before this is asked): background
    black, ignore grey, else :func:`BackSplitLib.colors.class_color` (terminology colour or palette entry)."""
    if name == BACKGROUND:
        return BACKGROUND_COLOR
    if name == IGNORE:
        return IGNORE_COLOR
    return class_color(name, index)


@dataclass(frozen=True)
class LabelSchema:
    """Classes by name and value, the target class, and display colours.

    ``labels`` maps class name to integer value. ``target`` names the lesion class. Every other class
    except ``background`` and ``ignore`` is auxiliary: trained as its own class and collapsed back into
    background at inference.
    """

    labels: Mapping[str, int]
    target: str
    colors: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = {str(k): _as_int(v, k) for k, v in dict(self.labels).items()}
        object.__setattr__(self, "labels", dict(sorted(labels.items(), key=lambda kv: kv[1])))
        self._validate()
        colors = {}
        for i, name in enumerate(self.labels):
            given = dict(self.colors).get(name)
            if given is not None:
                if len(given) != 3:
                    raise LabelError(f"colour of class '{name}' must be [r, g, b], got {list(given)}")
                colors[name] = tuple(int(c) for c in given)
            else:
                colors[name] = TARGET_COLOR if name == self.target else default_color(name, i)
        object.__setattr__(self, "colors", colors)

    # ---------------------------------------------------------------- validation
    def _validate(self) -> None:
        known = self.describe_classes()
        if self.labels.get(BACKGROUND) != 0:
            raise LabelError(f"the schema needs 'background': 0 (got labels {known})")
        if self.target not in self.labels:
            raise LabelError(
                f"target class '{self.target}' is not in the schema (known: {known})",
                "set \"target\" to one of the label names",
            )
        if self.target in (BACKGROUND, IGNORE):
            raise LabelError(f"the target cannot be '{self.target}'")
        values = list(self.labels.values())
        if len(set(values)) != len(values):
            dup = sorted({v for v in values if values.count(v) > 1})
            raise LabelError(f"label values must be unique; repeated: {dup} in {known}")
        class_values = sorted(v for k, v in self.labels.items() if k != IGNORE)
        if class_values != list(range(len(class_values))):
            raise LabelError(
                f"class values must be consecutive from 0 (nnU-Net's rule); got {known}",
                "renumber the labels 0, 1, 2, ...",
            )
        if IGNORE in self.labels and self.labels[IGNORE] != len(class_values):
            raise LabelError(
                f"the 'ignore' label must have the highest value ({len(class_values)}), got {self.labels[IGNORE]}"
            )

    def describe_classes(self) -> str:
        return ", ".join(f"{v} {k}" for k, v in sorted(self.labels.items(), key=lambda kv: kv[1]))

    # ---------------------------------------------------------------- views
    @property
    def class_names(self) -> list[str]:
        """Trained classes in channel order (value order), without ``ignore``."""
        return [k for k in self.labels if k != IGNORE]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def auxiliary_names(self) -> list[str]:
        return [k for k in self.class_names if k not in (BACKGROUND, self.target)]

    @property
    def target_value(self) -> int:
        return self.labels[self.target]

    @property
    def ignore_value(self) -> int | None:
        return self.labels.get(IGNORE)

    @property
    def is_binary(self) -> bool:
        return not self.auxiliary_names

    def binary(self) -> LabelSchema:
        """The coarsened schema: background and target only (ignore kept)."""
        labels = {BACKGROUND: 0, self.target: 1}
        if IGNORE in self.labels:
            labels[IGNORE] = 2
        return LabelSchema(labels, self.target, {k: v for k, v in self.colors.items() if k in labels})

    @classmethod
    def binary_schema(cls, target: str = "lesion") -> LabelSchema:
        return cls({BACKGROUND: 0, target: 1}, target)

    @classmethod
    def from_names(
        cls, target: str, auxiliary: Iterable[str] = (), ignore: bool = False,
        colors: Mapping[str, Iterable[int]] | None = None,
    ) -> LabelSchema:
        """Build a schema with consecutive values: background, auxiliary classes in order, target, ignore."""
        names = [BACKGROUND, *[a for a in auxiliary if a not in (BACKGROUND, target, IGNORE)], target]
        labels = {n: i for i, n in enumerate(dict.fromkeys(names))}
        if ignore:
            labels[IGNORE] = len(labels)
        return cls(labels, target, {k: tuple(v) for k, v in (colors or {}).items() if k in labels})

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        return {
            "labels": dict(self.labels),
            "target": self.target,
            "colors": {k: list(v) for k, v in self.colors.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "schema") -> LabelSchema:
        if not isinstance(data, Mapping):
            raise LabelError(f"{source}: a label schema must be a JSON object with 'labels' and 'target'")
        if "labels" not in data or not isinstance(data["labels"], Mapping):
            raise LabelError(f"{source}: missing 'labels' (an object of class name -> integer value)")
        if "target" not in data:
            raise LabelError(
                f"{source}: missing 'target' (the lesion class name)",
                f"add \"target\": one of {sorted(k for k in data['labels'] if k not in (BACKGROUND, IGNORE))}",
            )
        try:
            return cls(data["labels"], str(data["target"]), data.get("colors") or {})
        except LabelError as e:
            raise LabelError(f"{source}: {e.message}", e.hint) from None

    def dumps(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def loads(cls, text: str, source: str = "schema") -> LabelSchema:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelError(f"{source} is not valid JSON: {e.msg} at line {e.lineno}") from None
        return cls.from_dict(data, source)

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LabelSchema:
        path = Path(path)
        if not path.is_file():
            raise LabelError(f"schema file {path} does not exist")
        return cls.loads(path.read_text(), str(path))

    # ---------------------------------------------------------------- combining schemas
    def union(self, other: LabelSchema) -> LabelSchema:
        """This schema plus the classes of ``other`` it lacks (matched by name; new ones appended).

        Both must name the same target. Existing values are kept, so label maps written with this schema
        stay valid; ``ignore`` moves to stay the highest value.
        """
        if other.target != self.target:
            raise LabelError(
                f"cannot combine schemas with different targets ('{self.target}' and '{other.target}')",
                "rename the lesion class so both use the same name",
            )
        return self.with_auxiliary([n for n in other.auxiliary_names], ignore=IGNORE in other.labels,
                                   colors=other.colors)

    def with_auxiliary(self, names: Iterable[str], ignore: bool = False,
                       colors: Mapping[str, Iterable[int]] | None = None) -> LabelSchema:
        """Append auxiliary classes that are not there yet; existing values stay, ``ignore`` stays highest."""
        classes = {k: v for k, v in self.labels.items() if k != IGNORE}
        for name in names:
            if name not in classes and name != IGNORE:
                classes[name] = len(classes)
        if ignore or IGNORE in self.labels:
            classes[IGNORE] = len(classes)
        merged_colors = {**{k: tuple(v) for k, v in (colors or {}).items()}, **self.colors}
        return LabelSchema(classes, self.target, {k: v for k, v in merged_colors.items() if k in classes})

    def lookup_from(self, other: LabelSchema, drop_missing: bool = False) -> np.ndarray:
        """Lookup table that maps label values written with ``other`` to values of this schema, by name.

        A class of ``other`` that this schema lacks is an error, or background with ``drop_missing``
        (a partially labelled case's schema keeps only the classes it labels)."""
        missing = [n for n in other.labels if n not in self.labels]
        if missing and not drop_missing:
            raise LabelError(f"classes {missing} are not in the schema (known: {self.describe_classes()})")
        table = np.zeros(max(other.labels.values()) + 1, dtype=np.int64)
        for name, value in other.labels.items():
            table[value] = self.labels.get(name, 0)
        return table

    @property
    def label_dtype(self) -> type[np.unsignedinteger]:
        """The pixel type label maps of this schema are written with (uint8, or uint16 past value 255)."""
        return label_dtype(max(self.labels.values()))

    def relabel(self, label: np.ndarray, source: LabelSchema, drop_missing: bool = False) -> np.ndarray:
        """``label`` (values of ``source``) in this schema's values, by class name, as :attr:`label_dtype`."""
        table = self.lookup_from(source, drop_missing)
        return table[np.asarray(label, dtype=np.int64)].astype(self.label_dtype)

    # ---------------------------------------------------------------- label maps
    def check_label_values(self, label: np.ndarray, source: str = "label map") -> None:
        """Raise LabelError naming any value in ``label`` that the schema does not define."""
        values = np.unique(label)
        unknown = sorted(int(v) for v in values if int(v) not in set(self.labels.values()))
        if unknown:
            shown = ", ".join(map(str, unknown[:5])) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise LabelError(
                f"label value{'s' if len(unknown) > 1 else ''} {shown} in {source} "
                f"{'are' if len(unknown) > 1 else 'is'} not in the schema (known: {self.describe_classes()})",
                "add the classes to dataset.json 'labels' or fix the label map",
            )

    def merge(
        self,
        target_mask: np.ndarray | None,
        auxiliary_masks: Mapping[str, np.ndarray] | None = None,
        ignore_mask: np.ndarray | None = None,
        shape: tuple[int, ...] | None = None,
    ) -> np.ndarray:
        """One label map from binary masks. Target wins over ignore, ignore over auxiliary.

        Auxiliary masks are painted in schema value order, so where two auxiliary masks overlap the
        higher-valued class wins (deterministic, independent of the order the caller passes them).
        """
        auxiliary_masks = dict(auxiliary_masks or {})
        unknown = [n for n in auxiliary_masks if n not in self.auxiliary_names]
        if unknown:
            raise LabelError(
                f"auxiliary masks {unknown} are not auxiliary classes of the schema "
                f"(known: {self.describe_classes()})"
            )
        masks = [m for m in (target_mask, ignore_mask, *auxiliary_masks.values()) if m is not None]
        if shape is None:
            if not masks:
                raise LabelError("merge needs at least one mask or an explicit shape")
            shape = np.shape(masks[0])
        for m in masks:
            if np.shape(m) != tuple(shape):
                raise LabelError(f"mask shapes differ: {np.shape(m)} vs {tuple(shape)}")
        label = np.zeros(shape, dtype=self.label_dtype)
        for name in sorted(auxiliary_masks, key=self.labels.__getitem__):
            label[np.asarray(auxiliary_masks[name], dtype=bool)] = self.labels[name]
        if ignore_mask is not None:
            if self.ignore_value is None:
                raise LabelError("an ignore mask was given but the schema has no 'ignore' label")
            label[np.asarray(ignore_mask, dtype=bool)] = self.ignore_value
        if target_mask is not None:
            label[np.asarray(target_mask, dtype=bool)] = self.target_value
        return label

    def collapse_labels(self, label: np.ndarray) -> np.ndarray:
        """Binary lesion mask (uint8) from a label map: the target is 1, everything else 0."""
        return (np.asarray(label) == self.target_value).astype(np.uint8)

    def target_probability(self, probabilities: np.ndarray, axis: int = 0) -> np.ndarray:
        """P(target) / sum of all class probabilities along ``axis`` (channels in class order)."""
        probabilities = np.asarray(probabilities)
        if probabilities.shape[axis] != self.num_classes:
            raise LabelError(
                f"expected {self.num_classes} class channels ({', '.join(self.class_names)}), "
                f"got {probabilities.shape[axis]}"
            )
        total = probabilities.sum(axis=axis)
        target = np.take(probabilities, self.target_value, axis=axis)
        return target / np.maximum(total, np.finfo(np.float32).tiny)

    def collapse_to_target(self, probabilities: np.ndarray, axis: int = 0, threshold: float = 0.5) -> np.ndarray:
        """Lesion mask: background and every auxiliary probability summed into one non-target
        probability; lesion where the target holds at least ``threshold`` of the total.

        Never an argmax over the split classes: a voxel with P = (0.3 liver, 0.3 kidney, 0.4 lesion) is
        *not* lesion, because 0.6 of the mass says "not lesion".
        """
        return self.target_probability(probabilities, axis) >= threshold


def _as_int(value, name) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
        isinstance(value, float) and float(value).is_integer()
    ):
        raise LabelError(f"label value of '{name}' must be an integer, got {value!r}")
    return int(value)
