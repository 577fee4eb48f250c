"""What every auxiliary-label generator returns: a label map on the image's grid and its classes.

Values 1..K are the classes in order, so ``LabelSchema.from_names(target, classes)`` describes the map
without remapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from BackSplitLib.errors import BackSplitError, LabelError
from BackSplitLib.io import image_from_array
from BackSplitLib.schema import LabelSchema, label_dtype

Color = tuple[int, int, int]


class AuxiliaryError(BackSplitError):
    """Automatic auxiliary labels cannot be made (a tool or its weights are missing, bad options)."""


@dataclass
class AuxiliaryLabels:
    """An auxiliary label map (uint8/uint16, same grid as the image) and its classes.

    ``classes`` maps class name -> value in ``label``; values are 1..K in order, 0 is "no class".
    """

    label: sitk.Image
    classes: dict[str, int]
    colors: dict[str, Color] = field(default_factory=dict)

    def schema(self, target: str = "lesion") -> LabelSchema:
        """The engine schema for this map: background, these classes (same values), then the target."""
        if target in self.classes:
            raise LabelError(f"the target name '{target}' is also an auxiliary class name",
                             "choose another --target name")
        schema = LabelSchema.from_names(target, list(self.classes), colors=self.colors)
        assert all(schema.labels[n] == v for n, v in self.classes.items()), "class values must be 1..K in order"
        return schema

    def array(self) -> np.ndarray:
        return sitk.GetArrayFromImage(self.label)

    def voxel_counts(self) -> dict[str, int]:
        counts = np.bincount(self.array().ravel(), minlength=len(self.classes) + 1)
        return {name: int(counts[value]) for name, value in self.classes.items()}


def label_from_masks(masks: Sequence[tuple[str, np.ndarray]], reference: sitk.Image,
                      colors: Mapping[str, Color] | None = None) -> AuxiliaryLabels:
    """Paint boolean (z, y, x) masks in order (a later mask wins where they overlap) as values 1..K."""
    array = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=label_dtype(len(masks)))
    classes: dict[str, int] = {}
    for value, (name, mask) in enumerate(masks, start=1):
        array[mask] = value
        classes[name] = value
    label = image_from_array(array, reference)
    return AuxiliaryLabels(label, classes, {k: tuple(v) for k, v in (colors or {}).items() if k in classes})
