"""Auxiliary labels without drawing: CT tissue classes, MR intensity classes, imported organ maps,
the TotalSegmentator bridge, adding classes to a dataset, and the advisor that says which are worth it.

Torch-free on purpose: the Slicer module imports this inside a Slicer that may have no PyTorch (only the
advisor's ``advise`` imports the predictor, lazily). Image work goes through SimpleITK filters
(thresholds, connected components, hole filling, morphology) and vectorised numpy, never voxel loops.

Every generator returns :class:`AuxiliaryLabels`: a label map on the image's grid whose values 1..K are
the classes in order, so ``LabelSchema.from_names(target, classes)`` describes it without remapping.
"""

from __future__ import annotations

import ast
import csv
import difflib
import fnmatch
import gzip
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BackSplitLib.errors import BackSplitError, DatasetError, ImageError, LabelError, RunError
from BackSplitLib.io import (check_same_geometry, image_extension, image_from_array, read_image, resample_like,
                             write_image)
from BackSplitLib.schema import BACKGROUND, IGNORE, LabelSchema

Color = tuple[int, int, int]


class AuxiliaryError(BackSplitError):
    """Automatic auxiliary labels cannot be made (a tool or its weights are missing, bad options)."""


# =====================================================================================  result type
@dataclass
class AuxiliaryLabels:
    """An auxiliary label map (uint8/uint16, same grid as the image) and its classes.

    ``classes`` maps class name -> value in ``label``; values are 1..K in order, 0 is "no class".
    """

    label: sitk.Image
    classes: dict[str, int]
    colors: dict[str, Color] = field(default_factory=dict)

    def schema(self, target: str = "lesion") -> LabelSchema:
        """The engine schema for this map: background, these classes (same values), then the target."""
        if target in self.classes:
            raise LabelError(f"the target name '{target}' is also an auxiliary class name",
                             "choose another --target name")
        schema = LabelSchema.from_names(target, list(self.classes), colors=self.colors)
        assert all(schema.labels[n] == v for n, v in self.classes.items()), "class values must be 1..K in order"
        return schema

    def array(self) -> np.ndarray:
        return sitk.GetArrayFromImage(self.label)

    def voxel_counts(self) -> dict[str, int]:
        counts = np.bincount(self.array().ravel(), minlength=len(self.classes) + 1)
        return {name: int(counts[value]) for name, value in self.classes.items()}


def _label_from_masks(masks: Sequence[tuple[str, np.ndarray]], reference: sitk.Image,
                      colors: Mapping[str, Color] | None = None) -> AuxiliaryLabels:
    """Paint boolean (z, y, x) masks in order (a later mask wins where they overlap) as values 1..K."""
    dtype = np.uint8 if len(masks) < 256 else np.uint16
    array = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=dtype)
    classes: dict[str, int] = {}
    for value, (name, mask) in enumerate(masks, start=1):
        array[mask] = value
        classes[name] = value
    label = image_from_array(array, reference)
    return AuxiliaryLabels(label, classes, {k: tuple(v) for k, v in (colors or {}).items() if k in classes})


# =====================================================================================  masks (SimpleITK)
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
    above = _threshold(image, threshold, 1e30)
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


def _threshold(image: sitk.Image, low: float, high: float) -> sitk.Image:
    return sitk.BinaryThreshold(image, float(low), float(high), 1, 0)


# =====================================================================================  CT tissue classes
@dataclass(frozen=True)
class TissueRanges:
    """HU ranges (inclusive) of the CT tissue classes and the body-mask settings.

    Defaults follow common CT practice: fat -190..-30 HU, soft tissue -29..150 HU (organs, muscle,
    unenhanced vessels), cortical/trabecular bone above 250 HU; air inside the body below -400 HU.
    Between 150 and 250 HU (enhanced vessels, dense contrast) no class is assigned on purpose.
    """

    lung_air: tuple[float, float] = (-1e30, -400.0)
    fat: tuple[float, float] = (-190.0, -30.0)
    soft_tissue: tuple[float, float] = (-29.0, 150.0)
    bone: tuple[float, float] = (250.0, 1e30)
    body_threshold: float = -500.0
    table_opening_mm: float = 6.0
    bone_min_volume_mm3: float = 100.0  # smaller bright specks are calcifications or noise, not bone

    def __post_init__(self) -> None:
        for name in TISSUE_CLASSES:
            low, high = getattr(self, name)
            if not low <= high:
                raise AuxiliaryError(f"HU range of {name} is empty ({low}..{high}); give LOW <= HIGH")

    def with_ranges(self, overrides: Mapping[str, tuple[float | None, float | None]]) -> TissueRanges:
        """A copy with some ranges replaced; ``None`` keeps that bound."""
        values = {}
        for name, (low, high) in overrides.items():
            if name not in TISSUE_CLASSES:
                raise AuxiliaryError(f"unknown tissue class '{name}' in an HU range",
                                     f"use one of {', '.join(TISSUE_CLASSES)}")
            old_low, old_high = getattr(self, name)
            values[name] = (old_low if low is None else float(low), old_high if high is None else float(high))
        return TissueRanges(**{**self.__dict__, **values})


TISSUE_CLASSES = ("lung_air", "fat", "soft_tissue", "bone")
# Slicer's GenericAnatomyColors where one exists, so the classes look familiar in the Segment Editor.
TISSUE_COLORS: dict[str, Color] = {
    "lung_air": (135, 206, 235),
    "fat": (230, 220, 70),
    "soft_tissue": (221, 130, 101),
    "bone": (241, 214, 145),
}


