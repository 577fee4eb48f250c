"""Colours of the segments the clinician adds: distinct from each other, and the terminology colour once the
name says what the segment is (``BackSplitLib.colors``, the one colour table).

trame-slicer gives a new segment a random colour, so two segments can look alike. The panel controller calls
:func:`color_new_segments` whenever the segments change (Slicer's Segment Editor and the browser's alike):

- a segment the panel has not seen before (no role tag yet) that is still empty was just added by the user:
  it gets :func:`~BackSplitLib.colors.new_segment_color` and the tag ``BackSplit.AutoColor`` = the colour given;
- a segment whose colour is still the one given automatically takes its structure's terminology colour when
  it is renamed to a known name ("Segment_2" -> "liver"); a colour the user picked is never changed.

Segments BackSplit writes itself (``case.set_segment_mask``: cases, predictions, tissue classes) carry
``BackSplit.AutoColor`` = ``given``: their colour comes from a schema and stays. No Qt here.
"""

from __future__ import annotations

import vtk

from BackSplitLib.colors import new_segment_color, structure_color
from BackSplitSlicer.roles import ROLE_TAG, segment_ids

AUTO_COLOR_TAG = "BackSplit.AutoColor"
GIVEN = "given"


def _tag(segment, name: str) -> str:
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else ""


def _rgb(segment) -> tuple:
    return tuple(int(round(255 * c)) for c in segment.GetColor())


def _encode(color) -> str:
    return ",".join(str(int(c)) for c in color)


def _is_empty(segment) -> bool:
    labelmap = segment.GetRepresentation("Binary labelmap")
    if labelmap is None:
        return True
    extent = labelmap.GetExtent()
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        return True
    low, high = labelmap.GetScalarRange()
    value = segment.GetLabelValue()
    return not (low <= value <= high) or high == 0


def mark_color_given(segment) -> None:
    """The segment's colour was chosen on purpose (a schema, a prediction): never recolour it."""
    segment.SetTag(AUTO_COLOR_TAG, GIVEN)


def color_new_segments(segmentation_node) -> bool:
    """Colour newly added segments and renamed auto-coloured ones (see the module docstring); True when a
    colour changed."""
    if segmentation_node is None:
        return False
    segmentation = segmentation_node.GetSegmentation()
    changed = False
    for segment_id in segment_ids(segmentation_node):
        segment = segmentation.GetSegment(segment_id)
        auto = _tag(segment, AUTO_COLOR_TAG)
        if auto == GIVEN:
            continue
        if not auto:
            if _tag(segment, ROLE_TAG) or not _is_empty(segment):
                continue  # the panel saw it before, or it came with content (a loaded file)
            used = [_rgb(segmentation.GetSegment(other)) for other in segment_ids(segmentation_node)
                    if other != segment_id]
            color = new_segment_color(segment.GetName(), used)
        else:
            known = structure_color(segment.GetName())
            if auto != _encode(_rgb(segment)) or known is None or known == _rgb(segment):
                continue  # the user picked this colour, or the name says nothing new
            color = known
        # The colour before the tag: SetTag notifies too, and the tag must never claim a colour not yet shown.
        segment.SetColor(*(c / 255.0 for c in color))
        segment.SetTag(AUTO_COLOR_TAG, _encode(color))
        changed = True
    return changed
