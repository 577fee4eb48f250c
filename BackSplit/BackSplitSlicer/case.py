"""MRML <-> arrays: a Slicer volume and its segments become one training case; a prediction becomes segments.

``export_case`` turns a volume node and a segmentation node into a :class:`Case` (image, multi-class label,
geometry, schema). Class values come from segment *names* and roles, never from segment order. Segments
that share a binary-labelmap layer cannot overlap, so each layer is resampled onto the volume's voxel grid
once and its label values are mapped to class values in one pass (a TotalSegmentator map with ~100 segments
is one layer: one pass, not one full-size labelmap per segment); layers are then composed with the engine's
``LabelSchema.merge`` precedence, so the lesion wins wherever it overlaps an auxiliary structure (Slicer's
own multi-segment export would let whichever segment comes later win).

``import_prediction`` does the reverse: a lesion mask (or a class map with its schema) becomes segments whose
binary labelmaps have exactly the volume's geometry.

Geometry: Slicer works in RAS, SimpleITK (and so the engine and the server) in LPS. The conversion flips the
first two physical axes of the origin and of the direction matrix; array order (slice, row, column) is the
same in both (``slicer.util.arrayFromVolume`` and ``SimpleITK.GetArrayFromImage``).

No Qt here: MRML, VTK, numpy, SimpleITK and the torch-free parts of BackSplitLib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

import slicer
from BackSplitLib.dataset import CaseFiles
from BackSplitLib.errors import GeometryError, ImageError, LabelError
from BackSplitLib.io import Geometry, image_from_array, read_image, resample_like, write_image
from BackSplitLib.schema import BACKGROUND, IGNORE, LabelSchema

from BackSplitSlicer.segment_colors import mark_color_given
from BackSplitSlicer.roles import (AUXILIARY, IGNORE as IGNORE_ROLE, PREDICTION_PREFIX, ROLE_TAG, TARGET, UNUSED,
                                   is_automatic, segment_ids, segment_role)

DEFAULT_TARGET_NAME = "lesion"
LESION_SEGMENT_NAME = PREDICTION_PREFIX + "lesion"
PREDICTION_NODE_NAME = "BackSplit prediction"
# Flips RAS <-> LPS (its own inverse).
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


# ------------------------------------------------------------------------------------------ geometry
def _matrix_to_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_geometry(volume_node) -> Geometry:
    """The volume's voxel grid in SimpleITK's convention: size (x, y, z), spacing, LPS origin and direction."""
    image_data = volume_node.GetImageData()
    if image_data is None:
        raise ImageError(f"volume '{volume_node.GetName()}' has no voxels", "load or create the volume first")
    _check_no_parent_transform(volume_node)
    directions = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASDirectionMatrix(directions)
    direction_ras = _matrix_to_array(directions)[:3, :3]
    direction_lps = _RAS_TO_LPS @ direction_ras
    origin_lps = _RAS_TO_LPS @ np.asarray(volume_node.GetOrigin(), dtype=float)
    return Geometry(
        size=tuple(int(d) for d in image_data.GetDimensions()),
        spacing=tuple(float(s) for s in volume_node.GetSpacing()),
        origin=tuple(float(o) + 0.0 for o in origin_lps),  # + 0.0 turns -0.0 into 0.0
        direction=tuple(float(d) + 0.0 for d in direction_lps.ravel()),
    )


def ijk_to_ras_matrix(geometry: Geometry) -> np.ndarray:
    """4x4 IJK -> RAS matrix of a grid given in SimpleITK's LPS convention (the inverse of ``volume_geometry``)."""
    direction_ras = _RAS_TO_LPS @ np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction_ras * np.asarray(geometry.spacing, dtype=float)
    matrix[:3, 3] = _RAS_TO_LPS @ np.asarray(geometry.origin, dtype=float)
    return matrix


def _check_no_parent_transform(node) -> None:
    # A parent transform moves the volume in world space without changing its voxel grid; the engine would
    # see the untransformed grid, so ask the user to harden it rather than export the wrong geometry.
    if node.GetParentTransformNode() is not None:
        raise GeometryError(
            f"'{node.GetName()}' is under the transform '{node.GetParentTransformNode().GetName()}'",
            "harden the transform first (Data module: right-click the node > Harden transform)",
        )


