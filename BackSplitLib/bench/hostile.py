"""Hostile inputs for the server, built in memory, and the ``bench server`` row that throws them at it.

Each input is a raw HTTP request body (multipart built byte by byte, so file names go on the wire exactly
as given): headers that name other files, header and gzip bombs, truncated data, odd zips, JSON nested
100k deep, bad colours, NUL and bidi-override file names. The server's tests use the same builders.
``measure_hostile`` posts them all, counts what was refused and stored, reads the API process's peak
resident memory from the kernel (VmHWM), and holds idle sockets open to see that the server keeps
answering and closes them after its header timeout. Issue 19 added bodies the server must refuse from the
request head, cross-site writes, absurd geometry, an 800^3 image with a mismatched label, a model whose
spacing would make prediction allocate terabytes and an absurd job (``issue_19_requests``).
"""

from __future__ import annotations

import gzip
import io
import json
import socket
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = {"labels": {"background": 0, "lesion": 1}, "target": "lesion"}
BOUNDARY = b"backsplit-hostile-boundary-7d1f"


def multipart(parts: list[tuple[bytes, bytes | None, bytes]]) -> tuple[bytes, dict]:
    """A multipart/form-data body from (field name, file name or None, content), byte for byte."""
    body = b""
    for name, filename, content in parts:
        disposition = b'form-data; name="' + name + b'"' + (b'; filename="' + filename + b'"' if filename is not None
                                                            else b"")
        body += b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + content + b"\r\n"
    body += b"--" + BOUNDARY + b"--\r\n"
    return body, {"Content-Type": "multipart/form-data; boundary=" + BOUNDARY.decode()}


