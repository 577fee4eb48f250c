"""Image I/O with SimpleITK and the one geometry rule every layer uses. Torch-free.

Supported inputs: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``, ``.seg.nrrd``), MetaImage
(``.mha``, ``.mhd``) and DICOM series folders. Geometry is always SimpleITK's physical convention (LPS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BackSplitLib.atomic import atomic_file
from BackSplitLib.errors import GeometryError, ImageError
from BackSplitLib.image_files import (  # noqa: F401 (check_self_contained: the upload gate's public name)
    ImageFileHeader, ImageTooLarge, check_data_complete, check_declared_size, check_self_contained,
    inspect_received_image, read_through_own_copy,
)
from BackSplitLib.image_geometry import check_declared_geometry, check_geometry
from BackSplitLib.schema import LabelSchema

IMAGE_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

# The geometry rule (issue contract): same size; spacing equal within 1e-4 relative; direction cosines
# within 1e-4; origin within 1e-3 x the smallest spacing.
SPACING_RTOL = 1e-4
DIRECTION_ATOL = 1e-4
ORIGIN_TOL_FRACTION = 1e-3


def image_extension(path: str | Path) -> str:
    """The recognised (possibly double) extension of ``path``, lower-case, or '' if none matches."""
    name = Path(path).name.lower()
    for ext in IMAGE_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return ""


def output_extension(path: str | Path) -> str:
    """Extension for outputs that follow an input: NIfTI -> .nii.gz, NRRD -> .nrrd, DICOM/other -> .nii.gz."""
    ext = image_extension(path)
    if ext in (".nrrd", ".nhdr", ".seg.nrrd"):
        return ".nrrd"
    if ext in (".mha", ".mhd"):
        return ".mha"
    return ".nii.gz"


def case_name(path: str | Path) -> str:
    """Case name of an image path: without extension and without nnU-Net's channel suffix ``_0000``."""
    path = Path(path)
    ext = image_extension(path)
    name = path.name[: -len(ext)] if ext else path.name
    return re.sub(r"_\d{4}$", "", name)


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of an image: size (x, y, z), spacing, origin and row-major 3x3 direction (LPS)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    def apply(self, image: sitk.Image) -> sitk.Image:
        if tuple(image.GetSize()) != tuple(self.size):
            raise GeometryError(f"cannot apply geometry of size {self.size} to an image of size {image.GetSize()}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def to_dict(self) -> dict:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(tuple(int(v) for v in d["size"]), tuple(map(float, d["spacing"])),
                   tuple(map(float, d["origin"])), tuple(map(float, d["direction"])))

    def describe(self) -> str:
        fmt = lambda xs: "(" + ", ".join(f"{x:.4g}" for x in xs) + ")"  # noqa: E731
        return (f"size {tuple(self.size)}, spacing {fmt(self.spacing)}, origin {fmt(self.origin)}, "
                f"direction {fmt(self.direction)}")

    def mismatch(self, other: Geometry) -> str | None:
        """Which part of the rule ``other`` breaks, or None when the grids are the same."""
        if tuple(self.size) != tuple(other.size):
            return "size"
        a, b = np.asarray(self.spacing), np.asarray(other.spacing)
        if np.any(np.abs(a - b) > SPACING_RTOL * np.maximum(np.abs(a), np.abs(b))):
            return "spacing"
        if np.any(np.abs(np.asarray(self.direction) - np.asarray(other.direction)) > DIRECTION_ATOL):
            return "direction"
        tol = ORIGIN_TOL_FRACTION * float(min(min(self.spacing), min(other.spacing)))
        if np.any(np.abs(np.asarray(self.origin) - np.asarray(other.origin)) > tol):
            return "origin"
        return None


def same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return Geometry.of(a).mismatch(Geometry.of(b)) is None


def check_same_geometry(reference: sitk.Image, other: sitk.Image, reference_name: str = "image",
                        other_name: str = "label") -> None:
    """Raise GeometryError, printing both geometries, when ``other`` is not on ``reference``'s grid."""
    ga, gb = Geometry.of(reference), Geometry.of(other)
    part = ga.mismatch(gb)
    if part:
        raise GeometryError(
            f"{other_name} does not match {reference_name} ({part} differs): "
            f"{reference_name} has {ga.describe()}; {other_name} has {gb.describe()}",
            "resample the label onto the image (e.g. --resample-labels) or export both from the same volume",
        )