def parse_hu_ranges(specs: Iterable[str]) -> dict[str, tuple[float | None, float | None]]:
    """``["fat=-200:-40", "bone=300:"]`` -> ``{"fat": (-200, -40), "bone": (300, None)}`` (CLI helper)."""
    ranges: dict[str, tuple[float | None, float | None]] = {}
    for spec in specs:
        match = re.fullmatch(r"\s*(\w+)\s*=\s*(-?[\d.]*)\s*:\s*(-?[\d.]*)\s*", spec)
        if not match:
            raise AuxiliaryError(f"cannot read HU range '{spec}'",
                                 "write NAME=LOW:HIGH, e.g. fat=-190:-30 or bone=300:")
        name, low, high = match.groups()
        try:
            ranges[name] = (float(low) if low else None, float(high) if high else None)
        except ValueError:
            raise AuxiliaryError(f"cannot read HU range '{spec}'", "LOW and HIGH must be numbers") from None
    return ranges


def ct_tissue_classes(image: sitk.Image, ranges: TissueRanges | None = None,
                      body: sitk.Image | None = None) -> AuxiliaryLabels:
    """CT tissue classes from HU inside the body: ``lung_air``, ``fat``, ``soft_tissue``, ``bone``.

    ``image`` must be in Hounsfield units. ``body`` (uint8 mask on the same grid) defaults to
    :func:`ct_body_mask`.
    """
    ranges = ranges or TissueRanges()
    check_ct_units(image)
    ct = sitk.Cast(image, sitk.sitkFloat32)
    if body is None:
        body = ct_body_mask(ct, ranges.body_threshold, ranges.table_opening_mm)
    body_array = sitk.GetArrayViewFromImage(body).astype(bool)

    bone = _threshold(ct, *ranges.bone)
    voxel_mm3 = float(np.prod(image.GetSpacing()))
    min_voxels = int(np.ceil(ranges.bone_min_volume_mm3 / voxel_mm3))
    bone = sitk.RelabelComponent(sitk.ConnectedComponent(bone, True), min_voxels) > 0

    masks = [(name, sitk.GetArrayViewFromImage(_threshold(ct, *getattr(ranges, name))).astype(bool) & body_array)
             for name in ("lung_air", "fat", "soft_tissue")]
    masks.append(("bone", sitk.GetArrayViewFromImage(bone).astype(bool) & body_array))
    return _label_from_masks(masks, image, TISSUE_COLORS)


def check_ct_units(image: sitk.Image) -> None:
    """Refuse images that cannot be in HU: every body region has fat, and fat is negative."""
    minimum = float(sitk.GetArrayViewFromImage(image).min())
    if minimum >= 0:
        raise ImageError(
            f"the image has no negative values (minimum {minimum:g}), so it is not a CT in Hounsfield units",
            "for MR use --mr-classes N; for CT apply the DICOM rescale slope/intercept first",
        )


# =====================================================================================  MR intensity classes
MR_METHODS = ("otsu", "kmeans")


def mr_intensity_classes(image: sitk.Image, n_classes: int, method: str = "otsu",
                         body: sitk.Image | None = None) -> AuxiliaryLabels:
    """``n_classes`` intensity classes inside the MR body mask, darkest first (``mr_class_1`` ...).

    Thresholds come from the body's voxels only (Otsu multi-thresholds or 1-D k-means), so the air
    around the patient does not take a class.
    """
    if not 2 <= int(n_classes) <= 8:
        raise AuxiliaryError(f"--mr-classes must be between 2 and 8, got {n_classes}")
    if method not in MR_METHODS:
        raise AuxiliaryError(f"unknown MR class method '{method}'", f"use one of {', '.join(MR_METHODS)}")
    mr = sitk.Cast(image, sitk.sitkFloat32)
    if body is None:
        body = mr_body_mask(mr)
    body_array = sitk.GetArrayViewFromImage(body).astype(bool)
    values = sitk.GetArrayViewFromImage(mr)[body_array]
    if values.size < n_classes:
        raise ImageError(f"the MR body mask holds {values.size} voxels, too few for {n_classes} classes",
                         "is the image empty or constant?")
    thresholds = otsu_thresholds(values, n_classes) if method == "otsu" else kmeans_thresholds(values, n_classes)
    classes = np.digitize(sitk.GetArrayViewFromImage(mr), thresholds) + 1
    names = [f"mr_class_{i}" for i in range(1, n_classes + 1)]
    masks = [(name, (classes == i) & body_array) for i, name in enumerate(names, start=1)]
    grey = {name: (int(v),) * 3 for name, v in zip(names, np.linspace(60, 230, n_classes))}
    return _label_from_masks(masks, image, grey)


def otsu_thresholds(values: np.ndarray, n_classes: int, bins: int = 128) -> np.ndarray:
    """Otsu multi-thresholds of a set of intensities (SimpleITK's filter on a one-row image of them)."""
    row = sitk.GetImageFromArray(np.asarray(values, dtype=np.float32).reshape(1, 1, -1))
    otsu = sitk.OtsuMultipleThresholdsImageFilter()
    otsu.SetNumberOfThresholds(int(n_classes) - 1)
    otsu.SetNumberOfHistogramBins(bins)
    otsu.Execute(row)
    return np.sort(np.asarray(otsu.GetThresholds(), dtype=np.float64))