# ------------------------------------------------------------------------------------------ the case
@dataclass
class SliceAnnotation:
    """How the target is painted along the volume's slice axis (k), and whether the case keeps only the
    annotated slices (every other slice becomes ``ignore``, so the loss never sees unannotated voxels)."""

    painted: int  # slices with target paint
    expected: int  # slices its extent suggests
    annotated: int  # slices with paint in any hand-made segment (kept)
    total: int
    used: bool
    automatic: bool  # decided by :func:`looks_sparse`, not chosen by the user

    def describe(self) -> str:
        if not self.used:
            return ""
        why = (f" (chosen because the target is painted on {self.painted} slice(s) where its extent suggests "
               f"{self.expected}; turn 'Annotated slices only' off to train on every slice)" if self.automatic else "")
        return (f"Annotated slices only: {self.annotated} of {self.total} slices kept, the others are ignored "
                f"in training{why}.")


def expected_target_slices(target_mask: np.ndarray, spacing) -> tuple[int, int]:
    """``(painted, expected)`` slices of the target along k: the slices with paint, and the most of (a) the
    span from its first to its last painted slice and (b) half the slices a round lesion of its smaller
    in-plane extent would cover (``spacing`` is SimpleITK's (x, y, z))."""
    slices = np.flatnonzero(target_mask.any(axis=(1, 2)))
    if not len(slices):
        return 0, 0
    rows = np.flatnonzero(target_mask.any(axis=(0, 2)))
    columns = np.flatnonzero(target_mask.any(axis=(0, 1)))
    in_plane_mm = min((rows[-1] - rows[0] + 1) * spacing[1], (columns[-1] - columns[0] + 1) * spacing[0])
    return len(slices), max(int(slices[-1] - slices[0] + 1), int(round(0.5 * in_plane_mm / spacing[2])))


def looks_sparse(target_mask: np.ndarray, spacing) -> bool:
    """The target is painted on fewer slices than its extent suggests (gaps, or a wide lesion on few slices)."""
    painted, expected = expected_target_slices(target_mask, spacing)
    return 0 < painted < expected


# ------------------------------------------------------------------------------------------ the case
@dataclass
class Case:
    """One training or prediction case exported from the scene.

    ``image`` is float32 and ``label`` an integer class map, both (slice, row, column) like
    ``slicer.util.arrayFromVolume``; ``geometry`` is the grid in SimpleITK's LPS convention; ``schema`` says
    which value is which class.
    """

    image: np.ndarray
    label: np.ndarray
    geometry: Geometry
    schema: LabelSchema
    name: str = "case"
    annotation: SliceAnnotation | None = None  # how the target was painted, and what the export did about it

    def __post_init__(self) -> None:
        expected = tuple(reversed(self.geometry.size))
        for what, array in (("image", self.image), ("label", self.label)):
            if tuple(array.shape) != expected:
                raise GeometryError(f"case '{self.name}': {what} has shape {tuple(array.shape)}, "
                                    f"the geometry says {expected} (slice, row, column)")
        self.schema.check_label_values(self.label, f"case '{self.name}' label map")

    def image_sitk(self) -> sitk.Image:
        """The image as a SimpleITK float32 image with the case geometry."""
        return image_from_array(np.asarray(self.image, dtype=np.float32), self.geometry)

    def label_sitk(self) -> sitk.Image:
        """The label map as a SimpleITK integer image with the case geometry."""
        return image_from_array(self.label, self.geometry)

    def write(self, folder: str | Path) -> CaseFiles:
        """Write image, label and schema for upload or a dataset folder.

        NRRD keeps the geometry in full double precision (NIfTI would round directions to float32), so the
        files read back to exactly this case.
        """
        folder = Path(folder)
        image_path = write_image(self.image_sitk(), folder / f"{self.name}_0000.nrrd")
        label_path = write_image(self.label_sitk(), folder / f"{self.name}.nrrd")
        schema_path = folder / f"{self.name}.schema.json"
        self.schema.save(schema_path)
        return CaseFiles.with_schema(self.name, image_path, label_path, self.schema)

    @classmethod
    def read(cls, files: CaseFiles, name: str | None = None) -> Case:
        """The case written by :meth:`write` (used by tests and by the local backend)."""
        image = read_image(files.image, "image")
        label = read_image(files.label, "label")
        return cls(
            image=sitk.GetArrayFromImage(image).astype(np.float32, copy=False),
            label=sitk.GetArrayFromImage(label),
            geometry=Geometry.of(image),
            schema=files.schema,
            name=name or files.name,
        )


# ------------------------------------------------------------------------------------------ export
def _segment_color(segment) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in segment.GetColor())


