"""What an image file received over the network holds, decided from its bytes before any reader opens it.

A MetaImage header can name another file as its data (``ElementDataFile = /etc/passwd``), an NRRD header
too (``data file:``), and ITK follows them; a 54-byte ``.nii.gz`` can declare 4 GiB of voxels; a truncated
NIfTI is read zero-filled. So a received file is first *inspected* (standard library only, no ITK):

- its format comes from its content (the single-file NIfTI magic ``n+1``/``n+2``, plain or gzipped;
  ``NRRD000x``; a MetaImage text header), never from its name;
- it must be self-contained, judged strictly: no NRRD ``data file`` in any spelling; MetaImage only with
  exactly one ``ElementDataFile`` key, spelt as MetaIO spells it (MetaIO ignores ``elementdatafile`` and reads
  on to a later ``ElementDataFile``), ending the header, whose value is ``LOCAL`` (or ``Local``/``local``, the
  spellings MetaIO compares with; ``lOcAl`` it would open as a file name); no key twice; no control
  character inside a header line (NrrdIO ends a line at a lone carriage return, so ``content: x\rdata file:
  /etc/passwd`` is two lines to it and one to a ``\n`` splitter);
- the bytes its header declares (voxels x bytes per voxel) are compared with a limit before anything is
  allocated;
- its data is streamed once with bounded memory (compressed data decompressed a chunk at a time) to check
  that it is all there, and for float NIfTI that it holds no NaN/inf (ITK's reader zeroes them silently).

Whatever this parser concludes, the reader never sees the client's header: ``write_self_contained_copy``
writes a new header of BackSplit's own (whitelisted keys, numbers re-formatted, ``ElementDataFile = LOCAL``,
no ``data file``) followed by the received data bytes, and ``io.read_received_image`` reads that copy with the
matching ImageIO set explicitly. A parser mistake can then only garble the voxels of the client's own file,
never open another one. The CLI and the Slicer module read local files the user chose with ``io.read_image``
and keep detached headers.
"""

from __future__ import annotations

import bz2
import math
import re
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

from BackSplitLib.errors import ImageError

CHUNK = 1 << 20  # read and decompress at most this much at a time
MAX_HEADER = 1 << 16  # NRRD / MetaImage text headers are a few hundred bytes

# format -> (SimpleITK ImageIO name, canonical extension)
FORMATS = {"nifti": ("NiftiImageIO", ".nii"), "nifti-gz": ("NiftiImageIO", ".nii.gz"),
           "nrrd": ("NrrdImageIO", ".nrrd"), "meta": ("MetaImageIO", ".mha")}


class UnsupportedImageFile(ImageError):
    """Not a self-contained NIfTI / NRRD / MetaImage file (the server answers 415)."""


class ImageTooLarge(ImageError):
    """The header declares more bytes than allowed (the server answers 413)."""


class TruncatedImage(ImageError):
    """The file holds less data than its header declares."""


@dataclass
class ImageFileHeader:
    """What a received file's header declares, read from its bytes."""

    format: str  # a key of FORMATS
    sizes: Tuple[int, ...]
    bytes_per_voxel: int
    type_name: str
    data_offset: int  # where the voxel data starts (in the decompressed stream for nifti-gz)
    encoding: str = "raw"  # raw, gzip, zlib, bzip2, ascii
    float_dtype: Optional[str] = None  # numpy-style '<f4' when the data is float and worth scanning for NaN
    fields: Dict[str, str] = field(default_factory=dict)  # text headers: key (lower case) -> value
    metadata: List[str] = field(default_factory=list)  # NRRD key:=value lines, kept as they are

    @property
    def imageio(self) -> str:
        return FORMATS[self.format][0]

    @property
    def extension(self) -> str:
        return FORMATS[self.format][1]

    @property
    def voxels(self) -> int:
        return math.prod(self.sizes)

    @property
    def data_bytes(self) -> int:
        return self.voxels * self.bytes_per_voxel

    def describe(self) -> str:
        return f"{'x'.join(map(str, self.sizes))} {self.type_name} voxels ({format_bytes(self.data_bytes)})"


