"""What the browser sends: a volume (or segmentation) file streamed to disk with a size limit, and a DICOM
series as a zip extracted with bounds.

Nothing here holds an upload in memory: the HTTP route hands chunks to :class:`StreamedFile`, which writes
them to a file and stops at ``max_bytes``. Every received file (volume, label map, ``.seg.nrrd``, organ map,
a case downloaded from the server) is opened only after the engine's upload gate, the same one the server
uses (:func:`BackSplitLib.io.read_received_image`, :func:`BackSplitLib.image_files.inspect_received_image`),
has found a self-contained NIfTI / NRRD / MetaImage whose declared size is within the limit and whose data
is all there, so a header naming another file on this machine is never followed and no reader meets a
truncated file or allocates what a tiny compressed file declares. A zip is a
DICOM series: member count, declared and actual sizes are bounded, members are written under numbered
names (no paths or links from the archive are used), and SimpleITK reads the series. trame-slicer's own
``.mrb`` loader is never used (its extraction is unbounded).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import SimpleITK as sitk

from BackSplitLib import io as engine_io
from BackSplitLib.errors import BackSplitError

from BackSplitLib.image_files import read_through_own_copy

MAX_DICOM_MEMBERS = 5000
COPY_CHUNK = 1 << 20
ZIP_MAGIC = b"PK\x03\x04"


class UploadError(BackSplitError):
    """An upload the app refuses (too large, not an image, a hostile archive)."""

    def __init__(self, message: str, hint: str | None = None, status: int = 400):
        super().__init__(message, hint)
        self.status = status


class StreamedFile:
    """A file written chunk by chunk, refused (and removed) as soon as it grows past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.size = 0
        self._handle = open(self.path, "wb")  # noqa: SIM115 (closed in close/abort)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.abort()
            raise UploadError(f"the upload is larger than the app's limit of {_human(self.max_bytes)}",
                              "start `backsplit web` with a larger --max-upload", status=413)
        self._handle.write(chunk)

    def close(self) -> Path:
        self._handle.close()
        if self.size == 0:
            self.path.unlink(missing_ok=True)
            raise UploadError("the upload is empty")
        return self.path

    def abort(self) -> None:
        self._handle.close()
        self.path.unlink(missing_ok=True)


def is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == ZIP_MAGIC


def received_segmentation(path: Path, max_bytes: int, what: str = "the segmentation") -> Path:
    """A ``.seg.nrrd`` through the engine's upload gate before Slicer's segmentation reader opens it: an
    attached-data NRRD (decided from its content), declaring at most ``max_bytes`` of voxels, its data all
    there (the reader aborts the process on a truncated file). UploadError otherwise."""
    header = _gate(lambda: engine_io.inspect_received_image(path, max_bytes, what))
    if header.format != "nrrd":
        raise UploadError(f"{what} is named .seg.nrrd but holds a {header.format} image",
                          "send the .seg.nrrd that Slicer saved, or the label map in its own format", status=415)
    # As for every received image, the reader opens a copy under a header BackSplit wrote (its segment
    # key:=value lines carried over), never the client's header.
    copy = path.with_name("received.seg.nrrd")
    _gate(lambda: read_through_own_copy(path, header, copy, what))
    return copy


def _gate(check):
    """The engine's gate, its refusals as UploadError: 413 for a declared size over the limit, else 415."""
    try:
        return check()
    except engine_io.ImageTooLarge as e:
        raise UploadError(e.message, "this app takes files up to --max-upload; a segmentation, label map or "
                          "organ map at most a few bytes per voxel of the open volume", status=413) from None
    except BackSplitError as e:
        raise UploadError(e.message, e.hint, status=415) from None


def extract_dicom_zip(archive: Path, dest: Path, max_bytes: int, max_members: int = MAX_DICOM_MEMBERS) -> Path:
    """Members of a DICOM zip written as ``dest/00000.dcm`` ...; bounded in count and in bytes written."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) > max_members:
                raise UploadError(f"the zip has {len(members)} files; at most {max_members} are accepted")
            if sum(m.file_size for m in members) > max_bytes:
                raise UploadError(f"the zip expands beyond the app's limit of {_human(max_bytes)}", status=413)
            written = 0
            for index, member in enumerate(members):
                _check_member(member)
                with zf.open(member) as src, open(dest / f"{index:05d}.dcm", "wb") as out:
                    while chunk := src.read(COPY_CHUNK):
                        written += len(chunk)  # declared sizes can lie: count what is really written
                        if written > max_bytes:
                            raise UploadError(f"the zip expands beyond the app's limit of {_human(max_bytes)}",
                                              status=413)
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise UploadError(f"the zip cannot be read ({type(e).__name__})") from None
    except UploadError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _check_member(member: zipfile.ZipInfo) -> None:
    name = member.filename
    if name.startswith(("/", "\\")) or ".." in Path(name.replace("\\", "/")).parts or ":" in name:
        raise UploadError("the zip names a file outside its own folder; it is refused")
    if (member.external_attr >> 16) & 0o170000 == 0o120000:
        raise UploadError("the zip holds a symbolic link; it is refused")


def upload_name(client_name: str) -> str:
    """A local file name for an upload: fixed stem, the client's image extension kept so readers know it."""
    return "upload" + (engine_io.image_extension(client_name) or ".bin")


def file_stem(name: str) -> str:
    """A safe local file stem from a client's or a node's name (no paths, no odd characters)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "volume"


def received_image(upload: Path, work: Path, max_bytes: int, what: str = "uploaded volume") -> sitk.Image:
    """An uploaded volume as a SimpleITK image: a file through the engine's upload gate (the same reader the
    server uses for what crosses the network), or the series in a DICOM zip."""
    if is_zip(upload):
        folder = extract_dicom_zip(upload, work / "dicom", max_bytes)
        try:
            return _gate(lambda: engine_io.read_received_dicom_series(folder, what, max_bytes))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    # the server's own gate: self-contained, size declared within the limit, complete, read by content
    return _gate(lambda: engine_io.read_received_image(upload, what, max_bytes).image)


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
