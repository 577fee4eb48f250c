"""Organ maps: label maps with named structures and the formats that name them.

Names come from the map's header (Slicer .seg.nrrd segments, a NIfTI CIFTI/Caret label table) or from a
names file beside it (JSON, CSV, a Slicer colour table, an nnU-Net dataset.json, TotalSegmentator's
``map_to_binary.py``); selected structures are resampled onto the image's grid as auxiliary classes.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import os
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BackSplitLib.auxiliary.labels import AuxiliaryError, AuxiliaryLabels, label_from_masks
from BackSplitLib.auxiliary.structures import select_structures
from BackSplitLib.errors import ImageError, LabelError
from BackSplitLib.io import image_extension, read_image, resample_like
from BackSplitLib.schema import BACKGROUND


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
    return label_from_masks(masks, image)