def check_self_contained(path: Union[str, Path], what: str = "the file") -> ImageFileHeader:
    """The header of a self-contained NIfTI / NRRD / MetaImage file, decided from its content.

    Raises UnsupportedImageFile for anything else: another format, a detached header (NIfTI pair, NRRD
    ``data file``, MetaImage ``ElementDataFile`` other than LOCAL), or a damaged header. ``what`` names the
    file in messages (e.g. the client's file name); messages never quote the file's bytes.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER)
    if head[:2] == b"\x1f\x8b":
        return _nifti_header(_gunzip_head(path, what), what, compressed=True)
    if len(head) >= 348 and _nifti_magic(head):
        return _nifti_header(head, what, compressed=False)
    if re.match(rb"NRRD000[1-9]\r?\n", head):
        return _nrrd_header(head, what)
    if re.match(rb"\s*(ObjectType|NDims|Comment|ObjectSubType)\s*=", head):
        return _meta_header(head, what)
    raise UnsupportedImageFile(f"{what} is not a NIfTI, NRRD or MetaImage file (judged from its content)",
                               "send a single-file .nii, .nii.gz, .nrrd or .mha volume")


def check_declared_size(header: ImageFileHeader, max_bytes: int, what: str = "the file") -> None:
    """ImageTooLarge when the header declares more voxel bytes than ``max_bytes``."""
    if header.data_bytes > max_bytes:
        raise ImageTooLarge(f"{what} declares {header.describe()}, more than this server's limit of "
                            f"{format_bytes(max_bytes)}",
                            "send a smaller or cropped volume, or ask the operator to raise --max-image-size")


def check_data_complete(path: Union[str, Path], header: ImageFileHeader, what: str = "the file") -> None:
    """Stream the voxel data once (bounded memory): TruncatedImage when it is shorter than declared,
    ImageError when float NIfTI data holds NaN or infinite values."""
    path = Path(path)
    needed = header.data_bytes
    if header.encoding == "ascii":  # one number per voxel component, as text
        got = _count_text_values(path, header.data_offset, header.voxels)
        if got < header.voxels:
            raise TruncatedImage(f"{what} is truncated ({got} of {header.voxels} values)")
        return
    scan = _NonFiniteCounter(header.float_dtype) if header.float_dtype else None
    got = 0
    for chunk in _data_chunks(path, header, what):
        take = chunk[: needed - got]
        if scan is not None:
            scan.feed(take)
        got += len(take)
        if got >= needed:
            break
    if got < needed:
        raise TruncatedImage(f"{what} is truncated ({got} of {needed} bytes)",
                             "the upload or the export was cut short; send the complete file")
    if scan is not None and scan.bad:
        raise ImageError(f"{what} has {scan.bad} NaN or infinite voxels",
                         "fill them (e.g. with the minimum intensity) before using the image")


def inspect_received_image(path: Union[str, Path], max_bytes: int, what: str = "the file") -> ImageFileHeader:
    """All three checks in order: self-contained, declared size, complete data."""
    header = check_self_contained(path, what)
    check_declared_size(header, max_bytes, what)
    check_data_complete(path, header, what)
    return header


# ---------------------------------------------------------------------- NIfTI
_NIFTI_TYPES = {2: ("uint8", 1), 4: ("int16", 2), 8: ("int32", 4), 16: ("float32", 4), 32: ("complex64", 8),
                64: ("float64", 8), 128: ("rgb24", 3), 256: ("int8", 1), 512: ("uint16", 2), 768: ("uint32", 4),
                1024: ("int64", 8), 1280: ("uint64", 8), 2304: ("rgba32", 4)}


def _nifti_magic(head: bytes) -> bool:
    return head[344:348] in (b"n+1\0", b"ni1\0") or head[4:8] in (b"n+2\0", b"ni2\0")


def _gunzip_head(path: Path, what: str) -> bytes:
    """The first 540 bytes of a gzip file's content (enough for either NIfTI header)."""
    out = b""
    for chunk in _gunzip_chunks(path, what):
        out += chunk
        if len(out) >= 540:
            break
    return out[:540]


