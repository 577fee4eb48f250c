"""What the operator bounds (``backsplit serve`` options) and the size syntax they use. Standard library only,
so the CLI reads its option defaults from here without importing the server."""

from __future__ import annotations

from dataclasses import dataclass

from BackSplitLib.errors import BackSplitError
from BackSplitLib.vocabulary import DEFAULT_MAX_UPLOAD

DEFAULT_MAX_IMAGE_SIZE = "2G"  # voxels x bytes per voxel: a float32 512 x 512 x 1000 CT fits
DEFAULT_DECODE_BUDGET = "4G"  # voxel bytes decoded at once across requests: one largest case (image + label)
MAX_JSON_BODY = 1 << 20  # a job request is a few hundred bytes; 1 MiB holds thousands of case ids


def parse_size(text: str | int) -> int:
    """Bytes from '1G', '500M', '64k', '1048576' (binary units)."""
    if isinstance(text, int):
        return text
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:], 1)
    number = s[:-1] if s[-1:] in "KMGT" else s
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise BackSplitError(f"cannot read the size {text!r}", "use bytes or a unit: 64K, 500M, 1G") from None
    if value <= 0:
        raise BackSplitError(f"the size {text!r} must be positive")
    return value


@dataclass
class Limits:
    """The server's bounds; each field is a ``backsplit serve`` option of the same name."""

    max_upload: int = parse_size(DEFAULT_MAX_UPLOAD)  # request body bytes (--max-upload)
    max_image_size: int = parse_size(DEFAULT_MAX_IMAGE_SIZE)  # voxel bytes an image header may declare
    max_iterations: int = 1_000_000  # iterations a job may ask for
    decode_budget: int = parse_size(DEFAULT_DECODE_BUDGET)  # voxel bytes decoded at once, all requests together
    # A job's output tensor, batch x patch voxels x classes (its memory): batch 4 x 128^3 x 32 classes fits.
    max_job_tensor: int = 1 << 28
    # A job's work, iterations x batch x patch voxels (its time): 10^6 iterations of batch 2 x 128^3 fit.
    max_job_work: int = 1 << 42
    header_timeout: float = 10.0  # seconds a connection may take to send a complete request head
    body_timeout: float = 60.0  # seconds a request body may stall before the request is dropped