def kmeans_thresholds(values: np.ndarray, n_classes: int, iterations: int = 50) -> np.ndarray:
    """Thresholds between the sorted centres of a 1-D k-means (centres start at evenly spaced quantiles)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size > 200_000:  # the centres of a subsample are as good and far cheaper
        values = values[:: values.size // 200_000]
    centres = np.quantile(values, (np.arange(n_classes) + 0.5) / n_classes)
    for _ in range(iterations):
        assign = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        updated = np.array([values[assign == k].mean() if np.any(assign == k) else centres[k]
                            for k in range(n_classes)])
        if np.allclose(updated, centres):
            break
        centres = updated
    centres = np.sort(centres)
    return (centres[1:] + centres[:-1]) / 2


# =====================================================================================  organ maps
@dataclass(frozen=True)
class Segment:
    """Where a named structure lives in a label map: its layer (component) and its value."""

    layer: int
    value: int


@dataclass
class OrganMap:
    """A label map with named structures (possibly multi-layer, as Slicer's .seg.nrrd)."""

    image: sitk.Image
    segments: dict[str, Segment]
    path: Path
    names_source: str

    def layer(self, index: int) -> sitk.Image:
        if self.image.GetNumberOfComponentsPerPixel() == 1:
            return self.image
        return sitk.VectorIndexSelectionCast(self.image, index)

    def mask(self, name: str) -> sitk.Image:
        """Binary uint8 mask of one structure on the map's own grid."""
        segment = self.segments[name]
        layer = self.layer(segment.layer)
        return sitk.Cast(sitk.BinaryThreshold(layer, segment.value, segment.value, 1, 0), sitk.sitkUInt8)


def _names_from_table(table: Mapping, source: str) -> dict[str, Segment]:
    """{name: value} or {value: name} -> segments on layer 0 (background 0 dropped)."""
    segments: dict[str, Segment] = {}
    for key, val in table.items():
        name, value = (val, key) if _is_int(key) and not _is_int(val) else (key, val)
        if not _is_int(value):
            raise LabelError(f"{source}: the value of '{name}' must be an integer label value, got {value!r}",
                             "region-based nnU-Net labels (lists) cannot be imported; give one value per name")
        if int(value) != 0 and str(name) != BACKGROUND:
            segments[str(name)] = Segment(0, int(value))
    if not segments:
        raise LabelError(f"{source} names no structures", "give {name: value} pairs with non-zero values")
    return segments


def _is_int(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value) is not None


def totalsegmentator_class_map(path: str | Path, task: str = "total") -> dict[int, str]:
    """TotalSegmentator's class-name table ``class_map[task]`` from its ``map_to_binary.py``, read as text.

    Parsed with ``ast`` (never imported: the package may be absent, and importing would pull in torch).
    """
    path = Path(path)
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError) as e:
        raise LabelError(f"cannot read the class table {path}: {e}") from None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "class_map" for t in node.targets)):
            tasks = {}
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant):
                    tasks[key.value] = value
            if task not in tasks:
                raise LabelError(f"{path} has no class_map['{task}'] (tasks: {', '.join(sorted(map(str, tasks)))})")
            return {int(k): str(v) for k, v in ast.literal_eval(tasks[task]).items()}
    raise LabelError(f"{path} defines no 'class_map = {{...}}' table", "is this TotalSegmentator's map_to_binary.py?")


def read_names_file(spec: str | Path) -> dict[str, Segment]:
    """Structure names from a file: JSON ({name: value}, {value: name} or an nnU-Net dataset.json's
    ``labels``), CSV (``value,name``), a Slicer colour table (``value name r g b a``) or TotalSegmentator's
    ``map_to_binary.py`` (``map_to_binary.py:TASK``, default task ``total``).
    """
    text_spec = str(spec)
    task = "total"
    if ".py:" in text_spec:
        text_spec, task = text_spec.rsplit(":", 1)
    path = Path(text_spec)
    if not path.is_file():
        raise LabelError(f"names file {path} does not exist",
                         "give a JSON {name: value}, a CSV value,name, a dataset.json, or --names auto")
    suffix = path.suffix.lower()
    if suffix == ".py":
        table = totalsegmentator_class_map(path, task)
        return _names_from_table(table, f"{path} class_map['{task}']")
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise LabelError(f"names file {path} is not valid JSON: {e.msg} at line {e.lineno}") from None
        if isinstance(data, dict) and isinstance(data.get("labels"), dict):
            data = data["labels"]  # nnU-Net dataset.json or a BackSplit schema
        if not isinstance(data, dict):
            raise LabelError(f"names file {path} must hold a JSON object {{name: value}}")
        return _names_from_table(data, str(path))
    if suffix in (".csv", ".tsv"):
        return _names_from_table(_read_csv_names(path), str(path))
    if suffix in (".txt", ".ctbl"):
        return _names_from_table(_read_color_table(path), str(path))
    raise LabelError(f"names file {path} has an unknown format ({suffix or 'no extension'})",
                     "use .json, .csv, a Slicer colour table (.txt/.ctbl) or TotalSegmentator's map_to_binary.py")


def _read_csv_names(path: Path) -> dict[int, str]:
    table: dict[int, str] = {}
    with path.open(newline="") as f:
        dialect = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
        for row in csv.reader(f, dialect):
            row = [c.strip() for c in row if c.strip()]
            if len(row) < 2 or row[0].startswith("#"):
                continue
            if _is_int(row[0]):
                table[int(row[0])] = row[1]
            elif _is_int(row[1]):  # name,value also accepted
                table[int(row[1])] = row[0]
            # else: a header line
    return table


def _read_color_table(path: Path) -> dict[int, str]:
    table: dict[int, str] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and _is_int(parts[0]):
            table[int(parts[0])] = parts[1]
    return table


def seg_nrrd_segments(reader_or_image) -> dict[str, Segment]:
    """Segments of a Slicer .seg.nrrd from its header (``SegmentN_Name``, ``_LabelValue``, ``_Layer``).

    Old files without LabelValue / Layer store one segment per layer with value 1.
    """
    keys = set(reader_or_image.GetMetaDataKeys())
    get = reader_or_image.GetMetaData
    segments: dict[str, Segment] = {}
    index = 0
    while f"Segment{index}_Name" in keys or f"Segment{index}_ID" in keys:
        name = get(f"Segment{index}_Name") if f"Segment{index}_Name" in keys else get(f"Segment{index}_ID")
        value = int(get(f"Segment{index}_LabelValue")) if f"Segment{index}_LabelValue" in keys else 1
        layer = int(get(f"Segment{index}_Layer")) if f"Segment{index}_Layer" in keys else (
            index if f"Segment{index}_LabelValue" not in keys else 0)
        segments[name] = Segment(layer, value)
        index += 1
    return segments