def export_segment_mask(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """One segment as a boolean (slice, row, column) mask on the volume's voxel grid.

    Slicer resamples the segment's own labelmap (any geometry, extent or direction, or a closed surface)
    into the reference volume's grid. One segment at a time, so overlaps are resolved by us, not by order.
    """
    scene = volume_node.GetScene() or slicer.mrmlScene
    nodes_before = _node_ids(scene)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__BackSplit_export__")
    segment_id_list = vtk.vtkStringArray()
    segment_id_list.InsertNextValue(segment_id)
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, segment_id_list, labelmap, volume_node,
            slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        if not ok:
            name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
            raise LabelError(f"segment '{name}' could not be exported onto volume '{volume_node.GetName()}'",
                             "check that the segment has a binary labelmap or closed surface")
        image_data = labelmap.GetImageData()
        dims = image_data.GetDimensions()
        expected = volume_node.GetImageData().GetDimensions()
        if tuple(dims) != tuple(expected):
            raise GeometryError(f"exported segment has size {tuple(dims)}, the volume {tuple(expected)}")
        scalars = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
        return scalars.reshape(tuple(reversed(dims))) != 0
    finally:
        # The export adds a display node and a colour table next to the temporary labelmap: remove every
        # node that appeared during the export, so exporting leaves the scene as it was.
        for node_id in _node_ids(scene) - nodes_before:
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)


def _node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _case_schema(target_name: str, auxiliary: list[str], has_ignore: bool,
                 colors: Mapping[str, tuple[int, int, int]], base_schema: LabelSchema | None) -> LabelSchema:
    """Schema of a case: the model's classes by name when there is a model, new auxiliary names appended."""
    if base_schema is None:
        return LabelSchema.from_names(target_name, auxiliary, ignore=has_ignore, colors=colors)
    return base_schema.with_auxiliary(auxiliary, ignore=has_ignore, colors=colors)


def class_ranks(schema: LabelSchema) -> np.ndarray:
    """Precedence of each class value where segments overlap, as ``LabelSchema.merge`` paints: target over
    ignore over auxiliary classes (the higher value wins among those) over background."""
    ranks = np.zeros(max(schema.labels.values()) + 1, dtype=np.int32)
    top = len(ranks)
    for name, value in schema.labels.items():
        ranks[value] = value if name in schema.auxiliary_names else 0
    if schema.ignore_value is not None:
        ranks[schema.ignore_value] = top
    ranks[schema.target_value] = top + 1
    return ranks


def export_segment_classes(segmentation_node, volume_node, classes: Mapping[str, int], ranks: np.ndarray,
                           dtype=np.uint16) -> np.ndarray:
    """A class map on the volume's voxel grid from ``{segment id: class value}``.

    One resampling per binary-labelmap layer (segments in a layer never overlap); where segments of different
    layers overlap, the class with the higher ``ranks`` wins. A segment with no binary labelmap layer (or a
    segmentation under a transform) is exported on its own by Slicer's logic.
    """
    shape = tuple(reversed(volume_node.GetImageData().GetDimensions()))
    label = np.zeros(shape, dtype=dtype)
    composed = False

    def compose(codes: np.ndarray) -> None:
        nonlocal composed
        if not composed:  # the first layer: nothing to overlap with yet
            label[...], composed = codes, True
            return
        better = ranks[codes] > ranks[label]
        label[better] = codes[better]

    for layer, segment_codes in _segments_by_layer(segmentation_node, classes).items():
        if layer is None:  # no shared layer to read: Slicer exports each of these segments
            for segment_id, code in segment_codes.items():
                compose(np.where(export_segment_mask(segmentation_node, segment_id, volume_node), code, 0)
                        .astype(dtype))
            continue
        values = _layer_on_volume_grid(segmentation_node, next(iter(segment_codes)), volume_node)
        segmentation = segmentation_node.GetSegmentation()
        lookup = np.zeros(max(int(values.max(initial=0)),
                              *(segmentation.GetSegment(s).GetLabelValue() for s in segment_codes)) + 1, dtype)
        for segment_id, code in segment_codes.items():
            lookup[segmentation.GetSegment(segment_id).GetLabelValue()] = code
        compose(lookup[values])
    return label


