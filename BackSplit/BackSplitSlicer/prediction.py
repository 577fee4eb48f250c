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

from BackSplitSlicer.case import (LESION_SEGMENT_NAME, import_prediction, prediction_mask, prediction_node,
                                  set_segment_mask, volume_geometry)
from BackSplitSlicer.roles import TARGET, role_rows, set_segment_role

ACCEPTED_SEGMENT_NAME = "lesion (from prediction)"
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
    """Put the prediction into the scene; returns the output node and the ids of its (hidden) auxiliary
    segments. The lesion's colour is far from every auxiliary class's (the model's and the prediction's)
    and from the non-target segments of ``segmentation_node`` (what the user sees beside it)."""
    with_classes = auxiliary and result.classes is not None
    output = prediction_node(volume_node, output_node)
    schema = result.schema if with_classes else None
    avoid = [r.color for r in role_rows(segmentation_node) if r.role != TARGET]
    for known in (model_schema, schema):
        avoid += [known.colors[name] for name in known.auxiliary_names] if known is not None else []
    created = import_prediction(result.classes if with_classes else result.mask, volume_node, output,
                                schema=schema, auxiliary=with_classes, lesion_color=lesion_color(avoid))
    return output, [segment_id for name, segment_id in created.items() if name != LESION_SEGMENT_NAME]


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
