"""Tiny real MRML scenes for the Slicer-module tests, and an independent reference for their label maps.

The volume and the segmentation each have their own oblique grid (different rotation and spacing), and
every segment is stored with its own extent, so ``export_case`` must really resample. The expected label map
is computed without Slicer's export: each segment's stored labelmap becomes a SimpleITK image (RAS -> LPS by
hand) and is resampled onto the volume grid with SimpleITK's nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

import slicer

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def rotation(axis, degrees: float) -> np.ndarray:
    """3x3 rotation about ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def ijk_to_ras(direction_ras: np.ndarray, spacing, origin_ras) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = direction_ras * np.asarray(spacing, float)
    matrix[:3, 3] = origin_ras
    return matrix


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


# The volume: 16 x 20 x 24 voxels (slice, row, column), oblique, anisotropic.
VOLUME_SHAPE = (16, 20, 24)
VOLUME_SPACING = (1.3, 0.9, 1.6)  # i, j, k
VOLUME_DIRECTION_RAS = rotation((1, 2, 3), 17.0)
VOLUME_ORIGIN_RAS = np.array([-10.3, 5.7, 12.1])

# The segmentation's grid: another rotation and spacing (as if drawn on another series).
SEG_SPACING = (0.8, 1.1, 1.05)
SEG_DIRECTION_RAS = rotation((0, 1, 1), 31.0) @ VOLUME_DIRECTION_RAS


def volume_ijk_to_ras() -> np.ndarray:
    return ijk_to_ras(VOLUME_DIRECTION_RAS, VOLUME_SPACING, VOLUME_ORIGIN_RAS)


def volume_centre_ras() -> np.ndarray:
    centre_ijk = (np.array(VOLUME_SHAPE[::-1]) - 1) / 2.0
    return (volume_ijk_to_ras() @ np.r_[centre_ijk, 1.0])[:3]


def phantom_image(seed: int = 0) -> np.ndarray:
    """A CT-like float32 volume: soft tissue, two organs, a bright lesion and noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in VOLUME_SHAPE], indexing="ij")
    image = np.full(VOLUME_SHAPE, -100.0, np.float32)
    image[(x**2 + y**2 + z**2) < 0.9] = 40.0
    image[((x + 0.3) ** 2 + y**2 + z**2) < 0.15] = 60.0
    image[((x - 0.35) ** 2 + (y - 0.1) ** 2 + z**2) < 0.12] = 150.0
    image += rng.normal(0, 10, VOLUME_SHAPE).astype(np.float32)
    return image


def add_volume(scene, image: np.ndarray | None = None, name: str = "Phantom CT"):
    """A scalar volume node with the oblique test grid."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(vtk_matrix(volume_ijk_to_ras()))
    slicer.util.updateVolumeFromArray(node, phantom_image() if image is None else image)
    node.CreateDefaultDisplayNodes()
    return node


@dataclass
class Blob:
    """A segment: an ellipsoid around a RAS point (mm semi-axes), stored on a box of the segmentation grid."""

    name: str
    centre_ras: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    margin: int = 2  # zero voxels around the blob inside its stored extent


def blob_oriented_image(blob: Blob) -> slicer.vtkOrientedImageData:
    """The blob rasterised on the segmentation grid, with an extent just around it (not starting at 0)."""
    grid_to_ras = ijk_to_ras(SEG_DIRECTION_RAS, SEG_SPACING, np.zeros(3))
    ras_to_grid = np.linalg.inv(grid_to_ras)
    centre_ijk = (ras_to_grid @ np.r_[blob.centre_ras, 1.0])[:3]
    half = np.ceil(np.max(blob.radii_mm) / np.min(SEG_SPACING)) + blob.margin
    lo = np.floor(centre_ijk - half).astype(int)
    hi = np.ceil(centre_ijk + half).astype(int)
    kk, jj, ii = np.meshgrid(*[np.arange(lo[a], hi[a] + 1) for a in (2, 1, 0)], indexing="ij")
    ijk = np.stack([ii, jj, kk, np.ones_like(ii)], axis=-1).reshape(-1, 4).T.astype(float)
    ras = (grid_to_ras @ ijk)[:3].T - np.asarray(blob.centre_ras)
    inside = (((ras / np.asarray(blob.radii_mm)) ** 2).sum(axis=1) <= 1.0).reshape(kk.shape)
    image = slicer.vtkOrientedImageData()
    image.SetExtent(int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2]))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = inside.ravel().astype(np.uint8)
    image.SetImageToWorldMatrix(vtk_matrix(grid_to_ras))
    return image