def _segments_by_layer(segmentation_node, classes: Mapping[str, int]) -> dict:
    """``{layer index or None: {segment id: class}}``; None collects segments that have no readable layer."""
    segmentation = segmentation_node.GetSegmentation()
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    readable = (segmentation_node.GetParentTransformNode() is None
                and segmentation.GetSourceRepresentationName() == binary)
    layers: dict = {}
    for segment_id, code in classes.items():
        layer = segmentation.GetLayerIndex(segment_id, binary) if readable else -1
        layers.setdefault(layer if layer >= 0 else None, {})[segment_id] = code
    return layers


def _layer_on_volume_grid(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """The label values of the binary-labelmap layer holding ``segment_id``, on the volume's voxel grid."""
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    layer = segmentation_node.GetSegmentation().GetSegment(segment_id).GetRepresentation(binary)
    image_data = volume_node.GetImageData()
    shape = tuple(reversed(image_data.GetDimensions()))
    if layer is None or layer.IsEmpty():
        return np.zeros(shape, np.uint8)
    reference = slicer.vtkOrientedImageData()
    reference.SetExtent(image_data.GetExtent())
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    reference.SetImageToWorldMatrix(ijk_to_ras)
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            layer, reference, resampled, False, False):
        name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
        raise LabelError(f"segment '{name}' could not be resampled onto volume '{volume_node.GetName()}'")
    scalars = resampled.GetPointData().GetScalars()
    if scalars is None:
        return np.zeros(shape, np.uint8)
    have, want = resampled.GetExtent(), image_data.GetExtent()
    data = numpy_support.vtk_to_numpy(scalars).reshape(
        [have[5] - have[4] + 1, have[3] - have[2] + 1, have[1] - have[0] + 1])
    if tuple(have) == tuple(want):
        return data.copy()  # VTK's memory goes with ``resampled``
    # The resampled extent can differ from the volume's: copy the overlap into a volume-sized array.
    values = np.zeros(shape, data.dtype)
    source, target = [], []
    for axis in (2, 1, 0):  # z, y, x: array order
        low, high = max(have[2 * axis], want[2 * axis]), min(have[2 * axis + 1], want[2 * axis + 1])
        if low > high:
            return values
        source.append(slice(low - have[2 * axis], high - have[2 * axis] + 1))
        target.append(slice(low - want[2 * axis], high - want[2 * axis] + 1))
    values[tuple(target)] = data[tuple(source)]
    return values


def _role_classes(segmentation_node, target_name: str):
    """What the segments' roles make of them: segment id -> role (unused segments left out), the auxiliary
    class names in segment order, the automatic segments' ids, and each class's colour (the first segment's)."""
    roles: dict[str, str] = {}
    auxiliary: list[str] = []
    automatic: set[str] = set()
    colors: dict[str, tuple[int, int, int]] = {}
    segmentation = segmentation_node.GetSegmentation()
    for segment_id in segment_ids(segmentation_node):
        segment = segmentation.GetSegment(segment_id)
        role = segment_role(segment)
        if role not in (TARGET, AUXILIARY, IGNORE_ROLE):
            continue  # unused
        roles[segment_id] = role
        if is_automatic(segment):
            automatic.add(segment_id)
        if role == AUXILIARY:
            _check_auxiliary_name(segment.GetName(), target_name)
            auxiliary.append(segment.GetName())
        if role != IGNORE_ROLE:
            colors.setdefault(target_name if role == TARGET else segment.GetName(), _segment_color(segment))
    if TARGET not in roles.values():
        raise LabelError(
            f"no segment of '{segmentation_node.GetName()}' has the role Target",
            "set the lesion segment's role to Target in the Segment roles table",
        )
    return roles, list(dict.fromkeys(auxiliary)), automatic, colors


def schema_from_roles(segmentation_node, target_name: str = DEFAULT_TARGET_NAME) -> LabelSchema:
    """The label schema this segmentation's roles describe (a new project's): the Target segments as the one
    target class, each Auxiliary name a class, with their colours; the same classes ``export_case`` writes."""
    if segmentation_node is None:
        raise LabelError("choose a segmentation first", "use the Inputs section")
    _, auxiliary, _, colors = _role_classes(segmentation_node, target_name)
    return LabelSchema.from_names(target_name, auxiliary, colors=colors)