def _nifti_header(head: bytes, what: str, compressed: bool) -> ImageFileHeader:
    if len(head) < 348 or not _nifti_magic(head):
        raise UnsupportedImageFile(f"{what} is gzip-compressed but holds no NIfTI image" if compressed else
                                   f"{what} is not a NIfTI file", "send a single-file .nii or .nii.gz volume")
    if head[344:347] == b"ni1" or head[4:7] == b"ni2":
        raise UnsupportedImageFile(f"{what} is the header of a NIfTI pair (.hdr/.img): its voxels are in another "
                                   "file", "send a single-file .nii or .nii.gz volume")
    version = 2 if head[4:7] == b"n+2" else 1
    size = 540 if version == 2 else 348
    endian = next((e for e in "<>" if struct.unpack(f"{e}i", head[:4])[0] == size), None)
    if endian is None:
        raise UnsupportedImageFile(f"{what} has a damaged NIfTI header (sizeof_hdr is not {size})")
    if version == 1:
        dims = struct.unpack(f"{endian}8h", head[40:56])
        datatype = struct.unpack(f"{endian}h", head[70:72])[0]
        offset = struct.unpack(f"{endian}f", head[108:112])[0]
    else:
        if len(head) < 540:
            raise UnsupportedImageFile(f"{what} has a damaged NIfTI-2 header (shorter than 540 bytes)")
        datatype = struct.unpack(f"{endian}h", head[12:14])[0]
        dims = struct.unpack(f"{endian}8q", head[16:80])
        offset = struct.unpack(f"{endian}q", head[168:176])[0]
    if not 1 <= dims[0] <= 7 or any(d < 1 for d in dims[1:dims[0] + 1]):
        raise UnsupportedImageFile(f"{what} has a damaged NIfTI header (dimensions {list(dims[1:max(dims[0], 0) + 1])})")
    if datatype not in _NIFTI_TYPES:
        raise UnsupportedImageFile(f"{what} has NIfTI data type {datatype}, which BackSplit does not read")
    if not math.isfinite(offset) or offset < size or offset > 1 << 30:
        raise UnsupportedImageFile(f"{what} has a damaged NIfTI header (vox_offset {offset})")
    name, nbytes = _NIFTI_TYPES[datatype]
    floats = {"float32": "f4", "float64": "f8"}.get(name)
    return ImageFileHeader("nifti-gz" if compressed else "nifti", tuple(int(d) for d in dims[1:dims[0] + 1]), nbytes,
                           name, int(offset), "gzip" if compressed else "raw",
                           f"{endian}{floats}" if floats else None)


