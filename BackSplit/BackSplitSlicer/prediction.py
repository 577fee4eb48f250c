"""A prediction in the panel: what is sent, what comes back and how it is measured, how it enters the scene, and
how the clinician turns it into a label to correct ("correct and send back", MONAI Label's loop).

No Qt. ``predict_and_measure`` runs in the panel's worker thread (network and SimpleITK only); the others
touch MRML and run on the main thread.
"""

from __future__ import annotations

import numpy as np

from BackSplitLib.errors import BackSplitError
from BackSplitLib.io import image_from_array
from BackSplitLib.metrics import lesion_findings

from BackSplitSlicer.case import (LESION_SEGMENT_NAME, PREDICTION_NODE_NAME, import_prediction, prediction_mask,
                                  prediction_node, set_segment_mask, volume_geometry)
from BackSplitSlicer.roles import TARGET, role_rows, set_segment_role

ACCEPTED_SEGMENT_NAME = "lesion (from prediction)"
AUXILIARY_NODE_NAME = PREDICTION_NODE_NAME + " (auxiliary)"
# Candidate colours for the predicted lesion, yellow first; the one farthest from every colour already on
# screen (auxiliary classes, the user's segments) is used, so the lesion is never confused with a neighbour
# (yellow beside "fat" (230, 220, 70) was).
LESION_COLOR_CHOICES = ((255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0), (0, 128, 255))


def volume_image(volume_node):
    """The volume's voxels and grid as a SimpleITK float32 image (a copy: the worker thread never reads MRML)."""
    from slicer.util import arrayFromVolume

    return image_from_array(np.array(arrayFromVolume(volume_node), dtype=np.float32), volume_geometry(volume_node))


def predict_and_measure(backend, image, model: str, classes: bool):
    """The backend's prediction and what it holds (``metrics.lesion_findings``), both off the UI thread."""
    result = backend.predict(image, model=model, classes=classes)
    return result, lesion_findings(result.mask)


def lesion_color(avoid) -> tuple[int, int, int]:
    """The choice farthest (in RGB) from every colour in ``avoid``."""
    avoid = [tuple(c) for c in avoid]
    if not avoid:
        return LESION_COLOR_CHOICES[0]
    return max(LESION_COLOR_CHOICES,
               key=lambda c: min(sum((a - b) ** 2 for a, b in zip(c, other)) for other in avoid))


def show_prediction(result, volume_node, output_node, auxiliary: bool, segmentation_node=None, model_schema=None):
    """Put the prediction into the scene; returns the output node, the node of the (hidden) auxiliary classes
    (None without them) and their segment ids.

    The lesion (2D and a 3D surface) goes into ``output_node`` (a new "BackSplit prediction" without one), in
    a colour far from every auxiliary class's (the model's and the prediction's) and from the non-target
    segments of ``segmentation_node`` (what the user sees beside it). The auxiliary classes go into a node of
    their own, "BackSplit prediction (auxiliary)", without 3D surfaces: a segmentation builds a surface for
    every segment once it has one, and for a chest CT's hidden classes that took longer than the prediction.
    """
    with_classes = auxiliary and result.classes is not None
    output = prediction_node(volume_node, output_node)
    schema = result.schema if with_classes else None
    avoid = [r.color for r in role_rows(segmentation_node) if r.role != TARGET]
    for known in (model_schema, schema):
        avoid += [known.colors[name] for name in known.auxiliary_names] if known is not None else []
    import_prediction(result.mask, volume_node, output, lesion_color=lesion_color(avoid))
    if not with_classes:
        return output, None, []
    scene = volume_node.GetScene()
    holder = scene.GetFirstNodeByName(AUXILIARY_NODE_NAME) if scene is not None else None
    if holder is None or not holder.IsA("vtkMRMLSegmentationNode"):
        holder = prediction_node(volume_node)
        holder.SetName(AUXILIARY_NODE_NAME)
    created = import_prediction(result.classes, volume_node, holder, schema=schema, auxiliary=True, show_3d=False)
    holder.GetSegmentation().RemoveSegment(created.pop(LESION_SEGMENT_NAME))  # the lesion is in ``output``
    return output, holder, list(created.values())


def show_segments(output_node, segment_ids, shown: bool) -> bool:
    """Show or hide the segments of ``output_node`` that still exist; False when there is no such node."""
    display = output_node.GetDisplayNode() if output_node is not None else None
    if display is None:
        return False
    for segment_id in segment_ids:
        if output_node.GetSegmentation().GetSegment(segment_id) is not None:
            display.SetSegmentVisibility(segment_id, shown)
    return True


def accept_prediction(output_node, segmentation_node, volume_node) -> str:
    """Copy the predicted lesion into ``segmentation_node`` as a Target segment (replacing an earlier copy)."""
    if output_node is None:
        raise BackSplitError("there is no prediction yet", "click Predict first")
    mask = prediction_mask(output_node, LESION_SEGMENT_NAME, volume_node)
    if not mask.any():
        raise BackSplitError("the prediction found no lesion: there is nothing to correct",
                             "paint the lesion with the segment editor and set its role to Target")
    segment = output_node.GetSegmentation().GetSegment(
        output_node.GetSegmentation().GetSegmentIdBySegmentName(LESION_SEGMENT_NAME))
    color = tuple(int(round(255 * c)) for c in segment.GetColor())
    set_segment_mask(segmentation_node, ACCEPTED_SEGMENT_NAME, mask, volume_node, color, True)
    set_segment_role(segmentation_node, ACCEPTED_SEGMENT_NAME, TARGET)
    display = output_node.GetDisplayNode()
    if display is not None:  # the editable copy is what the user sees and corrects
        display.SetVisibility(False)
    return ACCEPTED_SEGMENT_NAME
