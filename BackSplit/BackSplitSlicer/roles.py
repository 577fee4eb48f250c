"""Segment roles: which segments are the lesion, which are auxiliary structures, which are ignored.

A role is stored on the segment itself, in the tag ``BackSplit.Role``, so it is saved in the
``.seg.nrrd`` and survives reloading the scene. Segments without the tag get a default from their name, and
the panel writes that default into the tag (:func:`write_default_roles`), so the role a row shows is the
role the saved file carries. Defaults: Target for the lesion words of ``vocabulary.LESION_WORDS``; Unused for
an unnamed segment ("Segment_1": teaching an unknown segment as background is the unsafe choice) and for
BackSplit's own predictions; Auxiliary for other names (organs, tissues).
Segments made by an automatic source (CT tissue classes, an organ map) carry ``BackSplit.Source`` =
``automatic``: they are not the clinician's annotation (``case.export_case``'s annotated slices).
No Qt here: only the segmentation node's MRML API.
"""

from __future__ import annotations

import re

import vtk

from BackSplitLib.errors import LabelError
from BackSplitLib.vocabulary import LESION_WORDS

ROLE_TAG = "BackSplit.Role"
SOURCE_TAG = "BackSplit.Source"
AUTOMATIC = "automatic"

TARGET = "target"
AUXILIARY = "auxiliary"
IGNORE = "ignore"
UNUSED = "unused"
ROLES = (TARGET, AUXILIARY, IGNORE, UNUSED)

# A lesion word at a word start; words of four letters or fewer ("met", "mass", "ggo") only as whole words.
_TARGET_PATTERN = re.compile(r"(?:^|[^a-z])(?:" + "|".join(
    re.escape(w) + (r"(?![a-z])" if len(w) <= 4 else "") for w in LESION_WORDS) + ")", re.IGNORECASE)
# Names Slicer and trame-slicer give a new segment ("Segment_1", "Segment 2").
_UNNAMED_PATTERN = re.compile(r"^\s*(segment[\s_-]*\d*)?\s*$", re.IGNORECASE)


# BackSplit's own predictions ("BackSplit lesion", ...): never training labels unless the user says so.
PREDICTION_PREFIX = "BackSplit "


def default_role(segment_name: str) -> str:
    """Unused for BackSplit's predictions and unnamed segments; Target for lesion words; else Auxiliary."""
    name = segment_name or ""
    if name.startswith(PREDICTION_PREFIX) or _UNNAMED_PATTERN.match(name):
        return UNUSED
    return TARGET if _TARGET_PATTERN.search(name) else AUXILIARY


def _segment_by_name(segmentation_node, segment_name: str):
    """The segment called ``segment_name``; LabelError naming the known segments if there is none."""
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
    if not segment_id:
        known = ", ".join(repr(n) for n in segment_names(segmentation_node)) or "none"
        raise LabelError(f"segmentation '{segmentation_node.GetName()}' has no segment named "
                         f"'{segment_name}' (segments: {known})")
    return segmentation.GetSegment(segment_id)


def segment_ids(segmentation_node) -> list[str]:
    """Segment ids in display order."""
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def segment_names(segmentation_node) -> list[str]:
    """Segment names in display order (the order is for display only: classes go by name)."""
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetSegment(sid).GetName() for sid in segment_ids(segmentation_node)]


def segment_role(segment) -> str:
    """Role of one vtkSegment: its tag when valid, else the default from its name."""
    tag = _read_tag(segment)
    return tag if tag in ROLES else default_role(segment.GetName())


def segment_roles(segmentation_node) -> dict[str, str]:
    """``{segment name: role}`` for every segment, in display order."""
    segmentation = segmentation_node.GetSegmentation()
    return {segmentation.GetSegment(sid).GetName(): segment_role(segmentation.GetSegment(sid))
            for sid in segment_ids(segmentation_node)}


def set_segment_role(segmentation_node, segment_name: str, role: str) -> None:
    """Store ``role`` in the segment's ``BackSplit.Role`` tag (saved with the segmentation)."""
    role = str(role).strip().lower()
    if role not in ROLES:
        raise LabelError(f"unknown segment role '{role}'", f"use one of {', '.join(ROLES)}")
    segment = _segment_by_name(segmentation_node, segment_name)
    segment.SetTag(ROLE_TAG, role)
    # Segment tags do not notify the node on their own; the role table and the storage node need it.
    segmentation_node.Modified()


def write_default_roles(segmentation_node) -> None:
    """Write each untagged segment's default role into its tag (a segment renamed before it was tagged keeps
    the role it showed). No event is sent: the caller is already redrawing."""
    if segmentation_node is None:
        return
    segmentation = segmentation_node.GetSegmentation()
    for segment_id in segment_ids(segmentation_node):
        segment = segmentation.GetSegment(segment_id)
        if _read_tag(segment) not in ROLES:
            segment.SetTag(ROLE_TAG, default_role(segment.GetName()))


def mark_automatic(segmentation_node, segment_name: str) -> None:
    """Say that a segment came from an automatic source, not from the clinician's brush."""
    _segment_by_name(segmentation_node, segment_name).SetTag(SOURCE_TAG, AUTOMATIC)


def is_automatic(segment) -> bool:
    return _read_tag(segment, SOURCE_TAG) == AUTOMATIC


def _read_tag(segment, tag: str = ROLE_TAG) -> str:
    # vtkSegment.GetTag(name, value) fills an out-parameter in C++; Python wrapping takes a string holder.
    value = vtk.reference("")
    if segment.GetTag(tag, value):
        return str(value).strip().lower()
    return ""


def role_rows(segmentation_node) -> list:
    """The roles table: a RoleRow (id, name, colour 0..255, role) per segment, in display order."""
    from BackSplitSlicer.panel_state import RoleRow

    if segmentation_node is None:
        return []
    segmentation = segmentation_node.GetSegmentation()
    rows = []
    for segment_id in segment_ids(segmentation_node):
        segment = segmentation.GetSegment(segment_id)
        color = tuple(int(round(255 * c)) for c in segment.GetColor())
        rows.append(RoleRow(segment_id, segment.GetName(), color, segment_role(segment)))
    return rows
