"""MR intensity classes inside the body: Otsu multi-thresholds or a 1-D k-means, darkest class first."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from BackSplitLib.auxiliary.labels import AuxiliaryError, AuxiliaryLabels, label_from_masks
from BackSplitLib.auxiliary.masks import mr_body_mask
from BackSplitLib.errors import ImageError


MR_METHODS = ("otsu", "kmeans")


def mr_intensity_classes(image: sitk.Image, n_classes: int, method: str = "otsu",
                         body: sitk.Image | None = None) -> AuxiliaryLabels:
    """``n_classes`` intensity classes inside the MR body mask, darkest first (``mr_class_1`` ...).

    Thresholds come from the body's voxels only (Otsu multi-thresholds or 1-D k-means), so the air
    around the patient does not take a class.
    """
    if not 2 <= int(n_classes) <= 8:
        raise AuxiliaryError(f"--mr-classes must be between 2 and 8, got {n_classes}")
    if method not in MR_METHODS:
        raise AuxiliaryError(f"unknown MR class method '{method}'", f"use one of {', '.join(MR_METHODS)}")
    mr = sitk.Cast(image, sitk.sitkFloat32)
    if body is None:
        body = mr_body_mask(mr)
    body_array = sitk.GetArrayViewFromImage(body).astype(bool)
    values = sitk.GetArrayViewFromImage(mr)[body_array]
    if values.size < n_classes:
        raise ImageError(f"the MR body mask holds {values.size} voxels, too few for {n_classes} classes",
                         "is the image empty or constant?")
    thresholds = otsu_thresholds(values, n_classes) if method == "otsu" else kmeans_thresholds(values, n_classes)
    classes = np.digitize(sitk.GetArrayViewFromImage(mr), thresholds) + 1
    names = [f"mr_class_{i}" for i in range(1, n_classes + 1)]
    masks = [(name, (classes == i) & body_array) for i, name in enumerate(names, start=1)]
    grey = {name: (int(v),) * 3 for name, v in zip(names, np.linspace(60, 230, n_classes))}
    return label_from_masks(masks, image, grey)


def otsu_thresholds(values: np.ndarray, n_classes: int, bins: int = 128) -> np.ndarray:
    """Otsu multi-thresholds of a set of intensities (SimpleITK's filter on a one-row image of them)."""
    row = sitk.GetImageFromArray(np.asarray(values, dtype=np.float32).reshape(1, 1, -1))
    otsu = sitk.OtsuMultipleThresholdsImageFilter()
    otsu.SetNumberOfThresholds(int(n_classes) - 1)
    otsu.SetNumberOfHistogramBins(bins)
    otsu.Execute(row)
    return np.sort(np.asarray(otsu.GetThresholds(), dtype=np.float64))


def kmeans_thresholds(values: np.ndarray, n_classes: int, iterations: int = 50) -> np.ndarray:
    """Thresholds between the sorted centres of a 1-D k-means (centres start at evenly spaced quantiles)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size > 200_000:  # the centres of a subsample are as good and far cheaper
        values = values[:: values.size // 200_000]
    centres = np.quantile(values, (np.arange(n_classes) + 0.5) / n_classes)
    for _ in range(iterations):
        assign = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        updated = np.array([values[assign == k].mean() if np.any(assign == k) else centres[k]
                            for k in range(n_classes)])
        if np.allclose(updated, centres):
            break
        centres = updated
    centres = np.sort(centres)
    return (centres[1:] + centres[:-1]) / 2
