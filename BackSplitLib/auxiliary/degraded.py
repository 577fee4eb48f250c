"""Organ labels degraded the way an automatic organ segmenter errs (issue 20, part B: "automatic auxiliary
labels" without an automatic segmenter in the loop).

:func:`degrade_organs` takes a label map with organ classes and returns it with three kinds of error, each drawn
from the ``numpy.random.Generator`` it is given (seed it per case, e.g. ``np.random.default_rng([seed, i])`` for
the i-th case in name order, and the result is reproducible):

1. **Boundary shifts.** Every organ present is eroded or dilated (SimpleITK ``BinaryErode`` / ``BinaryDilate``,
   ball kernel) by a radius drawn from ``boundary_shift`` (default 1-2 voxels), the sign drawn with even odds.
   Organs are painted back in value order, so a dilated organ covers its later-painted neighbour's edge the way
   an overgrown mask does; voxels no organ covers any more become background.
2. **A neighbour mislabelled.** With probability ``mislabel_probability`` (default 1: in every case), one
   ordered pair of organs (A, B) that touch after step 1 (A lies within ``mislabel_rim`` voxels of B) is drawn,
   and A's voxels within ``mislabel_rim`` voxels of B (default 3) get B's label: a rim of the wrong organ
   where two organs meet. No touching pair: nothing is mislabelled (recorded).
3. **An organ missed.** With probability ``miss_probability`` (default 0.1), one organ present is set to
   background.

The voxels of ``protected`` values (the lesion, an ignore label) are never altered and no error writes into
them: the lesion label stays the ground truth's. What was done is returned beside the map, so a benchmark can
report it. Torch-free (SimpleITK and numpy only), like the rest of ``auxiliary``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from BackSplitLib.auxiliary.labels import AuxiliaryError


@dataclass(frozen=True)
class SegmenterErrors:
    """How much an imitated organ segmenter errs (see the module docstring for each error)."""

    boundary_shift: tuple[int, int] = (1, 2)
    mislabel_probability: float = 1.0
    mislabel_rim: int = 3
    miss_probability: float = 0.1

    def __post_init__(self) -> None:
        low, high = self.boundary_shift
        if not 0 <= low <= high:
            raise AuxiliaryError(f"boundary_shift must be (low, high) voxels with 0 <= low <= high, got {self.boundary_shift}")
        for name in ("mislabel_probability", "miss_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise AuxiliaryError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.mislabel_rim < 1:
            raise AuxiliaryError(f"mislabel_rim must be at least 1 voxel, got {self.mislabel_rim}")


def _morph(mask: np.ndarray, radius: int, dilate: bool) -> np.ndarray:
    if radius == 0:
        return mask
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    operation = sitk.BinaryDilate if dilate else sitk.BinaryErode
    return sitk.GetArrayFromImage(operation(image, [radius] * mask.ndim, sitk.sitkBall, 0, 1)).astype(bool)


def degrade_organs(label: np.ndarray, organs: Mapping[str, int], rng: np.random.Generator,
                   protected: Sequence[int] = (), errors: SegmenterErrors | None = None) -> tuple[np.ndarray, dict]:
    """``label`` (z, y, x) with its ``organs`` (name -> value) degraded as the module docstring says; voxels of
    ``protected`` values are kept. Returns the new map and a record: ``shifts`` (organ -> signed radius,
    + dilated), ``mislabelled`` ([A, B]: A's rim labelled B, or None) and ``missed`` (an organ, or None)."""
    errors = errors or SegmenterErrors()
    label = np.asarray(label)
    keep = np.isin(label, list(protected))
    present = [(name, value) for name, value in sorted(organs.items(), key=lambda item: item[1])
               if np.any(label == value)]
    organ_values = [value for _, value in organs.items()]
    result = np.where(np.isin(label, organ_values), 0, label)
    record: dict = {"shifts": {}, "mislabelled": None, "missed": None}

    for name, value in present:  # 1. boundary shifts, painted in value order
        radius = int(rng.integers(errors.boundary_shift[0], errors.boundary_shift[1] + 1))
        dilate = bool(rng.integers(0, 2))
        result[_morph(label == value, radius, dilate) & ~keep] = value
        record["shifts"][name] = radius if dilate else -radius

    if len(present) > 1 and rng.random() < errors.mislabel_probability:  # 2. a neighbour's rim mislabelled
        near = {value: _morph(result == value, errors.mislabel_rim, True) for _, value in present}
        pairs = [(a, b) for a in present for b in present
                 if a != b and np.any((result == a[1]) & near[b[1]])]
        if pairs:
            (name_a, a), (name_b, b) = pairs[int(rng.integers(0, len(pairs)))]
            result[(result == a) & near[b] & ~keep] = b
            record["mislabelled"] = [name_a, name_b]

    if present and rng.random() < errors.miss_probability:  # 3. an organ missed
        name, value = present[int(rng.integers(0, len(present)))]
        result[(result == value) & ~keep] = 0
        record["missed"] = name

    result[keep] = label[keep]
    return result.astype(label.dtype), record