def resample_like(image: sitk.Image, reference: sitk.Image, label: bool = True,
                  default_value: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid in physical space (nearest neighbour for labels).

    Works for any relative direction (flipped or oblique grids), because SimpleITK maps through physical
    coordinates.
    """
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default_value, image.GetPixelID())


def read_image(path: str | Path, what: str = "image", require_3d: bool = True,
               require_finite: bool = True) -> sitk.Image:
    """Read a 3D image (file or DICOM series folder); errors say what is wrong with which file."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{what} {path} does not exist")
    kind = {".nii": "nifti", ".nii.gz": "nifti-gz", ".mha": "meta", ".mhd": "meta"}.get(image_extension(path))
    if kind and path.is_file():  # the numbers the header holds, before a reader repairs them silently
        check_declared_geometry(path, kind, f"{what} {path}")
    try:
        if path.is_dir():
            image = _read_dicom_series(path, what)
        else:
            if not image_extension(path):
                raise ImageError(
                    f"{what} {path} is not a supported image file",
                    f"use one of {', '.join(IMAGE_EXTENSIONS)} or a DICOM series folder",
                )
            image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((ln for ln in first if "ERROR" in ln or "exception" in ln.lower()), first[-1] if first else "")
        raise ImageError(f"{what} {path} could not be read: it is damaged or not an image ({detail.strip()[:160]})") from None
    if require_3d:
        check_3d(image, f"{what} {path}")
    check_geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection(), f"{what} {path}")
    if require_finite:
        check_finite(image, f"{what} {path}")
        if image_extension(path) in (".nii", ".nii.gz") and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
            _check_nifti_finite(path, f"{what} {path}")
    return image


@dataclass
class ReceivedImage:
    """An image file received over the network, read: the image, the file (renamed to the extension its
    content has) and what its header declared."""

    image: sitk.Image
    path: Path
    header: ImageFileHeader


@dataclass
class ReceivedHeader:
    """A received file whose header passed the gate, not decoded yet: what it declares (format, bytes,
    geometry), so the caller can compare two files and reserve memory before either is decoded."""

    path: Path
    header: ImageFileHeader
    geometry: Geometry
    what: str
    reader: sitk.ImageFileReader
    complete: bool = False

    def check_complete(self) -> None:
        """Stream the data once (bounded memory): TruncatedImage when it is shorter than declared."""
        if not self.complete:
            check_data_complete(self.path, self.header, self.what)
            self.complete = True

    def read(self) -> ReceivedImage:
        """Check that the data is complete, then decode it."""
        self.check_complete()
        try:
            image = self.reader.Execute()
        except RuntimeError:  # ITK's text names the file's path: say what is wrong without it
            raise ImageError(f"{self.what} could not be read: it is damaged or not an image") from None
        check_3d(image, self.what)
        check_finite(image, self.what)
        return ReceivedImage(image, self.path, self.header)


def open_received_image(path: str | Path, what: str, max_bytes: int) -> ReceivedHeader:
    """The header of a file that crossed the network: self-contained (decided from its content), at most
    ``max_bytes`` of voxels, one 3D channel, a usable geometry (``image_geometry``); read with the ImageIO
    its content calls for, so the file's name cannot route it to another reader. Nothing is decoded yet.
    Messages name ``what`` (the client's name), never the path or bytes."""
    path = Path(path)
    header = check_self_contained(path, what)
    check_declared_size(header, max_bytes, what)
    ext = image_extension(path)
    # The reader opens a copy under a header BackSplit wrote (data attached, whitelisted keys), never the
    # client's header; its name follows the content (NiftiImageIO goes by the name to find gzip).
    own = path.with_name((path.name[: -len(ext)] if ext else path.name) + header.extension)
    with atomic_file(own, suffix=header.extension) as tmp:
        header = read_through_own_copy(path, header, tmp, what)
    if own != path:
        path.unlink()
    path = own
    check_declared_geometry(path, header.format, what)
    reader = sitk.ImageFileReader()
    reader.SetImageIO(header.imageio)
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ImageError(f"{what} could not be read: it is damaged or not an image") from None
    size, components = reader.GetSize(), reader.GetNumberOfComponents()
    pixel = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), components)
    declared = int(np.prod(size, dtype=np.float64)) * pixel.GetSizeOfPixelComponent() * components
    if declared > max_bytes:
        raise ImageTooLarge(f"{what} declares {declared} bytes of voxels, more than this server's limit of "
                            f"{max_bytes}", "send a smaller or cropped volume")
    if len(size) != 3 or components != 1 or min(size) < 2:
        raise ImageError(f"{what} is not a single-channel 3D volume (size {tuple(size)}, {components} "
                         "components per voxel)", "split 4D or multi-channel data into 3D volumes first")
    geometry = Geometry(tuple(size), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                        tuple(reader.GetDirection()))
    check_geometry(geometry.spacing, geometry.origin, geometry.direction, what)
    return ReceivedHeader(path, header, geometry, what, reader)


def read_received_image(path: str | Path, what: str, max_bytes: int) -> ReceivedImage:
    """``open_received_image`` then ``read``: the whole upload gate for one file."""
    return open_received_image(path, what, max_bytes).read()