# ---------------------------------------------------------------------- NRRD
_NRRD_TYPES: Dict[str, Tuple[str, int]] = {}
for _names, _type in (
    (("signed char", "int8", "int8_t"), ("int8", 1)),
    (("uchar", "unsigned char", "uint8", "uint8_t"), ("uint8", 1)),
    (("short", "short int", "signed short", "signed short int", "int16", "int16_t"), ("int16", 2)),
    (("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), ("uint16", 2)),
    (("int", "signed int", "int32", "int32_t"), ("int32", 4)),
    (("uint", "unsigned int", "uint32", "uint32_t"), ("uint32", 4)),
    (("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t"),
     ("int64", 8)),
    (("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), ("uint64", 8)),
    (("float",), ("float32", 4)), (("double",), ("float64", 8)),
):
    _NRRD_TYPES.update(dict.fromkeys(_names, _type))
_NRRD_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2",
                   "ascii": "ascii", "text": "ascii", "txt": "ascii"}


_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")  # any control character but tab (and the \n that ends a line)


def _text_header(head: bytes, what: str, end: Callable[[bytes], bool], kind: str) -> Tuple[list, bytes, int]:
    """Header lines before the one ``end`` accepts; returns (lines, that end line, offset after it).

    A line holding a control character (a lone carriage return above all: NrrdIO and MetaIO may end a line
    there, so what this parser sees as one line would be two to the reader) is refused.
    """
    lines, pos = [], 0
    while True:
        newline = head.find(b"\n", pos)
        if newline < 0:
            raise UnsupportedImageFile(f"{what} has no complete {kind} header in its first "
                                       f"{MAX_HEADER // 1024} KiB")
        line = head[pos:newline]
        line = line[:-1] if line.endswith(b"\r") else line
        pos = newline + 1
        if _CONTROL.search(line):
            raise UnsupportedImageFile(f"{what} has a control character inside a {kind} header line",
                                       "send the file as the imaging software wrote it")
        if end(line):
            return lines, line, pos
        lines.append(line)


def _nrrd_is_key_value(line: str) -> bool:
    """A ``key:=value`` line (free-form metadata, e.g. a .seg.nrrd's segment names): its first colon starts
    ':='. Anything else with a colon is a field, so a field can never hide behind a ':=' further on."""
    colon = line.find(":")
    return colon > 0 and line[colon:colon + 2] == ":="


def _nrrd_field_name(key: str) -> str:
    """Field names compared as loosely as any reader might: case, spaces and underscores ignored."""
    return re.sub(r"[\s_]", "", key).lower()


def _nrrd_header(head: bytes, what: str) -> ImageFileHeader:
    lines, _, offset = _text_header(head, what, lambda line: line == b"", "NRRD")
    fields: Dict[str, str] = {}
    metadata = []
    for raw in lines[1:]:
        line = raw.decode("latin-1")
        if line.startswith("#"):
            continue
        if _nrrd_is_key_value(line):
            metadata.append(line)
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise UnsupportedImageFile(f"{what} has a damaged NRRD header (a line without ':')")
        name = _nrrd_field_name(key)
        if name in fields:
            raise UnsupportedImageFile(f"{what} has an NRRD header that gives a field twice",
                                       "send the file as the imaging software wrote it")
        fields[name] = value.strip()
    if "datafile" in fields or any(_nrrd_field_name(m.split(":=", 1)[0]) == "datafile" for m in metadata):
        raise UnsupportedImageFile(f"{what} is an NRRD header whose voxels are in another file ('data file')",
                                   "send a single-file .nrrd (data attached)")
    for key in ("type", "dimension", "sizes", "encoding"):
        if key not in fields:
            raise UnsupportedImageFile(f"{what} has an NRRD header without '{key}'")
    type_name, nbytes = _NRRD_TYPES.get(fields["type"].lower(), (None, 0))
    encoding = _NRRD_ENCODINGS.get(fields["encoding"].lower())
    if type_name is None or encoding is None:
        raise UnsupportedImageFile(f"{what} has an NRRD type or encoding BackSplit does not read "
                                   f"({fields['type'][:20]!r}, {fields['encoding'][:20]!r})")
    try:
        sizes = tuple(int(s) for s in fields["sizes"].split())
        dimension = int(fields["dimension"])
        line_skip = int(fields.get("lineskip", "0"))
        byte_skip = int(fields.get("byteskip", "0"))
    except ValueError:
        raise UnsupportedImageFile(f"{what} has a damaged NRRD header (sizes or skips are not integers)") from None
    if len(sizes) != dimension or not sizes or any(s < 1 for s in sizes):
        raise UnsupportedImageFile(f"{what} has a damaged NRRD header (sizes {fields['sizes'][:60]!r})")
    if line_skip != 0 or byte_skip < -1 or (byte_skip == -1 and encoding != "raw"):
        raise UnsupportedImageFile(f"{what} uses NRRD line/byte skips, which the server does not accept")
    header = ImageFileHeader("nrrd", sizes, nbytes, type_name, offset, encoding, fields=fields, metadata=metadata)
    if byte_skip == -1:  # the data is the last data_bytes of the file
        header.data_offset = -1
    else:
        header.data_offset = offset + byte_skip
    return header


# ---------------------------------------------------------------------- MetaImage
_META_TYPES = {"MET_CHAR": ("int8", 1), "MET_UCHAR": ("uint8", 1), "MET_SHORT": ("int16", 2),
               "MET_USHORT": ("uint16", 2), "MET_INT": ("int32", 4), "MET_UINT": ("uint32", 4),
               "MET_LONG": ("int32", 4), "MET_ULONG": ("uint32", 4), "MET_LONG_LONG": ("int64", 8),
               "MET_ULONG_LONG": ("uint64", 8), "MET_FLOAT": ("float32", 4), "MET_DOUBLE": ("float64", 8)}
META_DATA_KEY = "ElementDataFile"  # the one spelling MetaIO reads (its field names compare case-sensitively)


def _meta_key(line: bytes) -> str:
    return line.split(b"=", 1)[0].strip().decode("latin-1")


def _meta_header(head: bytes, what: str) -> ImageFileHeader:
    # The header ends at the first key that any spelling of ElementDataFile; MetaIO would skip a variant
    # spelling and read on, so a variant is refused rather than taken as the end.
    lines, last, offset = _text_header(head, what, lambda line: _meta_key(line).lower() == META_DATA_KEY.lower(),
                                       "MetaImage")
    if _meta_key(last) != META_DATA_KEY:
        raise UnsupportedImageFile(f"{what} is a MetaImage header that names its data file as "
                                   f"{_meta_key(last)[:20]!r}, a spelling MetaIO skips to read a later key",
                                   "send a single-file .mha (ElementDataFile = LOCAL)")
    fields: Dict[str, str] = {}
    for line in lines:
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            raise UnsupportedImageFile(f"{what} has a damaged MetaImage header (a line without '=')")
        name = key.strip().lower()
        if name in fields:
            raise UnsupportedImageFile(f"{what} has a MetaImage header that gives a key twice",
                                       "send the file as the imaging software wrote it")
        fields[name] = value.strip()
    data_file = last.split(b"=", 1)[1].strip().decode("latin-1")
    if data_file not in ("LOCAL", "Local", "local"):  # MetaIO's own spellings; anything else it opens as a file
        raise UnsupportedImageFile(f"{what} is a MetaImage header whose voxels are in another file "
                                   "(ElementDataFile is not LOCAL)", "send a single-file .mha (ElementDataFile = LOCAL)")
    type_name, nbytes = _META_TYPES.get(fields.get("elementtype", "").upper(), (None, 0))
    if type_name is None:
        raise UnsupportedImageFile(f"{what} has a MetaImage element type BackSplit does not read "
                                   f"({fields.get('elementtype', 'none')[:20]!r})")
    try:
        sizes = tuple(int(s) for s in fields.get("dimsize", "").split())
        ndims = int(fields.get("ndims", len(sizes)))
        channels = int(fields.get("elementnumberofchannels", "1"))
    except ValueError:
        raise UnsupportedImageFile(f"{what} has a damaged MetaImage header (DimSize or NDims is not integers)") from None
    if not sizes or len(sizes) != ndims or any(s < 1 for s in sizes) or not 1 <= channels <= 64:
        raise UnsupportedImageFile(f"{what} has a damaged MetaImage header (DimSize {fields.get('dimsize', '')[:60]!r})")
    if fields.get("headersize", "0") not in ("0", ""):
        raise UnsupportedImageFile(f"{what} uses a MetaImage HeaderSize, which the server does not accept")
    if fields.get("objecttype", "Image").lower() != "image":
        raise UnsupportedImageFile(f"{what} is a MetaImage file of another object type than Image")
    compressed = fields.get("compresseddata", "false").lower() == "true"
    binary = fields.get("binarydata", "true").lower() != "false"
    encoding = "zlib" if compressed else ("raw" if binary else "ascii")
    return ImageFileHeader("meta", sizes + ((channels,) if channels > 1 else ()), nbytes, type_name, offset, encoding,
                           fields=fields)


# ---------------------------------------------------------------------- the header BackSplit writes itself
_META_GEOMETRY = (("ElementSpacing", ("elementspacing", "elementsize"), 1),
                  ("Offset", ("offset", "position", "origin"), 1),
                  ("TransformMatrix", ("transformmatrix", "rotation", "orientation"), 2))
# NRRD fields carried over, with what a value may hold: numbers and vectors, or a few words
_NUMERIC = re.compile(r"^[\s\w().,+\-]*$")
_NRRD_CARRIED = {"endian": ("endian", re.compile(r"^(little|big)$", re.I)),
                 "space": ("space", re.compile(r"^[\w\-]+$")),
                 "spacedimension": ("space dimension", re.compile(r"^\d+$")),
                 "spacedirections": ("space directions", _NUMERIC),
                 "spaceorigin": ("space origin", _NUMERIC),
                 "spacings": ("spacings", _NUMERIC), "thicknesses": ("thicknesses", _NUMERIC),
                 "axismins": ("axis mins", _NUMERIC), "axismaxs": ("axis maxs", _NUMERIC),
                 "centerings": ("centerings", re.compile(r"^[\w\s]*$")),
                 "kinds": ("kinds", re.compile(r"^[\w\s\-]*$")),
                 "measurementframe": ("measurement frame", _NUMERIC),
                 "spaceunits": ("space units", re.compile(r'^[\w\s"]*$'))}


def _meta_numbers(value: str, count: int, key: str, what: str) -> str:
    try:
        numbers = [float(v) for v in value.split()]
    except ValueError:
        numbers = []
    if len(numbers) != count:
        raise UnsupportedImageFile(f"{what} has a damaged MetaImage header ({key} is not {count} numbers)")
    return " ".join(repr(n) for n in numbers)


def _own_meta_header(header: ImageFileHeader, data_size: int, what: str) -> bytes:
    f = header.fields
    ndims = len(header.sizes) - (1 if int(f.get("elementnumberofchannels", "1")) > 1 else 0)
    out = ["ObjectType = Image", f"NDims = {ndims}", "DimSize = " + " ".join(map(str, header.sizes[:ndims]))]
    if ndims < len(header.sizes):
        out.append(f"ElementNumberOfChannels = {header.sizes[-1]}")
    out.append("ElementType = " + f["elementtype"].upper())
    out.append("BinaryData = " + ("False" if header.encoding == "ascii" else "True"))
    msb = f.get("binarydatabyteordermsb", f.get("elementbyteordermsb", "False")).lower() == "true"
    out.append(f"BinaryDataByteOrderMSB = {msb}")
    out.append(f"CompressedData = {header.encoding == 'zlib'}")
    if header.encoding == "zlib":
        out.append(f"CompressedDataSize = {data_size}")
    for name, keys, power in _META_GEOMETRY:
        value = next((f[k] for k in keys if k in f), None)
        if value is not None:
            out.append(f"{name} = {_meta_numbers(value, ndims ** power, name, what)}")
    orientation = f.get("anatomicalorientation", "")
    if re.fullmatch(r"[RLAPSI?]+", orientation.upper()) and len(orientation) == ndims:
        out.append(f"AnatomicalOrientation = {orientation.upper()}")
    out.append(f"{META_DATA_KEY} = LOCAL")
    return ("\n".join(out) + "\n").encode("latin-1")


def _own_nrrd_header(header: ImageFileHeader, what: str) -> bytes:
    f = header.fields
    nrrd_type = {"float32": "float", "float64": "double"}.get(header.type_name, header.type_name)
    out = ["NRRD0004", f"type: {nrrd_type}", f"dimension: {len(header.sizes)}",
           "sizes: " + " ".join(map(str, header.sizes)), f"encoding: {header.encoding}"]
    for name, (spelling, allowed) in _NRRD_CARRIED.items():
        if name in f:
            if not allowed.match(f[name]):
                raise UnsupportedImageFile(f"{what} has an NRRD '{spelling}' field BackSplit does not read")
            out.append(f"{spelling}: {f[name]}")
    out.extend(header.metadata)  # key:=value lines, each checked by _nrrd_is_key_value
    return ("\n".join(out) + "\n\n").encode("latin-1")


def write_self_contained_copy(path: Union[str, Path], header: ImageFileHeader, dest: Union[str, Path],
                              what: str = "the file") -> Path:
    """Write ``dest``: a header BackSplit writes itself from ``header`` (whitelisted keys only, the data
    always attached) followed by ``path``'s data bytes, copied unchanged; NIfTI, whose single-file form has no
    text header, is copied as it is. Readers open only ``dest``, so nothing in the client's header can make
    them open another file."""
    path, dest = Path(path), Path(dest)
    if header.format in ("nifti", "nifti-gz"):
        shutil.copyfile(path, dest)
        return dest
    size = path.stat().st_size
    start = header.data_offset if header.data_offset >= 0 else max(size - header.data_bytes, 0)
    own = _own_meta_header(header, size - start, what) if header.format == "meta" else _own_nrrd_header(header, what)
    with open(dest, "wb") as out:
        out.write(own)
        for chunk in _file_chunks(path, start):
            out.write(chunk)
    return dest


def read_through_own_copy(path: Union[str, Path], header: ImageFileHeader, dest: Union[str, Path],
                          what: str = "the file") -> ImageFileHeader:
    """Write ``dest`` with :func:`write_self_contained_copy` and return the copy's own header (its data offset
    is the copy's); ImageError when the copy does not declare what the gate read from the original."""
    write_self_contained_copy(path, header, dest, what)
    own = check_self_contained(dest, what)
    if own.sizes != header.sizes or own.bytes_per_voxel != header.bytes_per_voxel:
        raise ImageError(f"{what} could not be read: its header is damaged")
    return own


# ---------------------------------------------------------------------- streaming the data
def _gunzip_chunks(path: Path, what: str, wbits: int = 16 + zlib.MAX_WBITS, start: int = 0) -> Iterator[bytes]:
    """Decompressed content, at most CHUNK bytes at a time whatever the compression ratio (concatenated
    gzip members included, as zlib's gzread reads them)."""
    decoder = zlib.decompressobj(wbits)
    try:
        for data in _file_chunks(path, start):
            while data:
                out = decoder.decompress(data, CHUNK)
                if out:
                    yield out
                if decoder.eof:  # the next gzip member, unless only padding follows
                    data = decoder.unused_data
                    decoder = zlib.decompressobj(wbits)
                    if data.strip(b"\0") == b"":
                        data = b""
                else:
                    data = decoder.unconsumed_tail
    except zlib.error:
        raise ImageError(f"{what} could not be read: its compressed data is damaged") from None


def _bunzip_chunks(path: Path, start: int) -> Iterator[bytes]:
    decoder = bz2.BZ2Decompressor()
    with open(path, "rb") as f:
        f.seek(start)
        while not decoder.eof:
            data = f.read(CHUNK) if decoder.needs_input else b""
            if not data and decoder.needs_input:
                return
            yield decoder.decompress(data, CHUNK)


def _data_chunks(path: Path, header: ImageFileHeader, what: str) -> Iterator[bytes]:
    """The voxel bytes, decompressed, a bounded chunk at a time."""
    if header.format == "nifti-gz":
        skip = header.data_offset
        for chunk in _gunzip_chunks(path, what):
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            yield chunk[skip:]
            skip = 0
        return
    start = header.data_offset
    if start < 0:  # NRRD "byte skip: -1": the data ends the file
        start = max(path.stat().st_size - header.data_bytes, 0)
    if header.encoding == "gzip":
        yield from _gunzip_chunks(path, what, 16 + zlib.MAX_WBITS, start)
    elif header.encoding == "zlib":
        yield from _gunzip_chunks(path, what, 32 + zlib.MAX_WBITS, start)
    elif header.encoding == "bzip2":
        try:
            yield from _bunzip_chunks(path, start)
        except (OSError, ValueError, EOFError):
            raise ImageError(f"{what} could not be read: its compressed data is damaged") from None
    else:
        yield from _file_chunks(path, start)


def _file_chunks(path: Path, start: int) -> Iterator[bytes]:
    """The file's bytes from ``start`` on, CHUNK bytes at a time."""
    with open(path, "rb") as f:
        f.seek(start)
        while data := f.read(CHUNK):
            yield data


def _count_text_values(path: Path, start: int, needed: int) -> int:
    """Whitespace-separated values from ``start`` on (ASCII encodings), counted up to ``needed`` a chunk at a time."""
    count, partial = 0, False
    with open(path, "rb") as f:
        f.seek(start)
        while count < needed:
            data = f.read(CHUNK)
            if not data:
                break
            tokens = data.split()
            # a value cut by the chunk boundary continues the previous chunk's last token
            count += len(tokens) - (1 if partial and tokens and not data[:1].isspace() else 0)
            partial = not data[-1:].isspace()
    return count


class _NonFiniteCounter:
    """Counts NaN/inf in a stream of float bytes without holding more than one chunk."""

    def __init__(self, dtype: str):
        import numpy as np

        self.np = np
        self.dtype = np.dtype(dtype)
        self.rest = b""
        self.bad = 0

    def feed(self, data: bytes) -> None:
        data = self.rest + data
        usable = len(data) - len(data) % self.dtype.itemsize
        self.rest = data[usable:]
        if usable:
            values = self.np.frombuffer(data[:usable], self.dtype)
            self.bad += int(values.size - self.np.count_nonzero(self.np.isfinite(values)))



def format_bytes(n: float) -> str:
    """'2.0 GiB', '512 bytes': sizes in messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