def nifti_label_table(path: str | Path) -> dict[str, Segment]:
    """Label names stored in a NIfTI header extension (TotalSegmentator's multilabel output writes a
    CIFTI/Caret ``<LabelTable>`` XML there); empty when there is none. Reads only the header."""
    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(540)
            if len(head) < 352:
                return {}
            size_le = struct.unpack("<i", head[:4])[0]
            endian = "<" if size_le in (348, 540) else ">"
            header_size = struct.unpack(endian + "i", head[:4])[0]
            if header_size == 348:
                vox_offset = int(struct.unpack(endian + "f", head[108:112])[0])
            elif header_size == 540:
                vox_offset = int(struct.unpack(endian + "q", head[168:176])[0])
            else:
                return {}
            rest = f.read(max(0, vox_offset - len(head)))
    except (OSError, EOFError, struct.error):
        return {}
    data = head + rest
    if len(data) < header_size + 4 or data[header_size] == 0:
        return {}
    segments: dict[str, Segment] = {}
    pos = header_size + 4
    while pos + 8 <= min(len(data), vox_offset):
        esize, _code = struct.unpack(endian + "ii", data[pos:pos + 8])
        if esize < 8:
            break
        payload = data[pos + 8:pos + esize].rstrip(b"\x00 \n")
        segments.update(_caret_labels(payload))
        pos += esize
    return segments


def _caret_labels(payload: bytes) -> dict[str, Segment]:
    if b"<LabelTable" not in payload:
        return {}
    try:
        root = ET.fromstring(payload.decode("utf-8", "replace").strip())
    except ET.ParseError:
        return {}
    segments = {}
    for label in root.iter("Label"):
        key, name = label.get("Key"), (label.text or "").strip()
        if key is not None and _is_int(key) and int(key) != 0 and name:
            segments[name] = Segment(0, int(key))
    return segments


# Names files looked for beside a map when --names auto (first found wins).
_NAME_FILE_CANDIDATES = ("{stem}.json", "{stem}.csv", "{stem}.txt", "{stem}.ctbl", "{stem}_names.json",
                         "{stem}_names.csv", "names.json", "names.csv", "labels.json", "labels.csv",
                         "dataset.json", "../dataset.json", "map_to_binary.py")


