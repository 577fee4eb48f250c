"""Receiving uploads: multipart bodies streamed to disk under a size limit, and case validation.

Starlette's ``request.form()`` would read the whole body before our code runs, so a 5 GB upload would
fill the temporary disk before we could say 413. Here the body is parsed as it arrives (python-multipart's
low-level parser), file parts go straight to files in a staging folder, and the byte count is checked on
every chunk.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import SimpleITK as sitk
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException

from BackSplitLib.errors import BackSplitError, LabelError
from BackSplitLib.image_files import ImageTooLarge, UnsupportedImageFile, format_bytes
from BackSplitLib.io import (
    IMAGE_EXTENSIONS, ReceivedHeader, check_same_declared_geometry, image_extension, open_received_image,
)
from BackSplitLib.schema import LabelSchema
from BackSplitLib.server.limits import Limits, parse_size  # noqa: F401 (parse_size: re-exported)

# Text fields (schema JSON, flags) are small; a larger one is a client bug, not data.
MAX_TEXT_FIELD = 1 << 20


class UploadError(Exception):
    """An upload the server refuses: ``status`` is the HTTP status, ``detail`` one sentence."""

    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


@dataclass
class FilePart:
    path: Path
    filename: str
    size: int = 0


@dataclass
class Form:
    """A received multipart body: file parts on disk, text parts as strings."""

    files: dict[str, FilePart] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)

    def file(self, name: str) -> FilePart:
        if name not in self.files:
            raise UploadError(422, f"the request has no file field '{name}'")
        return self.files[name]

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.fields.get(name)
        if value is None or value == "":
            return default
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise UploadError(422, f"field '{name}' must be true or false, got {value[:40]!r}")


def _suffix_for(filename: str, allowed: tuple[str, ...]) -> str:
    """The file's recognised extension; an unsupported type is refused before its bytes are stored."""
    ext = next((e for e in allowed if filename.lower().endswith(e)), "")
    if not ext:
        raise UploadError(415, f"'{filename}' is not a supported file type; send one of {', '.join(allowed)}")
    return ext


async def receive_form(
    content_type: str,
    stream: AsyncIterator[bytes],
    dest: Path,
    max_bytes: int,
    file_types: dict[str, tuple[str, ...]],
    text_fields: set[str],
) -> Form:
    """Parse a multipart body chunk by chunk into ``dest``; 413 as soon as it passes ``max_bytes``.

    ``file_types`` maps each accepted file field to its allowed extensions; unknown fields are refused
    (they are most likely a misspelt field name, which would otherwise be silently ignored).
    """
    mime, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise UploadError(415, "the request must be multipart/form-data (file uploads)")

    form = Form()
    state: dict = {"headers": {}, "field": b"", "value": b"", "part": None, "handle": None, "text": None}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        if filename is not None:
            if name not in file_types:
                raise UploadError(422, f"unexpected file field {name[:40]!r} (expected {', '.join(sorted(file_types))})")
            if name in form.files:
                raise UploadError(422, f"file field '{name}' was sent twice")
            fname = Path(filename.decode("utf-8", "replace").replace("\\", "/")).name or name
            check_client_name(fname, f"the file name of field '{name}'")
            path = dest / f"{name}{_suffix_for(fname, file_types[name])}"
            form.files[name] = FilePart(path, fname)
            state["part"], state["handle"] = name, open(path, "wb")  # noqa: SIM115 (closed in on_part_end)
        else:
            if name not in text_fields:
                raise UploadError(422, f"unexpected field {name[:40]!r} (expected {', '.join(sorted(text_fields | set(file_types)))})")
            state["part"], state["text"] = name, bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        handle: BinaryIO | None = state["handle"]
        if handle is not None:
            handle.write(data[start:end])
            form.files[state["part"]].size += end - start
        else:
            state["text"] += data[start:end]
            if len(state["text"]) > MAX_TEXT_FIELD:
                raise UploadError(413, f"field '{state['part']}' is larger than {MAX_TEXT_FIELD // 1024} KiB")

    def on_part_end() -> None:
        if state["handle"] is not None:
            state["handle"].close()
        elif state["text"] is not None:
            form.fields[state["part"]] = bytes(state["text"]).decode("utf-8", "replace")
        state.update(headers={}, part=None, handle=None, text=None)

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                raise UploadError(413, f"the upload is larger than this server's limit of {format_bytes(max_bytes)}")
            parser.write(chunk)
        parser.finalize()
    except (UploadError, StarletteHTTPException):  # ours, and the front door's BodyTooLarge (413)
        raise
    except Exception as e:  # python-multipart's MultipartParseError and friends: a malformed body
        raise UploadError(400, f"the multipart body could not be parsed ({e})") from None
    finally:
        if state["handle"] is not None:
            state["handle"].close()
    return form


