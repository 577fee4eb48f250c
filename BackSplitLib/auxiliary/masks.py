"""Body masks for CT and MR (SimpleITK filters, sizes in millimetres): the region auxiliary classes live in."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from BackSplitLib.io import image_from_array


def _radius_voxels(image: sitk.Image, radius_mm: float) -> list[int]:
    """A physical radius as whole voxels per axis (at least 1), so morphology means the same in mm."""
    return [max(1, int(round(radius_mm / s))) for s in image.GetSpacing()]


def largest_component(mask: sitk.Image) -> sitk.Image:
    """The largest 26-connected component of a binary mask (empty in, empty out)."""
    components = sitk.ConnectedComponent(mask, True)
    ranked = sitk.RelabelComponent(components, sortByObjectSize=True)
    return sitk.Cast(ranked == 1, sitk.sitkUInt8)


def _superior_axis(image: sitk.Image) -> int:
    """Index axis (x=0, y=1, z=2) that runs closest to the patient's head-feet axis (axial slices)."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return int(np.argmax(np.abs(direction[2, :])))


def fill_holes_slicewise(mask: sitk.Image) -> sitk.Image:
    """Fill holes in every axial slice, then in 3D.

    Slice-wise because lungs and bowel gas reach the volume's top or bottom face (trachea, cropped scans):
    a 3D fill alone would leave them open.
    """
    array = sitk.GetArrayFromImage(mask).astype(np.uint8)
    numpy_axis = 2 - _superior_axis(mask)  # SimpleITK arrays are (z, y, x)
    moved = np.moveaxis(array, numpy_axis, 0)
    for k in range(moved.shape[0]):
        moved[k] = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(moved[k]), True, 1))
    filled = image_from_array(array, mask)
    return sitk.BinaryFillhole(filled, True, 1)


def ct_body_mask(image: sitk.Image, threshold: float = -500.0, table_opening_mm: float = 6.0) -> sitk.Image:
    """The patient's body in a CT (uint8 0/1): largest component above ``threshold`` HU, table removed,
    holes (lungs, bowel gas) filled.

    The scanner table touches the body only through thin cushions and straps, so an opening of
    ``table_opening_mm`` cuts it off before the largest component is kept; a dilation of the kept
    component, limited to voxels above threshold, gives back the skin the opening shaved.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)  # so that open-ended HU bounds fit the pixel type
    above = binary_threshold(image, threshold, 1e30)
    radius = _radius_voxels(image, table_opening_mm)
    body = largest_component(sitk.BinaryMorphologicalOpening(above, radius, sitk.sitkBall))
    if not _any(body):  # a tiny or very thin object: opening removed everything
        body = largest_component(above)
    if not _any(body):
        return body
    body = sitk.And(sitk.BinaryDilate(body, radius, sitk.sitkBall), above)
    return fill_holes_slicewise(largest_component(body))


def mr_body_mask(image: sitk.Image, opening_mm: float = 3.0) -> sitk.Image:
    """The body in an MR (uint8 0/1): Otsu foreground, small bridges opened, largest component, holes filled."""
    foreground = sitk.OtsuThreshold(sitk.Cast(image, sitk.sitkFloat32), 0, 1)
    radius = _radius_voxels(image, opening_mm)
    body = largest_component(sitk.BinaryMorphologicalOpening(foreground, radius, sitk.sitkBall))
    if not _any(body):
        body = largest_component(foreground)
    return fill_holes_slicewise(body) if _any(body) else body


def _any(mask: sitk.Image) -> bool:
    return bool(np.any(sitk.GetArrayViewFromImage(mask)))


def binary_threshold(image: sitk.Image, low: float, high: float) -> sitk.Image:
    return sitk.BinaryThreshold(image, float(low), float(high), 1, 0)