def detect_names(map_path: str | Path) -> tuple[dict[str, Segment], str]:
    """Find structure names for a label map: its header (.seg.nrrd segments, a NIfTI label table), then
    a names file beside it (``<map>.json``/``.csv``, ``names.json``, an nnU-Net ``dataset.json`` here or
    one folder up, ``map_to_binary.py``). Returns the segments and where they came from."""
    map_path = Path(map_path)
    looked = []
    if image_extension(map_path) in (".seg.nrrd", ".nrrd", ".nhdr"):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(map_path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise ImageError(f"organ map {map_path} could not be read: it is damaged or not an image") from None
        segments = seg_nrrd_segments(reader)
        if segments:
            return segments, f"{map_path.name} header (segments)"
        looked.append(f"{map_path.name} header (no SegmentN_Name keys)")
    if image_extension(map_path) in (".nii", ".nii.gz"):
        segments = nifti_label_table(map_path)
        if segments:
            return segments, f"{map_path.name} header (NIfTI label table)"
        looked.append(f"{map_path.name} header (no label table)")
    ext = image_extension(map_path)
    stem = map_path.name[: -len(ext)] if ext else map_path.stem
    for pattern in _NAME_FILE_CANDIDATES:
        candidate = (map_path.parent / pattern.format(stem=stem)).resolve()
        looked.append(os.path.relpath(candidate, map_path.parent))
        if candidate.is_file():
            return read_names_file(candidate), str(candidate)
    raise LabelError(f"no structure names found for {map_path} (looked at: {', '.join(looked)})",
                     "pass --names FILE (JSON {name: value}, CSV value,name, dataset.json or map_to_binary.py)")


def read_organ_map(path: str | Path, names: str | Path | Mapping | None = "auto") -> OrganMap:
    """Read a label map and its structure names (``"auto"``, a names file, or a {name: value} mapping)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"organ map {path} does not exist", "give the label map file to import")
    if image_extension(path) in (".seg.nrrd", ".nrrd", ".nhdr"):
        # NRRD segmentations may hold several layers (a vector image), which read_image refuses
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            raise ImageError(f"organ map {path} could not be read: it is damaged or not a NRRD label map") from None
    else:
        image = read_image(path, "organ map", require_finite=False)
    if image.GetDimension() != 3:
        raise ImageError(f"organ map {path} is {image.GetDimension()}D; a 3D label map is needed")
    if names is None or (isinstance(names, str) and names == "auto"):
        segments, source = detect_names(path)
    elif isinstance(names, Mapping):
        segments, source = _names_from_table(names, "names"), "given names"
    else:
        segments, source = read_names_file(names), str(names)
    return OrganMap(image, segments, path, source)


# ---------------------------------------------------------------------------------  structure groups
@dataclass(frozen=True)
class StructureGroup:
    """Named set of structures (glob patterns over map names); ``merge_as`` makes them one class."""

    patterns: tuple[str, ...]
    merge_as: str | None = None
    description: str = ""


STRUCTURE_GROUPS: dict[str, StructureGroup] = {
    "abdominal_organs": StructureGroup(
        ("liver", "spleen", "kidney", "kidneys", "kidney_left", "kidney_right", "pancreas", "gallbladder",
         "stomach", "adrenal_gland*", "duodenum", "small_bowel", "colon", "urinary_bladder"),
        None, "liver, spleen, kidneys, pancreas, gallbladder, stomach, adrenals, bowel, bladder"),
    "kidneys": StructureGroup(("kidney", "kidneys", "kidney_left", "kidney_right"), None, "both kidneys"),
    "bowel": StructureGroup(("duodenum", "small_bowel", "colon"), None, "duodenum, small bowel, colon"),
    "lungs": StructureGroup(("lung", "lungs", "lung_left", "lung_right", "lung_*_lobe_*"), "lung",
                            "all lung lobes as one class 'lung'"),
    "bones": StructureGroup(("bone", "bones", "vertebrae*", "rib_*", "sacrum", "hip_*", "femur*", "humerus*",
                             "scapula*", "clavicula*", "sternum", "skull", "costal_cartilages"), "bone",
                            "the skeleton as one class 'bone'"),
    "vessels": StructureGroup(("aorta", "inferior_vena_cava", "superior_vena_cava", "portal_vein*",
                               "iliac_artery_*", "iliac_vena_*", "pulmonary_artery", "pulmonary_vein",
                               "brachiocephalic_*", "subclavian_artery_*", "common_carotid_artery_*"), "vessels",
                              "large vessels as one class 'vessels'"),
    "muscles": StructureGroup(("gluteus_*", "iliopsoas_*", "autochthon_*", "skeletal_muscle"), "muscle",
                              "large muscles as one class 'muscle'"),
    "heart": StructureGroup(("heart", "heart_*", "atrial_appendage_*"), "heart", "the heart as one class"),
}


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _group_for(token: str) -> StructureGroup | None:
    key = _norm(token)
    for candidate in (key, key + "s", key.rstrip("s")):
        if candidate in STRUCTURE_GROUPS:
            return STRUCTURE_GROUPS[candidate]
    return None


def select_structures(available: Iterable[str], request: str | Sequence[str], source: str = "the map"
                      ) -> list[tuple[str, list[str]]]:
    """Resolve a structure request into output classes: ``[(class name, [map structures])]``.

    Tokens (comma-separated): a structure name (case-insensitive), a group from ``STRUCTURE_GROUPS``
    ("abdominal organs"), a glob (``vertebrae_*``), or ``new=a+b`` to merge structures into one class.
    Unknown names raise a LabelError that lists close matches.
    """
    available = list(available)
    by_norm = {_norm(n): n for n in available}
    tokens = [t.strip() for t in (request.split(",") if isinstance(request, str) else request) if t.strip()]
    if not tokens:
        raise LabelError("no structures requested", "pass --structures a,b,c (names or groups)")
    result: list[tuple[str, list[str]]] = []
    unknown: list[str] = []

    def matches(pattern: str) -> list[str]:
        pattern = _norm(pattern)
        if any(c in pattern for c in "*?["):
            return [n for k, n in by_norm.items() if fnmatch.fnmatchcase(k, pattern)]
        return [by_norm[pattern]] if pattern in by_norm else []

    for token in tokens:
        if "=" in token:
            new_name, parts = token.split("=", 1)
            members = []
            for part in parts.split("+"):
                found = matches(part)
                if not found:
                    unknown.append(part.strip())
                members += found
            if members:
                result.append((new_name.strip(), list(dict.fromkeys(members))))
            continue
        found = matches(token)
        if found:
            result += [(n, [n]) for n in found]
            continue
        group = _group_for(token)
        if group is not None:
            members = list(dict.fromkeys(m for p in group.patterns for m in matches(p)))
            if not members:
                raise LabelError(f"group '{token}' matches no structure in {source}",
                                 f"it looks for {', '.join(group.patterns)}")
            if group.merge_as:
                result.append((group.merge_as, members))
            else:
                result += [(n, [n]) for n in members]
            continue
        unknown.append(token)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(_norm(name), list(by_norm), n=3, cutoff=0.6)
            if close:
                hints.append(f"'{name}': did you mean {', '.join(by_norm[c] for c in close)}?")
        shown = ", ".join(sorted(available)[:25]) + (f" and {len(available) - 25} more" if len(available) > 25 else "")
        raise LabelError(
            f"unknown structure{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} in {source}"
            + (f" ({' '.join(hints)})" if hints else ""),
            f"known: {shown}; groups: {', '.join(STRUCTURE_GROUPS)}",
        )
    names = [name for name, _ in result]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise LabelError(f"structures {duplicated} are requested twice", "list each structure once")
    return result


def import_organ_map(image: sitk.Image, organ_map: OrganMap, structures: str | Sequence[str]) -> AuxiliaryLabels:
    """Selected structures of ``organ_map`` on ``image``'s grid (nearest neighbour in physical space,
    so maps with flipped or oblique directions land in the right place)."""
    selection = select_structures(organ_map.segments, structures, str(organ_map.path))
    reference = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    reference.CopyInformation(image)
    masks = []
    for class_name, members in selection:
        union = None
        for member in members:
            mask = resample_like(organ_map.mask(member), reference, label=True)
            union = mask if union is None else sitk.Or(union, mask)
        masks.append((class_name, sitk.GetArrayFromImage(union).astype(bool)))
    empty = [name for name, mask in masks if not mask.any()]
    if len(empty) == len(masks):
        raise AuxiliaryError(
            f"none of the selected structures of {organ_map.path} overlaps the image after resampling",
            "check that the map belongs to this image (same patient and frame of reference)",
        )
    return _label_from_masks(masks, image)


# =====================================================================================  TotalSegmentator
TOTALSEG_INSTALL_HINT = (
    "install it into this Python with 'pip install TotalSegmentator' (it needs PyTorch) and get the weights "
    "once, with internet, by 'totalseg_download_weights -t total' (add '-t total_fast' for --fast); "
    "BackSplit never downloads at run time. Or run TotalSegmentator elsewhere and use --import SEG --names auto"
)
# nnU-Net dataset ids of the "total" task: five 1.5 mm parts, the 3 mm fast model, and the 6 mm model
# TotalSegmentator uses to crop around a --roi_subset.
TOTALSEG_WEIGHTS = {"default": (291, 292, 293, 294, 295, 298), "fast": (297, 298)}


def totalsegmentator_package_dir() -> Path | None:
    """The installed package folder, found without importing it (find_spec of a top-level package)."""
    spec = importlib.util.find_spec("totalsegmentator")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def totalsegmentator_weights_dir() -> Path:
    """Where TotalSegmentator keeps weights (its own rule: TOTALSEG_WEIGHTS_PATH, TOTALSEG_HOME_DIR, ~)."""
    if "TOTALSEG_WEIGHTS_PATH" in os.environ:
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    if "TOTALSEG_HOME_DIR" in os.environ:
        return Path(os.environ["TOTALSEG_HOME_DIR"]) / "nnunet" / "results"
    home = Path("/tmp") if str(Path.home()) == "/" else Path.home()
    return home / ".totalsegmentator" / "nnunet" / "results"


def totalsegmentator_missing_weights(fast: bool = False) -> list[int]:
    weights = totalsegmentator_weights_dir()
    present = {p.name.split("_")[0] for p in weights.glob("Dataset*_*")} if weights.is_dir() else set()
    return [i for i in TOTALSEG_WEIGHTS["fast" if fast else "default"] if f"Dataset{i}" not in present]


def totalsegmentator_status(fast: bool = False) -> tuple[bool, str]:
    """(usable, message) for the Slicer panel: is TotalSegmentator installed with its weights?"""
    package = totalsegmentator_package_dir()
    if package is None:
        return False, f"TotalSegmentator is not installed: {TOTALSEG_INSTALL_HINT}"
    missing = totalsegmentator_missing_weights(fast)
    if missing:
        return False, (f"TotalSegmentator is installed but its weights are missing in {totalsegmentator_weights_dir()} "
                       f"(Dataset{', Dataset'.join(map(str, missing))}): run 'totalseg_download_weights -t "
                       f"{'total_fast' if fast else 'total'}' once with internet, or set TOTALSEG_WEIGHTS_PATH")
    return True, f"TotalSegmentator at {package}"


def run_totalsegmentator(image_path: str | Path, structures: str | Sequence[str], image: sitk.Image | None = None,
                         fast: bool = False, device: str = "gpu", work_dir: str | Path | None = None,
                         timeout_s: float | None = None) -> AuxiliaryLabels:
    """Segment ``structures`` with an installed TotalSegmentator (in a child process) and import them.

    Raises AuxiliaryError naming exactly what to install when the package or its weights are missing.
    """
    image_path = Path(image_path)
    image = image if image is not None else read_image(image_path)
    package = totalsegmentator_package_dir()
    if package is None:
        raise AuxiliaryError("TotalSegmentator is not installed", TOTALSEG_INSTALL_HINT)
    table = totalsegmentator_class_map(package / "map_to_binary.py", "total")
    names = {name: Segment(0, value) for value, name in table.items()}
    selection = select_structures(names, structures, "TotalSegmentator's 'total' task")
    usable, message = totalsegmentator_status(fast)
    if not usable:
        raise AuxiliaryError(message)
    rois = list(dict.fromkeys(m for _, members in selection for m in members))
    with tempfile.TemporaryDirectory(prefix="backsplit-totalseg-", dir=work_dir) as tmp:
        out = Path(tmp) / "segmentation.nii.gz"
        command = [sys.executable, "-m", "totalsegmentator.bin.TotalSegmentator", "-i", str(image_path),
                   "-o", str(out), "--ml", "--roi_subset", *rois, "--device", device]
        if fast:
            command.append("--fast")
        try:
            done = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace",
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AuxiliaryError(f"TotalSegmentator did not finish within {timeout_s:g} s on {image_path}") from None
        if done.returncode != 0 or not out.is_file():
            last = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise AuxiliaryError(f"TotalSegmentator failed on {image_path} (exit {done.returncode}): {last[0][:200]}",
                                 "rerun it by hand to see the full log: " + " ".join(command[2:]))
        organ_map = read_organ_map(out, {n: s.value for n, s in names.items()})
        tokens = [f"{name}={'+'.join(members)}" for name, members in selection]
        return import_organ_map(image, organ_map, tokens)


# =====================================================================================  dataset mode
@dataclass
class DatasetUpdate:
    """What adding classes to a dataset did."""

    schema: LabelSchema
    added: list[str]
    cases: int
    voxels: dict[str, int]


def _read_training_case(case) -> tuple[sitk.Image, sitk.Image]:
    """A dataset case's image and label, checked to share one grid."""
    image = read_image(case.image, f"image of case {case.name}")
    label = read_image(case.label, f"label of case {case.name}", require_finite=False)
    check_same_geometry(image, label, str(case.image), str(case.label))
    return image, label