# ---------------------------------------------------------------------- names the client sends
# Bidirectional overrides and isolates make "gpj.exe" display as "exe.jpg"; controls (NUL, newlines)
# break logs and file names.
_BIDI_CONTROLS = set("\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
MAX_NAME_BYTES = 200  # file names get suffixes such as "_classes.nii.gz" and must stay under 255 bytes


def has_unsafe_characters(name: str) -> bool:
    """True when ``name`` holds a control (NUL, newline, escape ...) or bidirectional-override character."""
    return any(unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in name)


def check_client_name(name: str, what: str) -> str:
    """``name`` unchanged when it has no control or bidi-override characters and fits; else UploadError(422)."""
    if has_unsafe_characters(name):
        raise UploadError(422, f"{what} contains control or bidirectional-override characters; rename it")
    if len(name.encode("utf-8", "replace")) > MAX_NAME_BYTES:
        raise UploadError(422, f"{what} is longer than {MAX_NAME_BYTES} bytes; use a shorter name")
    return name


# ---------------------------------------------------------------------- case validation
IMAGE_TYPES = tuple(e for e in IMAGE_EXTENSIONS if e not in (".nhdr", ".mhd"))  # single-file formats only
DEFAULT_MAX_IMAGE_SIZE = Limits.max_image_size


@contextmanager
def _gate_errors() -> Iterator[None]:
    """The upload gate's exceptions as HTTP statuses: 415 not a self-contained image, 413 too large, 400
    anything else wrong with it (truncated, damaged, bad geometry, NaN voxels)."""
    try:
        yield
    except UnsupportedImageFile as e:
        raise UploadError(415, str(e)) from None
    except ImageTooLarge as e:
        raise UploadError(413, str(e)) from None
    except BackSplitError as e:
        raise UploadError(400, str(e)) from None


def open_part(part: FilePart, what: str, max_image_size: int, complete: bool = False) -> ReceivedHeader:
    """An uploaded file's header through the upload gate (``io.open_received_image``), nothing decoded
    (``complete``: its data also streamed once to see that it is all there); the part's path follows the
    file when the gate renames it to the extension its content has."""
    with _gate_errors():
        opened = open_received_image(part.path, f"{what} '{part.filename}'", max_image_size)
        if complete:
            opened.check_complete()
    part.path = opened.path
    return opened


def read_opened(opened: ReceivedHeader) -> sitk.Image:
    """Decode a file ``open_part`` accepted (its data checked complete first)."""
    with _gate_errors():
        return opened.read().image


def _holding(budget, nbytes: int, what: str):
    """``budget.hold`` (the server's DecodeBudget) or, without one, nothing to reserve."""
    return budget.hold(nbytes, what) if budget is not None else nullcontext()


def parse_schema(schema_text: str | None) -> LabelSchema:
    """The case's label schema from the form field; 4xx for anything that is not a valid schema. Class
    names are checked before anything else, so no message echoes a refused name."""
    if not schema_text:
        raise UploadError(422, "the request has no 'schema' field (the label schema as JSON)")
    try:
        data = json.loads(schema_text)
    except RecursionError:
        raise UploadError(400, "the schema JSON is nested too deeply; a label schema is two levels deep") from None
    except ValueError as e:
        raise UploadError(400, f"the schema is not valid JSON ({str(e)[:120]})") from None
    if isinstance(data, dict):
        for key in ("labels", "colors"):
            if isinstance(data.get(key), dict):
                for name in data[key]:
                    check_client_name(name, f"a class name in the schema's '{key}'")
        if isinstance(data.get("target"), str):
            check_client_name(data["target"], "the schema's target")
    try:
        return LabelSchema.from_dict(data, "schema")
    except LabelError as e:
        raise UploadError(400, str(e)) from None
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise UploadError(400, f"the schema is not a valid label schema ({type(e).__name__}: {str(e)[:120]}); "
                               'expected {"labels": {"name": value, ...}, "target": "name", "colors": '
                               '{"name": [r, g, b]}}') from None


def validate_case(image_part: FilePart, label_part: FilePart, schema_text: str | None,
                  allow_empty_target: bool, max_image_size: int = DEFAULT_MAX_IMAGE_SIZE, budget=None) -> dict:
    """Check a case as the engine would before training on it; returns the case record for the store.

    Both headers are checked and compared (size, spacing, origin, direction) before either file is
    decoded; decoding then holds the bytes they declare in ``budget`` (the server's DecodeBudget). Raises
    UploadError (400, 413/415 from the upload gate, 429 when the budget stays full) with one readable
    sentence for each way a case can be unusable.
    """
    schema = parse_schema(schema_text)
    image_header = open_part(image_part, "image", max_image_size)
    label_header = open_part(label_part, "label", max_image_size)
    with _gate_errors():
        check_same_declared_geometry(image_header, label_header)
    declared = image_header.header.data_bytes + label_header.header.data_bytes
    with _holding(budget, declared, "this case"):
        image, label = read_opened(image_header), read_opened(label_header)
        return _case_record(image_part, label_part, schema, image, label, allow_empty_target)


def _case_record(image_part: FilePart, label_part: FilePart, schema: LabelSchema, image: sitk.Image,
                 label: sitk.Image, allow_empty_target: bool) -> dict:
    try:
        values = _integer_labels(label, label_part.filename)
        schema.check_label_values(values, f"label '{label_part.filename}'")
    except BackSplitError as e:
        raise UploadError(400, str(e)) from None
    present = np.unique(values)
    target_voxels = int(np.count_nonzero(values == schema.target_value))
    if target_voxels == 0 and not allow_empty_target:
        raise UploadError(400, f"label '{label_part.filename}' has no voxels of the target class "
                               f"'{schema.target}'; send allow_empty_target=true for a case without lesions")
    by_value = {v: k for k, v in schema.labels.items()}
    return {
        "name": _case_label(image_part.filename),
        "schema": schema.to_dict(),
        "size": list(image.GetSize()),
        "spacing": [float(s) for s in image.GetSpacing()],
        "classes": [by_value[int(v)] for v in present],
        "target_voxels": target_voxels,
        "bytes": image_part.size + label_part.size,
    }


def _integer_labels(label: sitk.Image, filename: str) -> np.ndarray:
    values = sitk.GetArrayViewFromImage(label)
    if values.dtype.kind == "f":
        if not np.all(np.mod(values, 1) == 0):
            raise LabelError(f"label '{filename}' holds fractional values; a label map must hold integer class values")
        values = values.astype(np.int64)
    return values


def _case_label(filename: str) -> str:
    ext = image_extension(filename)
    name = filename[: -len(ext)] if ext else filename
    return name.removesuffix("_0000") or "case"
