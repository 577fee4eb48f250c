"""Whether an image's geometry is usable: spacing positive, finite and in a physical range, origin finite,
direction invertible. The CLI (``io.read_image``) and the server (``io.open_received_image``) both call it.

Two places are checked, because the readers repair some values silently: ITK's NIfTI reader turns a 0, NaN
or infinite ``pixdim`` into spacing 1.0 and a NaN ``qoffset`` into 0; MetaIO reads a NaN ``Offset`` or
``TransformMatrix`` entry as 0. So ``check_declared_geometry`` looks at the numbers the header itself holds
(NIfTI through nibabel's header parser, MetaImage's text keys), and ``check_geometry`` at what the reader
reports. Spacing 1e300 or 1e-300 is finite and positive but would make resampling allocate without bound,
hence the range.
"""

from __future__ import annotations

import gzip
import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from BackSplitLib.errors import GeometryError

SPACING_RANGE_MM = (1e-4, 1e4)  # 0.1 micrometre (micro-CT is ~1 um) to 10 m
MIN_DIRECTION_DETERMINANT = 1e-6  # direction cosines are orthonormal (|det| = 1); near 0 cannot be inverted
# MetaImage keys (compared lower-case) that hold geometry, and the part each one sets
_META_GEOMETRY_KEYS = {"offset": "origin", "position": "origin", "origin": "origin", "elementspacing": "spacing",
                       "elementsize": "spacing", "transformmatrix": "direction", "rotation": "direction",
                       "orientation": "direction", "centerofrotation": "center of rotation"}
_HINT = "fix the image's header (spacing in mm, origin, direction) where it was exported"


def check_geometry(spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float],
                   source: str) -> None:
    """GeometryError naming the first unusable part: spacing, origin or direction."""
    low, high = SPACING_RANGE_MM
    for axis, value in zip("xyzt", spacing):
        if not math.isfinite(value) or value <= 0:
            raise GeometryError(f"{source} has spacing {value!r} along {axis}; spacing must be a positive, "
                                "finite number of millimetres", _HINT)
        if not low <= value <= high:
            raise GeometryError(f"{source} has spacing {value:.4g} mm along {axis}, outside {low:g} to {high:g} mm",
                                _HINT)
    if not all(math.isfinite(v) for v in origin):
        raise GeometryError(f"{source} has a non-finite origin ({', '.join(f'{v:.4g}' for v in origin)})", _HINT)
    n = len(spacing)
    matrix = np.asarray(direction, dtype=np.float64)
    if matrix.size != n * n or not np.all(np.isfinite(matrix)):
        raise GeometryError(f"{source} has a direction matrix with non-finite entries", _HINT)
    det = float(np.linalg.det(matrix.reshape(n, n)))
    if abs(det) < MIN_DIRECTION_DETERMINANT:
        raise GeometryError(f"{source} has a singular direction matrix (determinant {det:.3g}): its axes do not "
                            "span space", _HINT)


def check_declared_geometry(path: str | Path, kind: str, source: str) -> None:
    """The header's own spacing / origin / direction numbers, before a reader repairs them. ``kind`` is
    'nifti', 'nifti-gz' or 'meta' (other formats are left to ``check_geometry``: NRRD's reader refuses
    non-finite vectors itself)."""
    if kind in ("nifti", "nifti-gz"):
        _check_nifti_header(Path(path), source)
    elif kind == "meta":
        _check_meta_header(Path(path), source)


def _check_nifti_header(path: Path, source: str) -> None:
    import nibabel

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(544)  # NIfTI-2's header size; NIfTI-1 uses the first 348 bytes
        klass = nibabel.Nifti2Header if head[4:8] in (b"n+2\0", b"ni2\0") else nibabel.Nifti1Header
        header = klass.from_fileobj(io.BytesIO(head), check=False)
        ndim = int(header["dim"][0])
    except Exception:  # noqa: BLE001 - nibabel's own errors: the ITK read reports a damaged file
        return
    spatial = max(1, min(3, ndim))
    pixdim = [float(v) for v in header["pixdim"][1:1 + spatial]]
    for axis, value in zip("xyz", pixdim):
        if not math.isfinite(value) or value <= 0:  # ITK reads 0, NaN and inf as 1.0 and keeps the sign
            raise GeometryError(f"{source} declares spacing (pixdim) {value!r} along {axis}; spacing must be a "
                                "positive, finite number (the NIfTI reader would have silently changed it)", _HINT)
    if int(header["qform_code"]) > 0:
        quaternion = [float(header[k]) for k in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y",
                                                 "qoffset_z")]
        if not all(math.isfinite(v) for v in quaternion):
            raise GeometryError(f"{source} declares a non-finite origin or direction (NIfTI qform); the NIfTI "
                                "reader would silently use 0", _HINT)
    if int(header["sform_code"]) > 0:
        rows = [float(v) for k in ("srow_x", "srow_y", "srow_z") for v in header[k]]
        if not all(math.isfinite(v) for v in rows):
            raise GeometryError(f"{source} declares a non-finite origin or direction (NIfTI sform)", _HINT)


def _check_meta_header(path: Path, source: str) -> None:
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    for raw in head.split(b"\n"):
        key, sep, value = raw.decode("latin-1").partition("=")
        key = key.strip().lower()
        if key == "elementdatafile" or not sep:
            if key == "elementdatafile":
                return
            continue
        if key in _META_GEOMETRY_KEYS:
            for token in value.split():
                try:
                    number = float(token)
                except ValueError:
                    number = math.nan
                if not math.isfinite(number):
                    raise GeometryError(f"{source} declares a non-finite {_META_GEOMETRY_KEYS[key]} (MetaImage "
                                        f"{key!r}); MetaIO would silently read 0", _HINT)


def resampled_voxels(size: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> float:
    """Voxels of an image of ``size`` x ``spacing`` once resampled to ``target_spacing``: the physical volume
    over the target voxel's volume (independent of axis order, so the RAS reorientation does not matter)."""
    volume = math.prod(float(n) * float(s) for n, s in zip(size, spacing))
    return volume / math.prod(float(t) for t in target_spacing)