def add_classes_to_dataset(root: str | Path, make_classes: Callable[[sitk.Image], AuxiliaryLabels],
                           progress: Callable[[int, int, str], None] | None = None) -> DatasetUpdate:
    """Add automatic classes to every training case of a dataset, in place.

    New classes get values after the existing ones (``ignore`` stays highest; its voxels are remapped).
    Existing labels (target, organs, ignore) win: the new classes only fill background voxels. All label
    files are written to temporary names first and renamed only when every case succeeded; dataset.json
    is replaced last, atomically. Test labels (labelsTs) are remapped when ``ignore`` moves.
    """
    from BackSplitLib.dataset import Dataset

    dataset = Dataset.load(root)
    old = dataset.schema
    staged: list[tuple[Path, Path]] = []
    new_schema: LabelSchema | None = None
    voxels: dict[str, int] = {}
    try:
        for i, case in enumerate(dataset.training):
            if progress:
                progress(i, len(dataset.training), case.name)
            image, label = _read_training_case(case)
            aux = make_classes(image)
            if new_schema is None:
                clash = [n for n in aux.classes if n in (old.target, IGNORE, BACKGROUND)]
                if clash:
                    raise DatasetError(f"{dataset.root}/dataset.json: new class names {clash} clash with the target"
                                       " or reserved names")
                new_schema = old.with_auxiliary(aux.classes, colors=aux.colors)
            old_array = sitk.GetArrayFromImage(label).astype(np.int64)
            old.check_label_values(old_array, str(case.label))
            remap = new_schema.lookup_from(old)
            aux_lookup = np.zeros(max(aux.classes.values()) + 1, dtype=np.int64)
            for name, value in aux.classes.items():
                aux_lookup[value] = new_schema.labels[name]
            new_array = remap[old_array]
            fill = (old_array == 0) & (aux.array() > 0)
            new_array[fill] = aux_lookup[aux.array()[fill]]
            for name in aux.classes:
                voxels[name] = voxels.get(name, 0) + int(np.count_nonzero(new_array == new_schema.labels[name]))
            staged.append((_stage(new_array, label, case.label, new_schema), case.label))
        assert new_schema is not None
        remap = new_schema.lookup_from(old)
        if not np.array_equal(remap, np.arange(remap.size)):
            for case in dataset.test:
                if case.label is not None:
                    label = read_image(case.label, f"test label of case {case.name}", require_finite=False)
                    old_array = sitk.GetArrayFromImage(label).astype(np.int64)
                    old.check_label_values(old_array, str(case.label))
                    staged.append((_stage(remap[old_array], label, case.label, new_schema), case.label))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    _write_dataset_json(dataset, new_schema, list(aux.classes))
    if progress:
        progress(len(dataset.training), len(dataset.training), "")
    added = [n for n in new_schema.auxiliary_names if n not in old.labels]
    return DatasetUpdate(new_schema, added, len(dataset.training), voxels)