def export_case(volume_node, segmentation_node, schema: LabelSchema | None = None,
                target_name: str = DEFAULT_TARGET_NAME, name: str | None = None,
                annotated_slices_only: bool | None = False) -> Case:
    """A :class:`Case` from a volume and a segmentation whose segments carry roles.

    Every Target segment goes into the one target class; each Auxiliary segment becomes the class of its
    name (segments with the same name share it); Ignore segments become the ignore label; Unused segments
    are dropped. With ``schema`` (a model's schema) the existing class values are kept and new auxiliary
    names are appended; without it the schema is built from the names, the target called ``target_name``.

    ``annotated_slices_only`` (nnU-Net's sparse annotation): every slice along k without paint in a hand-made
    segment (automatic auxiliary segments do not count) becomes ``ignore``; ignore wins over auxiliary
    classes, so automatic ones never overwrite it. None turns it on when :func:`looks_sparse`. A class that
    a hand-made and an automatic segment share counts as automatic here (its slices are not "painted").
    """
    if volume_node is None or segmentation_node is None:
        raise LabelError("choose a volume and a segmentation first")
    geometry = volume_geometry(volume_node)
    shape = tuple(reversed(geometry.size))
    target_name = schema.target if schema is not None else target_name

    roles, auxiliary, automatic, colors = _role_classes(segmentation_node, target_name)
    segmentation = segmentation_node.GetSegmentation()
    # Ignore is the highest value, so whether the case keeps it (only when ignore voxels exist) changes no
    # other class value: compose with it, then drop it when no voxel has it.
    with_ignore = _case_schema(target_name, auxiliary, True, colors, schema)
    values = {TARGET: with_ignore.target_value, IGNORE_ROLE: with_ignore.ignore_value}
    classes = {segment_id: values.get(role) or with_ignore.labels[segmentation.GetSegment(segment_id).GetName()]
               for segment_id, role in roles.items()}
    label = export_segment_classes(segmentation_node, volume_node, classes, class_ranks(with_ignore))

    annotation = None
    if annotated_slices_only is not False:
        target_mask = label == with_ignore.target_value
        automatic_codes = {classes[s] for s in automatic}
        hand_codes = [code for s, code in classes.items() if s not in automatic and code not in automatic_codes]
        hand_painted = np.isin(label, hand_codes).any(axis=(1, 2))  # slices (k) with paint in a hand-made segment
        painted, expected = expected_target_slices(target_mask, geometry.spacing)
        used = bool(annotated_slices_only) or looks_sparse(target_mask, geometry.spacing)
        annotation = SliceAnnotation(painted, expected, int(hand_painted.sum()), shape[0], used,
                                     annotated_slices_only is None)
        if used:
            label[~hand_painted] = with_ignore.ignore_value
    has_ignore = bool((label == with_ignore.ignore_value).any())
    case_schema = _case_schema(target_name, auxiliary, has_ignore, colors, schema)
    label = label.astype(case_schema.label_dtype, copy=False)
    image = np.array(slicer.util.arrayFromVolume(volume_node), dtype=np.float32)  # a copy, not VTK's memory
    if image.ndim != 3:
        raise ImageError(f"volume '{volume_node.GetName()}' is not a single-channel 3D volume",
                         "choose a scalar volume")
    return Case(image=image, label=label, geometry=geometry, schema=case_schema,
                name=name or _safe_name(volume_node.GetName()), annotation=annotation)


def _check_auxiliary_name(segment_name: str, target_name: str) -> None:
    reserved = {BACKGROUND, IGNORE, target_name}
    if segment_name.strip().lower() in {r.lower() for r in reserved}:
        raise LabelError(
            f"the auxiliary segment '{segment_name}' has a reserved class name",
            f"rename it (class names {', '.join(sorted(reserved))} are reserved) or set its role to Unused",
        )


def _safe_name(name: str) -> str:
    """A file-system-safe case name from a node name."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in (name or "case")).strip("_")
    return cleaned or "case"


# ------------------------------------------------------------------------------------------ import
def _as_volume_array(mask_or_classes, volume_node, geometry: Geometry) -> np.ndarray:
    """The prediction as a (slice, row, column) array on the volume's grid."""
    if isinstance(mask_or_classes, (str, Path)):
        mask_or_classes = read_image(mask_or_classes, "prediction")
    if isinstance(mask_or_classes, sitk.Image):
        reference = image_from_array(np.zeros(tuple(reversed(geometry.size)), np.uint8), geometry)
        if Geometry.of(mask_or_classes).mismatch(geometry) is not None:
            mask_or_classes = resample_like(mask_or_classes, reference, label=True)
        mask_or_classes = sitk.GetArrayFromImage(mask_or_classes)
    array = np.asarray(mask_or_classes)
    expected = tuple(reversed(geometry.size))
    if array.shape != expected:
        raise GeometryError(f"prediction has shape {array.shape}, volume '{volume_node.GetName()}' has "
                            f"{expected} (slice, row, column)",
                            "predict on this volume, or pass a SimpleITK image so it can be resampled")
    return array


