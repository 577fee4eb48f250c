"""Fill between slices: the slices between painted ones, filled by ITK's morphological contour interpolation
(Albu et al. 2008), the algorithm of Slicer's "Fill between slices" effect.

SimpleITK does not wrap the filter; the PyPI package ``itk-morphologicalcontourinterpolation`` does (it
brings ITK's Python wrapping, ~1.5 GB installed; the first call loads it in ~10 s). Inside Slicer the Segment
Editor's own effect does the same; the browser app, which has no such effect, calls this. No Qt here.
"""

from __future__ import annotations

import numpy as np

from BackSplitLib.errors import BackSplitError

from BackSplitSlicer.case import export_segment_mask, set_segment_mask
from BackSplitSlicer.roles import TARGET, segment_ids, segment_role

ITK_PACKAGE = "itk-morphologicalcontourinterpolation"
SLICE_AXIS_ITK = 2  # k: array axis 0 is ITK's third index axis


def interpolate_slices(mask: np.ndarray) -> np.ndarray:
    """``mask`` (slice, row, column) with the slices between painted ones filled, along the slice axis."""
    try:
        import itk
    except ImportError:
        raise BackSplitError(f"filling between slices needs ITK's morphological contour interpolation, which is "
                             f"not installed here", f"pip install {ITK_PACKAGE}; in Slicer use the Segment "
                             "Editor's 'Fill between slices' effect") from None
    interpolator = itk.MorphologicalContourInterpolator.New(itk.image_from_array(mask.astype(np.uint8)))
    interpolator.SetAxis(SLICE_AXIS_ITK)
    interpolator.Update()
    return itk.array_from_image(interpolator.GetOutput()) != 0


def fill_between_slices(segmentation_node, volume_node, segment_id: str | None = None) -> tuple[str, int, int]:
    """Fill ``segment_id`` (or the only Target segment) between its painted slices, in place; returns its
    name and the painted slice counts before and after."""
    segmentation = segmentation_node.GetSegmentation()
    if not segment_id:
        targets = [s for s in segment_ids(segmentation_node) if segment_role(segmentation.GetSegment(s)) == TARGET]
        if len(targets) != 1:
            raise BackSplitError("choose the segment to fill" if targets else "there is no Target segment to fill",
                                 "select one segment in the segment editor")
        segment_id = targets[0]
    segment = segmentation.GetSegment(segment_id)
    if segment is None:
        raise BackSplitError("that segment no longer exists", "select a segment in the segment editor")
    mask = export_segment_mask(segmentation_node, segment_id, volume_node)
    before = int(mask.any(axis=(1, 2)).sum())
    if before < 2:
        raise BackSplitError(f"'{segment.GetName()}' is painted on {before} slice(s): there is nothing between",
                             "paint the lesion on two or more slices, with gaps between them")
    filled = interpolate_slices(mask) | mask
    color = tuple(int(round(255 * c)) for c in segment.GetColor())
    set_segment_mask(segmentation_node, segment.GetName(), filled, volume_node, color, True)
    return segment.GetName(), before, int(filled.any(axis=(1, 2)).sum())
