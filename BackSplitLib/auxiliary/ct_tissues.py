"""CT tissue classes from Hounsfield units inside the body: lung/air, fat, soft tissue, bone."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from BackSplitLib.auxiliary.labels import AuxiliaryError, AuxiliaryLabels, Color, label_from_masks
from BackSplitLib.auxiliary.masks import binary_threshold, ct_body_mask
from BackSplitLib.colors import structure_color
from BackSplitLib.errors import ImageError
from BackSplitLib.vocabulary import could_be_hounsfield


@dataclass(frozen=True)
class TissueRanges:
    """HU ranges (inclusive) of the CT tissue classes and the body-mask settings.

    Defaults follow common CT practice: fat -190..-30 HU, soft tissue -29..150 HU (organs, muscle,
    unenhanced vessels), cortical/trabecular bone above 250 HU; air inside the body below -400 HU.
    Between 150 and 250 HU (enhanced vessels, dense contrast) no class is assigned on purpose.
    """

    lung_air: tuple[float, float] = (-1e30, -400.0)
    fat: tuple[float, float] = (-190.0, -30.0)
    soft_tissue: tuple[float, float] = (-29.0, 150.0)
    bone: tuple[float, float] = (250.0, 1e30)
    body_threshold: float = -500.0
    table_opening_mm: float = 6.0
    bone_min_volume_mm3: float = 100.0  # smaller bright specks are calcifications or noise, not bone

    def __post_init__(self) -> None:
        for name in TISSUE_CLASSES:
            low, high = getattr(self, name)
            if not low <= high:
                raise AuxiliaryError(f"HU range of {name} is empty ({low}..{high}); give LOW <= HIGH")

    def with_ranges(self, overrides: Mapping[str, tuple[float | None, float | None]]) -> TissueRanges:
        """A copy with some ranges replaced; ``None`` keeps that bound."""
        values = {}
        for name, (low, high) in overrides.items():
            if name not in TISSUE_CLASSES:
                raise AuxiliaryError(f"unknown tissue class '{name}' in an HU range",
                                     f"use one of {', '.join(TISSUE_CLASSES)}")
            old_low, old_high = getattr(self, name)
            values[name] = (old_low if low is None else float(low), old_high if high is None else float(high))
        return TissueRanges(**{**self.__dict__, **values})


TISSUE_CLASSES = ("lung_air", "fat", "soft_tissue", "bone")
# Slicer's terminology colours (colors.STRUCTURE_COLORS), so the classes look familiar in the Segment Editor.
TISSUE_COLORS: dict[str, Color] = {name: structure_color(name) for name in TISSUE_CLASSES}


def parse_hu_ranges(specs: Iterable[str]) -> dict[str, tuple[float | None, float | None]]:
    """``["fat=-200:-40", "bone=300:"]`` -> ``{"fat": (-200, -40), "bone": (300, None)}`` (CLI helper)."""
    ranges: dict[str, tuple[float | None, float | None]] = {}
    for spec in specs:
        match = re.fullmatch(r"\s*(\w+)\s*=\s*(-?[\d.]*)\s*:\s*(-?[\d.]*)\s*", spec)
        if not match:
            raise AuxiliaryError(f"cannot read HU range '{spec}'",
                                 "write NAME=LOW:HIGH, e.g. fat=-190:-30 or bone=300:")
        name, low, high = match.groups()
        try:
            ranges[name] = (float(low) if low else None, float(high) if high else None)
        except ValueError:
            raise AuxiliaryError(f"cannot read HU range '{spec}'", "LOW and HIGH must be numbers") from None
    return ranges


def ct_tissue_classes(image: sitk.Image, ranges: TissueRanges | None = None,
                      body: sitk.Image | None = None) -> AuxiliaryLabels:
    """CT tissue classes from HU inside the body: ``lung_air``, ``fat``, ``soft_tissue``, ``bone``.

    ``image`` must be in Hounsfield units. ``body`` (uint8 mask on the same grid) defaults to
    :func:`ct_body_mask`.
    """
    ranges = ranges or TissueRanges()
    check_ct_units(image)
    ct = sitk.Cast(image, sitk.sitkFloat32)
    if body is None:
        body = ct_body_mask(ct, ranges.body_threshold, ranges.table_opening_mm)
    body_array = sitk.GetArrayViewFromImage(body).astype(bool)

    bone = binary_threshold(ct, *ranges.bone)
    voxel_mm3 = float(np.prod(image.GetSpacing()))
    min_voxels = int(np.ceil(ranges.bone_min_volume_mm3 / voxel_mm3))
    bone = sitk.RelabelComponent(sitk.ConnectedComponent(bone, True), min_voxels) > 0

    masks = [(name, sitk.GetArrayViewFromImage(binary_threshold(ct, *getattr(ranges, name))).astype(bool) & body_array)
             for name in ("lung_air", "fat", "soft_tissue")]
    masks.append(("bone", sitk.GetArrayViewFromImage(bone).astype(bool) & body_array))
    return label_from_masks(masks, image, TISSUE_COLORS)


def check_ct_units(image: sitk.Image) -> None:
    """Refuse images that cannot be in HU: every body region has fat, and fat is negative."""
    minimum = float(sitk.GetArrayViewFromImage(image).min())
    if not could_be_hounsfield(minimum):
        raise ImageError(
            f"the image has no negative values (minimum {minimum:g}), so it is not a CT in Hounsfield units",
            "for MR use --mr-classes N; for CT apply the DICOM rescale slope/intercept first",
        )