def _stage(array: np.ndarray, like: sitk.Image, final: Path, schema: LabelSchema) -> Path:
    """Write a label array beside ``final`` under a hidden temporary name; returns that name."""
    dtype = np.uint8 if max(schema.labels.values()) < 256 else np.uint16
    ext = image_extension(final) or ".nii.gz"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=ext, dir=final.parent)
    os.close(fd)
    write_image(image_from_array(array.astype(dtype), like), tmp)
    return Path(tmp)


def _write_dataset_json(dataset, schema: LabelSchema, new_classes: Sequence[str]) -> None:
    """Update dataset.json in place (other keys kept): labels, colours, and per-case labelled classes.

    Cases that labelled only some classes keep that list, plus the new classes (they are labelled now).
    """
    raw = dict(dataset.raw)
    raw["labels"] = dict(schema.labels)
    raw["target"] = schema.target
    raw["colors"] = {k: list(v) for k, v in schema.colors.items()}
    all_classes = set(dataset.schema.class_names)
    case_labels = dict(raw.get("case_labels") or {})
    for case in dataset.training:
        if set(case.labelled) != all_classes:
            names = sorted(set(case.labelled) - {BACKGROUND}, key=schema.labels.__getitem__)
            case_labels[case.name] = names + [n for n in new_classes if n not in names]
    if case_labels:
        raw["case_labels"] = case_labels
    if raw.get("cases_without_auxiliary"):
        # those cases now hold the new classes: case_labels (which takes priority) says which
        raw["cases_without_auxiliary"] = [c for c in raw["cases_without_auxiliary"] if c not in case_labels]
    path = dataset.root / "dataset.json"
    fd, tmp = tempfile.mkstemp(prefix=".dataset.json.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(raw, indent=2) + "\n")
    os.replace(tmp, path)


# =====================================================================================  advisor
@dataclass(frozen=True)
class StructureScore:
    """How much one candidate structure matters to the binary model's errors and to the lesions.

    ``fp_components`` / ``lesions_hosted`` count the false-positive components and true lesions that lie
    in or touch the structure; ``fp_share`` / ``host_share`` weight each of them by the fraction of its
    voxels and rim (a lesion: its rim) that the structure holds, so a structure that merely borders everything
    (fat, the body wall) does not outrank the one the component actually sits in.
    """

    name: str
    source: str
    fp_components: int
    fp_share: float
    lesions_hosted: int
    host_share: float
    cases: int
    score: float
    recommended: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AdvisorReport:
    structures: list[StructureScore]
    recommended: list[str]
    cases: int
    false_positive_components: int
    lesions: int

    def to_dict(self) -> dict:
        return {"cases": self.cases, "false_positive_components": self.false_positive_components,
                "lesions": self.lesions, "recommended": list(self.recommended),
                "structures": [s.to_dict() for s in self.structures]}


@dataclass
class AdvisorCase:
    """One case for the advisor: binary prediction, true lesion mask, candidate structure masks
    (boolean (z, y, x) arrays of one shape) and where each candidate came from."""

    prediction: np.ndarray
    truth: np.ndarray
    structures: Mapping[str, np.ndarray]
    sources: Mapping[str, str] = field(default_factory=dict)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a boolean array: (labels, count)."""
    image = sitk.GetImageFromArray(np.asarray(mask, dtype=np.uint8))
    labels = sitk.ConnectedComponent(image, True)
    array = sitk.GetArrayFromImage(labels)
    return array, int(array.max())


def _dilate(mask: np.ndarray, voxels: int) -> np.ndarray:
    if voxels <= 0:
        return np.asarray(mask, dtype=bool)
    image = sitk.GetImageFromArray(np.asarray(mask, dtype=np.uint8))
    return sitk.GetArrayFromImage(sitk.BinaryDilate(image, [voxels] * 3, sitk.sitkBox)).astype(bool)


def _with_rim(labels: np.ndarray, voxels: int) -> np.ndarray:
    """Component labels grown by a ``voxels``-wide rim (26-neighbourhood) into unlabelled voxels."""
    if voxels <= 0:
        return labels
    grown = sitk.GetArrayFromImage(sitk.GrayscaleDilate(sitk.GetImageFromArray(labels.astype(np.uint32)),
                                                        [voxels] * 3, sitk.sitkBox))
    return np.where(labels > 0, labels, grown)


def false_positive_components(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Component labels of ``prediction`` and the ids of those that neither overlap nor touch (26-neighbour)
    a true lesion: the binary model's false positives."""
    labels, count = _components(prediction)
    touching = set(np.unique(labels[_dilate(truth, 1)]).tolist()) - {0}
    return labels, [i for i in range(1, count + 1) if i not in touching]


def _contact(regions: np.ndarray, count: int, masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per structure: the fraction of each component's voxels-plus-rim that the structure holds."""
    inside = regions > 0
    ids = regions[inside]
    totals = np.maximum(np.bincount(ids, minlength=count + 1), 1)
    return {name: np.bincount(ids[mask[inside]], minlength=count + 1) / totals for name, mask in masks.items()}


def rank_structures(cases: Iterable[AdvisorCase], margin_voxels: int = 1, min_share: float = 0.1,
                    max_recommended: int = 5) -> AdvisorReport:
    """Rank candidate structures by (a) the model's false-positive components that lie in or touch them
    and (b) the true lesions that sit in or next to them (their host).

    "Touch" / "next to" means within ``margin_voxels`` (26-neighbourhood). Each component is shared
    among the structures by the fraction of its voxels and rim they hold; score = (a) share + (b) share.
    A structure is recommended when either share reaches ``min_share``; at most ``max_recommended``,
    best first. Pure: arrays in, report out (no model, no files), so it is testable on hand-made masks.
    """
    fp_count: dict[str, int] = {}
    fp_weight: dict[str, float] = {}
    host_count: dict[str, int] = {}
    host_weight: dict[str, float] = {}
    present: dict[str, int] = {}
    sources: dict[str, str] = {}
    total_fp = total_lesions = n_cases = 0
    for case in cases:
        n_cases += 1
        prediction = np.asarray(case.prediction, dtype=bool)
        truth = np.asarray(case.truth, dtype=bool)
        fp_labels, fp_ids = false_positive_components(prediction, truth)
        keep = np.zeros(int(fp_labels.max()) + 1, dtype=np.int64)
        keep[fp_ids] = np.arange(1, len(fp_ids) + 1)  # renumber false positives 1..n
        fp_regions = _with_rim(keep[fp_labels], margin_voxels)
        lesion_labels, n_lesions = _components(truth)
        # lesion voxels are never structure voxels (the target wins), so a lesion's host is judged by its rim
        lesion_regions = np.where(lesion_labels > 0, 0, _with_rim(lesion_labels, margin_voxels))
        total_fp += len(fp_ids)
        total_lesions += n_lesions
        masks = {}
        for name, mask in case.structures.items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != prediction.shape:
                raise LabelError(f"structure '{name}' has shape {mask.shape}, the prediction {prediction.shape}")
            sources.setdefault(name, case.sources.get(name, "dataset"))
            for table in (fp_count, host_count):
                table.setdefault(name, 0)
            for table in (fp_weight, host_weight):
                table.setdefault(name, 0.0)
            if mask.any():
                present[name] = present.get(name, 0) + 1
                masks[name] = mask
        for name, fraction in _contact(fp_regions, len(fp_ids), masks).items():
            fp_count[name] += int(np.count_nonzero(fraction[1:]))
            fp_weight[name] += float(fraction[1:].sum())
        for name, fraction in _contact(lesion_regions, n_lesions, masks).items():
            host_count[name] += int(np.count_nonzero(fraction[1:]))
            host_weight[name] += float(fraction[1:].sum())
    scores = []
    for name in fp_count:
        fp_share = fp_weight[name] / total_fp if total_fp else 0.0
        host_share = host_weight[name] / total_lesions if total_lesions else 0.0
        scores.append(StructureScore(name, sources[name], fp_count[name], fp_share, host_count[name], host_share,
                                     present.get(name, 0), fp_share + host_share))
    scores.sort(key=lambda s: (-s.score, -s.fp_components, -s.lesions_hosted, s.name))
    recommended = [s.name for s in scores if s.score > 0 and max(s.fp_share, s.host_share) >= min_share]
    recommended = recommended[:max_recommended]
    ranked = [StructureScore(**{**s.__dict__, "recommended": s.name in recommended}) for s in scores]
    return AdvisorReport(ranked, recommended, n_cases, total_fp, total_lesions)


def advise(run_dir: str | Path, dataset_root: str | Path, tissues: bool | None = None, device: str = "auto",
           min_share: float = 0.1, max_recommended: int = 5,
           progress: Callable[[int, int, str], None] | None = None) -> AdvisorReport:
    """Predict every training case with the binary model in ``run_dir`` and rank the dataset's auxiliary
    classes (where a case labels them) and, for CT datasets or ``tissues=True``, the CT tissue classes."""
    from BackSplitLib.dataset import Dataset
    from BackSplitLib.inference import Predictor  # torch: imported only here

    dataset = Dataset.load(dataset_root)
    if tissues is None:
        tissues = dataset.normalization == "CT"
    predictor = Predictor.from_run(run_dir, device=device)
    schema = dataset.schema

    def cases():
        for i, case in enumerate(dataset.training):
            if progress:
                progress(i, len(dataset.training), case.name)
            image, label = _read_training_case(case)
            label_array = sitk.GetArrayFromImage(label)
            mask = predictor.predict(image, probabilities=False, classes=False).mask
            prediction = sitk.GetArrayFromImage(mask) if isinstance(mask, sitk.Image) else np.asarray(mask)
            if prediction.shape != label_array.shape:
                raise RunError(f"the prediction of {case.image} has shape {prediction.shape}, its label "
                               f"{label_array.shape}", "the predictor must return masks on the input grid")
            structures = {n: label_array == schema.labels[n] for n in schema.auxiliary_names if n in case.labelled}
            source = {n: "dataset" for n in structures}
            truth = label_array == schema.target_value
            if tissues:
                # as when added to the dataset: labelled structures and the target win over tissue classes
                taken = np.logical_or.reduce([truth, *structures.values()])
                aux = ct_tissue_classes(image)
                aux_array = aux.array()
                for name, value in aux.classes.items():
                    if name not in structures:
                        structures[name], source[name] = (aux_array == value) & ~taken, "tissue"
            yield AdvisorCase(prediction, truth, structures, source)
        if progress:
            progress(len(dataset.training), len(dataset.training), "")

    return rank_structures(cases(), min_share=min_share, max_recommended=max_recommended)
