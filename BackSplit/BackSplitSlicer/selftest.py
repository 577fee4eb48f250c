"""The end-to-end flow shared by the pytest suite (plain MRML) and the module's self-test (inside Slicer).

scene (phantom volume + segments with roles) -> export_case -> backend.add_case -> fine_tune -> poll status
-> predict -> import_prediction -> the "BackSplit lesion" segment in the scene. Qt-free: the caller passes a
``wait`` function (``time.sleep`` in pytest; one that also processes Qt events inside Slicer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import vtk

import slicer
from BackSplitLib.errors import BackSplitError
from BackSplitLib.io import Geometry

from BackSplitSlicer.backends import Backend, JobStatus, PredictionResult
from BackSplitSlicer.case import (LESION_SEGMENT_NAME, export_case, ijk_to_ras_matrix, import_prediction,
                                  prediction_mask, prediction_node)

# Printed by a self-test part that cannot run here; ctest's SKIP_REGULAR_EXPRESSION turns it into a skip.
SELFTEST_SKIP_MARKER = "BACKSPLIT-SELFTEST-SKIPPED"
# Small enough for a CPU in seconds; big enough for the network's down-sampling.
SELFTEST_SHAPE = (24, 40, 48)
SELFTEST_ITERATIONS = 4
# Training options that keep the few iterations quick on a CPU.
SELFTEST_TRAINING = {"batch_size": 1, "val_every": 2}


@dataclass
class EndToEndResult:
    job: JobStatus
    prediction: PredictionResult
    segments: dict[str, str]
    output_node: object
    lesion_voxels: int


def add_volume_from_sitk(image: sitk.Image, name: str, scene=None):
    """A scalar volume node with the image's voxels and exact geometry (LPS -> RAS)."""
    scene = scene or slicer.mrmlScene
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    matrix = ijk_to_ras_matrix(Geometry.of(image))
    vtk_matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vtk_matrix.SetElement(r, c, float(matrix[r, c]))
    node.SetIJKToRASMatrix(vtk_matrix)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image).astype(np.float32))
    node.CreateDefaultDisplayNodes()
    return node


def phantom_scene(seed: int = 0, shape: tuple[int, int, int] = SELFTEST_SHAPE, scene=None):
    """The engine's phantom as a volume and a segmentation whose segments are its classes.

    The lesion segment keeps the schema's target name ("lesion") so its default role is Target; the
    organs default to Auxiliary.
    """
    from BackSplitLib.phantom import PHANTOM_SCHEMA, make_phantom

    image, label = make_phantom(seed, shape)
    volume = add_volume_from_sitk(image, "BackSplit phantom", scene)
    segmentation = (scene or slicer.mrmlScene).AddNewNodeByClass("vtkMRMLSegmentationNode", "Phantom segments")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    import_prediction(sitk.GetArrayFromImage(label), volume, segmentation, schema=PHANTOM_SCHEMA,
                      lesion_name=PHANTOM_SCHEMA.target, auxiliary=True, show_3d=False, role=None)
    display = segmentation.GetDisplayNode()
    for i in range(segmentation.GetSegmentation().GetNumberOfSegments()):
        display.SetSegmentVisibility(segmentation.GetSegmentation().GetNthSegmentID(i), True)
    return volume, segmentation


def check_roles_export_and_import(scene=None) -> str:
    """The self-test's Qt-free part: a phantom scene's roles, its export as a case, a prediction imported.

    Raises AssertionError on a wrong result; returns a line for the log.
    """
    from BackSplitSlicer.roles import segment_roles

    volume, segmentation = phantom_scene(scene=scene)
    roles = segment_roles(segmentation)
    assert roles["lesion"] == "target" and roles["liver"] == "auxiliary", roles
    case = export_case(volume, segmentation)
    assert case.label.shape == slicer.util.arrayFromVolume(volume).shape
    lesion = case.label == case.schema.target_value
    assert lesion.sum() > 0, "the exported case has no lesion voxels"
    output = prediction_node(volume)
    import_prediction(lesion.astype(np.uint8), volume, output, show_3d=False)
    back = prediction_mask(output, LESION_SEGMENT_NAME, volume)
    assert np.array_equal(back, lesion), "the imported prediction differs from the exported lesion"
    return f"Roles, export and import passed ({int(lesion.sum())} lesion voxels)"


def wait_for_job(backend: Backend, job: JobStatus, timeout_s: float = 300.0,
                 wait: Callable[[float], None] = time.sleep) -> JobStatus:
    """Poll until the job ends; BackSplitError when it fails or takes too long."""
    deadline = time.monotonic() + timeout_s
    while not job.finished:
        if time.monotonic() > deadline:
            backend.cancel(job.job_id)
            raise BackSplitError(f"training job {job.job_id} did not finish within {timeout_s:.0f} s ({job.describe()})")
        wait(0.5)
        job = backend.status(job.job_id)
    if job.state != "succeeded":
        raise BackSplitError(f"training job {job.job_id} {job.state}: {job.error or job.describe()}")
    return job


def run_end_to_end(volume, segmentation, backend: Backend, iterations: int = SELFTEST_ITERATIONS,
                   training: dict | None = None, timeout_s: float = 300.0,
                   wait: Callable[[float], None] = time.sleep) -> EndToEndResult:
    """Add the case, train a few iterations, predict, and put the lesion segment into the scene."""
    case = export_case(volume, segmentation)
    backend.add_case(case)
    job = backend.fine_tune(iterations=iterations, train_new=True, **(training or SELFTEST_TRAINING))
    job = wait_for_job(backend, job, timeout_s, wait)
    prediction = backend.predict(case, model=job.model_id or "current", classes=True)
    output = prediction_node(volume)
    segments = import_prediction(prediction.classes, volume, output, schema=prediction.schema, show_3d=False)
    lesion = prediction_mask(output, LESION_SEGMENT_NAME, volume)
    return EndToEndResult(job=job, prediction=prediction, segments=segments, output_node=output,
                          lesion_voxels=int(lesion.sum()))