def read_received_dicom_series(folder: str | Path, what: str, max_bytes: int) -> sitk.Image:
    """A DICOM series that crossed the network (the files of an uploaded zip). Every file's header is read by
    GDCM, the reader that will decode it, and the voxel bytes the series declares (rows x columns x frames x
    components x bytes per sample, summed over files) must stay within ``max_bytes`` before any pixel is
    decoded: a few kilobytes of RLE or JPEG can declare gigabytes. Messages name ``what``, never the folder."""
    folder = str(folder)
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
        if len(series) != 1:
            raise ImageError(f"{what} holds {len(series) or 'no'} DICOM series" + ("; put one series per zip"
                             if series else ""), "send the files of one DICOM series")
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series[0])
        declared = 0
        for name in files:
            reader = sitk.ImageFileReader()
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileName(name)
            reader.ReadImageInformation()
            components = reader.GetNumberOfComponents()
            pixel = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), components)
            declared += int(np.prod(reader.GetSize(), dtype=np.float64)) * pixel.GetSizeOfPixelComponent() * components
            if declared > max_bytes:
                raise ImageTooLarge(f"{what} declares more than {max_bytes} bytes of voxels in its DICOM headers, "
                                    "more than this server's limit", "send a smaller or cropped series")
        series_reader = sitk.ImageSeriesReader()
        series_reader.SetFileNames(files)
        image = series_reader.Execute()
    except RuntimeError:
        raise ImageError(f"{what} could not be read as a DICOM series: a file is damaged or not DICOM") from None
    check_3d(image, what)
    check_geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection(), what)
    check_finite(image, what)
    return image


def check_same_declared_geometry(reference: ReceivedHeader, other: ReceivedHeader) -> None:
    """The geometry rule of ``check_same_geometry`` on two headers, before either file is decoded."""
    part = reference.geometry.mismatch(other.geometry)
    if part:
        raise GeometryError(
            f"{other.what} does not match {reference.what} ({part} differs): {reference.what} has "
            f"{reference.geometry.describe()}; {other.what} has {other.geometry.describe()}",
            "resample the label onto the image (e.g. --resample-labels) or export both from the same volume")


def _check_nifti_finite(path: Path, source: str) -> None:
    """ITK's NIfTI reader silently turns NaN and inf into 0, so look at the stored values with nibabel
    (when installed) rather than train on data that was quietly changed."""
    try:
        import nibabel
    except ImportError:  # pragma: no cover - nibabel comes with the engine's dependencies
        return
    data = np.asanyarray(nibabel.load(str(path)).dataobj)
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ImageError(f"{source} has {bad} NaN or infinite voxels",
                         "fill them (e.g. with the minimum intensity) before using the image")


def _read_dicom_series(folder: Path, what: str) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise ImageError(f"{what} folder {folder} holds no DICOM series",
                         "point to a DICOM series folder or an image file")
    if len(series) > 1:
        raise ImageError(f"{what} folder {folder} holds {len(series)} DICOM series; put one series per folder")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def check_3d(image: sitk.Image, source: str) -> None:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        comps = image.GetNumberOfComponentsPerPixel()
        shape = f"{image.GetDimension()}D" + (f" with {comps} components per voxel" if comps > 1 else "")
        raise ImageError(f"{source} is {shape}; BackSplit needs a single-channel 3D volume",
                         "split 4D or multi-channel data into 3D volumes first")
    if min(image.GetSize()) < 2:
        raise ImageError(f"{source} has size {image.GetSize()}: a single slice is a 2D image, not a volume")


def check_finite(image: sitk.Image, source: str) -> None:
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise ImageError(f"{source} has {bad} NaN or infinite voxels",
                             "fill them (e.g. with the minimum intensity) before using the image")


def write_image(image: sitk.Image, path: str | Path, compress: bool = True) -> Path:
    """Write atomically: to a temporary file in the same folder, then rename (no half-written outputs)."""
    path = Path(path)
    with atomic_file(path, suffix=image_extension(path) or ".nii.gz") as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path


def write_label(values: np.ndarray, like: sitk.Image, path: str | Path, schema: LabelSchema) -> Path:
    """Write a label map of ``schema`` values on ``like``'s grid, atomically, in the schema's pixel type
    (uint8, or uint16 past value 255): the one way every layer writes a relabelled map."""
    return write_image(image_from_array(np.asarray(values).astype(schema.label_dtype, copy=False), like), path)


def image_from_array(array: np.ndarray, geometry: Geometry | sitk.Image) -> sitk.Image:
    """SimpleITK image from a (z, y, x) array with the given geometry (or a reference image's)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    if isinstance(geometry, sitk.Image):
        image.CopyInformation(geometry)
    else:
        geometry.apply(image)
    return image