# ---------------------------------------------------------------------- image files
def nifti_header(dims, datatype: int = 16, bitpix: int = 32) -> bytes:
    """A single-file NIfTI-1 header (little-endian) declaring ``dims`` voxels of ``datatype``."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)
    header[344:348] = b"n+1\0"
    return bytes(header)


_ZEROS: list[bytes] = []


def zeros_member() -> bytes:
    """One gzip member of 64 MiB of zeros (~64 KiB), built once."""
    if not _ZEROS:
        _ZEROS.append(gzip.compress(bytes(64 << 20), 9))
    return _ZEROS[0]


def expanding_nifti(dims, members: int) -> bytes:
    """A .nii.gz declaring ``dims`` float32 whose data is ``members`` x 64 MiB of zeros (concatenated gzip
    members, as zlib reads them): megabytes on the wire, gigabytes once expanded."""
    return gzip.compress(nifti_header(dims), 1) + zeros_member() * members


def metaimage(element_type: str, data_file: str, sizes: str = "2 2 2") -> bytes:
    return (f"ObjectType = Image\nNDims = 3\nDimSize = {sizes}\nElementType = {element_type}\n"
            f"ElementDataFile = {data_file}\n").encode()


def compressed_metaimage(sizes: str) -> bytes:
    data = zlib.compress(bytes(1 << 20))
    return (f"ObjectType = Image\nNDims = 3\nDimSize = {sizes}\nElementType = MET_FLOAT\nCompressedData = True\n"
            f"CompressedDataSize = {len(data)}\nElementDataFile = LOCAL\n").encode() + data


def nifti_volume(dims=(8, 8, 8), pixdim=(1.0, 1.0, 1.0), qoffset=None, datatype: int = 2, bitpix: int = 8,
                 data: bytes | None = None) -> bytes:
    """A complete single-file NIfTI-1 (uint8 zeros by default) with the given pixdim and, when given, a
    qform whose offset is ``qoffset`` (the geometry probes of issue 19)."""
    header = bytearray(nifti_header(dims, datatype, bitpix))
    struct.pack_into("<3f", header, 80, *pixdim)
    if qoffset is not None:
        struct.pack_into("<h", header, 252, 1)
        struct.pack_into("<6f", header, 256, 0, 0, 0, *qoffset)
    size = bitpix // 8
    for n in dims:
        size *= n
    return bytes(header) + (data if data is not None else bytes(size))


def metaimage_volume(geometry: str, sizes: str = "8 8 8") -> bytes:
    """A complete single-file MetaImage of uint8 zeros with extra geometry lines (``Offset = nan 0 0``...)."""
    voxels = 1
    for n in sizes.split():
        voxels *= int(n)
    return (f"ObjectType = Image\nNDims = 3\nDimSize = {sizes}\n{geometry}\nElementType = MET_UCHAR\n"
            "ElementDataFile = LOCAL\n").encode() + bytes(voxels)


def gzip_nifti(dims, datatype: int = 16, bitpix: int = 32) -> bytes:
    """A complete .nii.gz of zeros, built a chunk at a time: megabytes on the wire, ``dims`` once decoded."""
    size = bitpix // 8
    for n in dims:
        size *= n
    out, chunk = io.BytesIO(), bytes(min(size, 16 << 20))
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz:
        gz.write(nifti_header(dims, datatype, bitpix))
        left = size
        while left > 0:
            gz.write(chunk[:left])
            left -= len(chunk)
    return out.getvalue()


def nrrd(fields: str, data: bytes = b"") -> bytes:
    return f"NRRD0004\n{fields}\n\n".encode() + data


def truncated_nifti(dims=(48, 40, 24), keep: float = 0.5) -> bytes:
    """An int16 NIfTI holding ``keep`` of the data its header declares."""
    size = 2 * dims[0] * dims[1] * dims[2]
    return nifti_header(dims, 4, 16) + bytes(int(size * keep))


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buffer.getvalue()


# ---------------------------------------------------------------------- the catalogue
@dataclass
class Hostile:
    """One hostile request: where it goes, its body and headers. ``foreign``: sent as a page on another site
    would send it (without the client's own headers); ``raw``: sent over a raw socket, the body a chunk at a
    time until the server answers (bodies the server must refuse from the head alone)."""

    name: str
    path: str
    body: bytes
    headers: dict = field(default_factory=dict)
    method: str = "POST"
    foreign: bool = False
    raw: bool = False


def _case(name: str, image: tuple[bytes, bytes], label: tuple[bytes, bytes] | None = None,
          schema: bytes | None = None) -> Hostile:
    label = label or image
    body, headers = multipart([(b"image", *image), (b"label", *label),
                               (b"schema", None, schema if schema is not None else json.dumps(SCHEMA).encode())])
    return Hostile(name, "/cases", body, headers)


def _model(name: str, archive: bytes) -> Hostile:
    body, headers = multipart([(b"file", b"model.zip", archive), (b"promote", None, b"true")])
    return Hostile(name, "/models", body, headers)


def hostile_requests(image: bytes, label: bytes) -> list[Hostile]:
    """Every hostile request of issue 9; ``image``/``label`` are a valid case's NIfTI files, used where
    only one part of the request is hostile."""
    good_image, good_label = (b"case_0000.nii.gz", image), (b"case.nii.gz", label)
    bidi = "scan\u202egpj.nii.gz".encode()
    return [
        _case("MetaImage label backed by /etc/passwd", (b"i.mha", metaimage("MET_FLOAT", "/dev/zero")),
              (b"l.mha", metaimage("MET_ULONG_LONG", "/etc/passwd"))),
        _case("NRRD with 'data file'", (b"i.nrrd", nrrd("type: float\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
                                                          "data file: /etc/passwd")), good_label),
        _case("MetaImage content named .nii.gz", (b"i.nii.gz", metaimage("MET_FLOAT", "/etc/passwd")), good_label),
        _case("54-byte nii.gz declaring 4 GiB", (b"b.nii.gz", gzip.compress(nifti_header((1024, 1024, 1024))))),
        _case("2 MB gzip expanding past 2 GiB", (b"b.nii.gz", expanding_nifti((1024, 1024, 520), 33))),
        _case("gzip data far beyond its header", (b"b.nii.gz", expanding_nifti((256, 256, 240), 4))),
        _case("compressed MetaImage declaring 4 GiB", (b"b.mha", compressed_metaimage("1024 1024 1024"))),
        _case("NRRD gzip declaring 8 GiB", (b"b.nrrd", nrrd("type: uint8\ndimension: 3\nsizes: 2048 2048 2048\n"
                                                             "encoding: gzip", zeros_member()))),
        _case("int16 NIfTI cut to 50 %", (b"t.nii", truncated_nifti(keep=0.5)), good_label),
        _case("int16 NIfTI cut to 1 %", (b"t.nii", truncated_nifti(keep=0.01)), good_label),
        _case("schema nested 100k deep", good_image, good_label, b"[" * 100_000 + b"]" * 100_000),
        _case("colour 'red'", good_image, good_label,
              json.dumps({**SCHEMA, "colors": {"lesion": "red"}}).encode()),
        _case("NUL in the file name", (b"a\x00b.nii.gz", image), good_label),
        _case("bidi override in the file name", (bidi, image), good_label),
        _case("class name with NUL", good_image, good_label,
              json.dumps({"labels": {"background": 0, "les\x00ion": 1}, "target": "les\x00ion"}).encode()),
        _model("zip declaring 200 MB of weights", zip_of([("model.json", b"{}"), ("w.bin", bytes(200 << 20))])),
        _model("zip with a file and a folder of one name", zip_of([("model.json", b"{}"), ("x", b"1"), ("x/y", b"2")])),
        _model("zip with '..' members", zip_of([("model.json", b"{}"), ("../escape", b"1")])),
        _model("model.json with a string format_version", zip_of([("model.json", json.dumps(
            {"format_version": "1", "schema": SCHEMA, "arch": {"name": "unet"}, "preprocessing": {}}).encode())])),
        Hostile("predict a 250-character file name", "/predict",
                *multipart([(b"image", b"x" * 250 + b".nii.gz", image)])),
        *issue_19_requests(image, label),
    ]


def issue_19_requests(image: bytes, label: bytes) -> list[Hostile]:
    """The server probes of issue 19: bodies bounded from the head, cross-site writes, absurd geometry,
    decoding before the cheap checks, model preprocessing and job combinations out of bounds."""
    good_label = (b"case.nii.gz", label)
    nan = float("nan")
    cross_site = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    json_head = {"Content-Type": "application/json"}
    big_model = {"format_version": 1, "schema": SCHEMA, "arch": {"name": "unet", "params": {}},
                 "preprocessing": {"orientation": "RAS", "spacing": [0.01, 0.01, 0.01], "patch_size": [32, 32, 32],
                                   "normalization": {"scheme": "CT", "clip": [-1000, 1000], "mean": 0, "std": 300}}}
    return [
        Hostile("24 MiB JSON body to /jobs", "/jobs", b"[" + b"0," * (12 << 20) + b"0]", json_head, raw=True),
        Hostile("96 MiB JSON body to /jobs", "/jobs", b" " * (96 << 20), json_head, raw=True),
        Hostile("cross-site no-cors multipart POST /cases", "/cases",
                *_with(_case("", (b"case_0000.nii.gz", image), good_label), cross_site), foreign=True),
        Hostile("POST /models/current/promote without the client header", "/models/current/promote", b"",
                foreign=True),
        Hostile("DELETE /cases/x from a foreign Origin", "/cases/x", b"", {"Origin": "http://evil.example"},
                method="DELETE"),
        _case("NaN spacing (NIfTI pixdim)", (b"g.nii", nifti_volume(pixdim=(nan, 1, 1))), (b"l.nii", nifti_volume())),
        _case("zero spacing (NIfTI pixdim)", (b"g.nii", nifti_volume(pixdim=(0, 1, 1))), (b"l.nii", nifti_volume())),
        _case("spacing 1e300 (MetaImage)", (b"g.mha", metaimage_volume("ElementSpacing = 1e300 1 1")),
              (b"l.nii", nifti_volume())),
        _case("NaN origin (MetaImage)", (b"g.mha", metaimage_volume("Offset = nan 0 0")), (b"l.nii", nifti_volume())),
        _case("singular direction (MetaImage)", (b"g.mha", metaimage_volume("TransformMatrix = 1 0 0 1 0 0 0 0 1")),
              (b"l.nii", nifti_volume())),
        Hostile("predict on spacing 1e300", "/predict",
                *multipart([(b"image", b"g.mha", metaimage_volume("ElementSpacing = 1e300 1 1"))])),
        _case("800^3 float32 image with a label of another size", (b"i.nii.gz", expanding_nifti((800, 800, 800), 31)),
              (b"l.nii.gz", gzip_nifti((80, 80, 80), 2, 8))),
        _model("model spacing 0.01 mm (85 TB at prediction)", zip_of([("model.json", json.dumps(big_model).encode())])),
        Hostile("job batch 1024 x patch 512^3", "/jobs", json.dumps(
            {"kind": "train", "batch_size": 1024, "patch_size": [512, 512, 512]}).encode(), json_head),
    ]


def _with(hostile: Hostile, headers: dict) -> tuple[bytes, dict]:
    return hostile.body, {**hostile.headers, **headers}


# ---------------------------------------------------------------------- the measurement
def process_memory_kib(pid: int, field_name: str = "VmHWM") -> int | None:
    """A process's peak (VmHWM) or current (VmRSS) resident memory in KiB, from /proc (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def hold_idle_sockets(url: str, count: int, timeout: float = 60.0) -> dict:
    """Open ``count`` sockets that send nothing; time /health while they are held and until the server
    has closed them all (its header timeout)."""
    import httpx

    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    try:  # this process needs a descriptor per socket too (macOS starts with a soft limit of 256)
        import resource

        count = min(count, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 64)
    except ImportError:
        pass
    sockets, start = [], time.monotonic()
    try:
        for _ in range(count):
            sockets.append(socket.create_connection((host, int(port)), timeout=5))
        health_start = time.monotonic()
        healthy = httpx.get(f"{url}/health", timeout=30).status_code == 200
        health_s = time.monotonic() - health_start
        open_ = list(sockets)
        while open_ and time.monotonic() - start < timeout:
            time.sleep(0.25)
            open_ = [s for s in open_ if not closed_by_server(s)]
        return {"held": len(sockets), "health_ok_while_held": healthy, "health_s_while_held": health_s,
                "all_closed_by_server": not open_, "closed_after_s": time.monotonic() - start}
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed this client socket (a read returns end of file)."""
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def raw_exchange(port: int, head: bytes, body_chunks=(), timeout: float = 15.0,
                 answer_wait: float = 0.02) -> tuple[int | None, bytes, int]:
    """Send a request head, then body chunks one at a time until the server answers (waiting ``answer_wait``
    seconds for an answer before each chunk); returns (status or None when the server closed without
    answering, the response head, body bytes sent before the answer)."""
    import select

    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sent, response = 0, b""
    try:
        sock.sendall(head)
        for chunk in body_chunks:
            if select.select([sock], [], [], answer_wait)[0]:
                break  # the server has answered (or closed): stop sending
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        try:
            while b"\r\n\r\n" not in response:
                data = sock.recv(65536)
                if not data:
                    break
                response += data
        except OSError:
            pass
    finally:
        sock.close()
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else None
    return status, response, sent


def _send_raw(url: str, hostile: Hostile, headers: dict) -> int:
    port = int(url.rsplit(":", 1)[-1].split("/")[0])
    lines = [f"{hostile.method} {hostile.path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(hostile.body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    step = 1 << 20
    status, _, _ = raw_exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode(),
                                (hostile.body[i:i + step] for i in range(0, len(hostile.body), step)), timeout=60)
    return status or 0  # 0: the server closed without an answer (counted as neither refused nor stored)


def measure_hostile(url: str, pid: int, image: bytes, label: bytes, headers: dict | None = None,
                    idle_sockets: int = 300) -> dict:
    """Send every hostile request; count refused (4xx), stored (2xx) and failed (5xx); peak API memory.
    ``headers``: what the server's own client sends (the token, X-BackSplit-Client); foreign requests go
    without them."""
    import httpx

    from BackSplitLib.vocabulary import CLIENT_HEADER

    own = {CLIENT_HEADER: "backsplit-bench", **(headers or {})}
    idle_kib = process_memory_kib(pid, "VmRSS")
    outcomes = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for hostile in hostile_requests(image, label):
            sent_headers = {**({} if hostile.foreign else own), **hostile.headers}
            if hostile.raw:
                status = _send_raw(url, hostile, sent_headers)
            else:
                status = http.request(hostile.method, hostile.path, content=hostile.body or None,
                                      headers=sent_headers).status_code
            outcomes.append({"name": hostile.name, "status": status})
    peak_kib = process_memory_kib(pid, "VmHWM")
    statuses = [o["status"] for o in outcomes]
    return {
        "tried": len(outcomes), "refused": sum(400 <= s < 500 for s in statuses),
        "stored": sum(200 <= s < 300 for s in statuses), "server_errors": sum(s >= 500 for s in statuses),
        "unanswered": sum(s == 0 for s in statuses),
        "outcomes": outcomes, "idle_rss_mib": idle_kib / 1024 if idle_kib else None,
        "peak_rss_above_idle_mib": (peak_kib - idle_kib) / 1024 if peak_kib and idle_kib else None,
        "idle_sockets": hold_idle_sockets(url, idle_sockets),
    }