def add_segmentation(scene, blobs: list[Blob], name: str = "Segmentation"):
    """A segmentation node whose segments keep their own oblique labelmaps and extents."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    segmentation = node.GetSegmentation()
    segmentation.SetSourceRepresentationName(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    for i, blob in enumerate(blobs):
        segment = slicer.vtkSegment()
        segment.SetName(blob.name)
        segment.SetColor(0.2 + 0.1 * i, 0.5, 0.9 - 0.1 * i)
        segment.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(),
                                  blob_oriented_image(blob))
        segmentation.AddSegment(segment)
    return node


def standard_blobs() -> list[Blob]:
    """Overlapping structures around the volume centre: a cyst inside the kidney, kidney touching liver."""
    c = volume_centre_ras()
    return [
        Blob("Kidney", tuple(c + [2.0, -1.0, 0.5]), (7.0, 5.0, 6.0)),
        Blob("Liver", tuple(c + [-6.0, 2.0, -1.0]), (8.0, 6.5, 5.5)),
        Blob("Cyst", tuple(c + [3.0, -1.5, 1.0]), (2.6, 2.2, 2.4)),
        Blob("Tumor 2", tuple(c + [-7.0, 3.0, -1.0]), (2.2, 2.0, 2.5)),
        Blob("Table", tuple(c + [0.0, 8.5, 0.0]), (9.0, 1.6, 9.0)),
        Blob("Notes", tuple(c + [0.0, 0.0, 0.0]), (4.0, 4.0, 4.0)),
    ]


# ------------------------------------------------------------------------------- independent reference
def volume_reference_sitk() -> sitk.Image:
    """The volume grid as a SimpleITK image, built from the test constants (not from the code under test)."""
    image = sitk.Image(*VOLUME_SHAPE[::-1], sitk.sitkUInt8)
    image.SetSpacing(VOLUME_SPACING)
    image.SetOrigin(tuple(RAS_TO_LPS @ VOLUME_ORIGIN_RAS))
    image.SetDirection(tuple((RAS_TO_LPS @ VOLUME_DIRECTION_RAS).ravel()))
    return image


def stored_segment_sitk(segmentation_node, segment_name: str) -> sitk.Image:
    """The segment's own stored labelmap (its geometry and extent) as a SimpleITK image in LPS."""
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
    segment = segmentation.GetSegment(segment_id)
    labelmap = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    extent = labelmap.GetExtent()
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1])
    mask = (values == segment.GetLabelValue()).astype(np.uint8)
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    origin_ras = (m @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(RAS_TO_LPS @ origin_ras))
    image.SetDirection(tuple((RAS_TO_LPS @ (m[:3, :3] / spacing)).ravel()))
    return image


def expected_mask(segmentation_node, segment_name: str) -> np.ndarray:
    """The segment on the volume grid by SimpleITK nearest-neighbour resampling."""
    resampled = sitk.Resample(stored_segment_sitk(segmentation_node, segment_name), volume_reference_sitk(),
                              sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(resampled).astype(bool)


def add_label_map_segmentation(scene, volume, labels: np.ndarray, names: dict[int, str], name: str = "Organ map"):
    """A segmentation imported from a label map on ``volume``'s grid (as a TotalSegmentator result is): every
    segment shares one binary-labelmap layer. Segments are named by label value with ``names``."""
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__labels__")
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    labelmap.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(labelmap, labels)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node)
    scene.RemoveNode(labelmap)
    segmentation = node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetSegment(segmentation.GetNthSegmentID(i))
        segment.SetName(names[segment.GetLabelValue()])
    return node
