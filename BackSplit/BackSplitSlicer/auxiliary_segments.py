"""Auxiliary structures without drawing: CT tissue classes and imported organ maps, as segments.

The engine's ``BackSplitLib.auxiliary`` does the image work (HU thresholds inside the body, structure-name
matching with groups and globs); this module only moves voxels between MRML nodes and it, and marks the new
segments Auxiliary. Existing segments with the same name are replaced, never duplicated.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

import slicer
from BackSplitLib.auxiliary import TissueRanges, ct_tissue_classes, select_structures
from BackSplitLib.errors import LabelError
from BackSplitLib.io import image_from_array, resample_like

from BackSplitSlicer.case import set_segment_mask, export_segment_mask, volume_geometry
from BackSplitSlicer.roles import AUXILIARY, mark_automatic, segment_names, set_segment_role


def volume_to_sitk(volume_node) -> sitk.Image:
    """A scalar or labelmap volume node as a SimpleITK image (voxels copied, geometry in LPS)."""
    array = np.array(slicer.util.arrayFromVolume(volume_node))
    return image_from_array(array, volume_geometry(volume_node))


def _add_auxiliary(segmentation_node, volume_node, name: str, mask: np.ndarray, color) -> None:
    set_segment_mask(segmentation_node, name, mask, volume_node, tuple(color), True)
    mark_automatic(segmentation_node, name)  # not the clinician's annotation (annotated slices only)
    set_segment_role(segmentation_node, name, AUXILIARY)


def add_ct_tissue_segments(volume_node, segmentation_node, ranges: TissueRanges | None = None) -> list[str]:
    """Add lung_air, fat, soft_tissue and bone segments (HU ranges inside the body); returns their names."""
    auxiliary = ct_tissue_classes(volume_to_sitk(volume_node), ranges)
    labels = auxiliary.array()
    for name, value in auxiliary.classes.items():
        _add_auxiliary(segmentation_node, volume_node, name, labels == value,
                       auxiliary.colors.get(name, (128, 128, 128)))
    return list(auxiliary.classes)


def organ_map_structures(source_node) -> list[str]:
    """Names a labelmap (from its colour table) or a segmentation (its segment names) offers."""
    if source_node.IsA("vtkMRMLSegmentationNode"):
        return segment_names(source_node)
    values = np.unique(slicer.util.arrayFromVolume(source_node))
    display = source_node.GetDisplayNode()
    colors = display.GetColorNode() if display is not None else None
    names = []
    for value in values[values > 0]:
        name = colors.GetColorName(int(value)) if colors is not None else ""
        names.append(name or f"label_{int(value)}")
    return names


def _structure_mask(source_node, structure: str, volume_node) -> np.ndarray:
    """One named structure of the source node on the volume's grid."""
    if source_node.IsA("vtkMRMLSegmentationNode"):
        segment_id = source_node.GetSegmentation().GetSegmentIdBySegmentName(structure)
        return export_segment_mask(source_node, segment_id, volume_node)
    value = organ_map_structures(source_node).index(structure)
    values = np.unique(slicer.util.arrayFromVolume(source_node))
    label_value = int(values[values > 0][value])
    labels = volume_to_sitk(source_node)
    mask = sitk.Cast(labels == label_value, sitk.sitkUInt8)
    geometry = volume_geometry(volume_node)
    reference = image_from_array(np.zeros(tuple(reversed(geometry.size)), np.uint8), geometry)
    return sitk.GetArrayFromImage(resample_like(mask, reference, label=True)).astype(bool)


def import_organ_segments(source_node, volume_node, segmentation_node, structures: str) -> list[str]:
    """Add the requested structures of an organ map as Auxiliary segments; returns the class names added.

    ``structures`` is the engine's request syntax: names, groups ("abdominal organs"), globs ("rib_*"),
    or ``new=a+b`` to merge. Unknown names raise a LabelError listing close matches.
    """
    if source_node is None:
        raise LabelError("choose an organ map (a labelmap or a segmentation) first")
    selection = select_structures(organ_map_structures(source_node), structures, f"'{source_node.GetName()}'")
    added = []
    for class_name, members in selection:
        mask = np.zeros(tuple(reversed(volume_geometry(volume_node).size)), bool)
        for member in members:
            mask |= _structure_mask(source_node, member, volume_node)
        _add_auxiliary(segmentation_node, volume_node, class_name, mask, _stable_color(class_name))
        added.append(class_name)
    return added


def _stable_color(name: str) -> tuple[int, int, int]:
    """A colour that depends on the name only, so re-imports keep their look."""
    from BackSplitLib.colors import class_color

    return class_color(name, sum(map(ord, name)))