def _oriented_mask(mask: np.ndarray, volume_node) -> slicer.vtkOrientedImageData:
    """A binary vtkOrientedImageData with exactly the volume's grid (dimensions, spacing, origin, axes)."""
    image = slicer.vtkOrientedImageData()
    nz, ny, nx = mask.shape
    image.SetDimensions(nx, ny, nz)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(mask.shape)
    voxels[:] = (mask != 0)
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    image.SetImageToWorldMatrix(ijk_to_ras)
    return image


def prediction_node(volume_node, segmentation_node=None):
    """``segmentation_node`` when given, else a new \"BackSplit prediction\" node on the volume's grid."""
    if segmentation_node is not None:
        return segmentation_node
    scene = volume_node.GetScene() or slicer.mrmlScene
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", PREDICTION_NODE_NAME)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return node


def set_segment_mask(segmentation_node, name: str, mask: np.ndarray, volume_node,
                 color: tuple[int, int, int], visible: bool) -> str:
    """Create or replace the segment called ``name`` with ``mask``; returns its id."""
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(name)
    if not segment_id:
        # Tagged before it is added: observers of SegmentAdded see a colour chosen on purpose (segment_colors).
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segment.SetColor(*(c / 255.0 for c in color))
        mark_color_given(segment)
        segmentation.AddSegment(segment)
        segment_id = segmentation.GetSegmentIdBySegment(segment)
    ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        _oriented_mask(mask, volume_node), segmentation_node, segment_id,
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    if not ok:
        raise LabelError(f"could not write the segment '{name}' into '{segmentation_node.GetName()}'")
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetSegmentVisibility(segment_id, visible)
    return segment_id


def import_prediction(mask_or_classes, volume_node, segmentation_node=None, schema: LabelSchema | None = None,
                      lesion_name: str = LESION_SEGMENT_NAME, auxiliary: bool = True,
                      show_3d: bool = True, role: str | None = UNUSED,
                      lesion_color: tuple[int, int, int] | None = None) -> dict[str, str]:
    """Put a prediction into the scene as segments on the volume's exact grid; returns ``{name: segment id}``.

    ``mask_or_classes`` is a lesion mask (non-zero = lesion) or, with ``schema``, a class map whose target
    value becomes the lesion segment and whose auxiliary classes become hidden segments (when
    ``auxiliary``). It may be an array shaped like the volume, a SimpleITK image (resampled onto the
    volume when its grid differs) or an image file. Without ``segmentation_node`` a new node
    "BackSplit prediction" is created. Running it again replaces the segments of the same name. The new
    segments get ``role`` (Unused: a prediction is no training label until the user says so; None: by name).
    """
    geometry = volume_geometry(volume_node)
    array = _as_volume_array(mask_or_classes, volume_node, geometry)
    node = prediction_node(volume_node, segmentation_node)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    created: dict[str, str] = {}
    if schema is None:
        lesion = array != 0
        created[lesion_name] = set_segment_mask(node, lesion_name, lesion, volume_node, lesion_color or (255, 255, 0),
                                                True)
    else:
        schema.check_label_values(array, "prediction")
        lesion = array == schema.target_value
        created[lesion_name] = set_segment_mask(node, lesion_name, lesion, volume_node,
                                                lesion_color or schema.colors[schema.target], True)
        if auxiliary:
            for class_name in schema.auxiliary_names:
                created[class_name] = set_segment_mask(node, class_name, array == schema.labels[class_name],
                                                   volume_node, schema.colors[class_name], False)
    for segment_id in created.values() if role else ():
        node.GetSegmentation().GetSegment(segment_id).SetTag(ROLE_TAG, role)
    if show_3d:
        node.CreateClosedSurfaceRepresentation()
    return created


def prediction_mask(segmentation_node, segment_name: str, volume_node) -> np.ndarray:
    """A named segment as a boolean mask on the volume grid (the inverse of ``import_prediction``)."""
    segment_id = segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    if not segment_id:
        raise LabelError(f"no segment named '{segment_name}' in '{segmentation_node.GetName()}'")
    return export_segment_mask(segmentation_node, segment_id, volume_node)
