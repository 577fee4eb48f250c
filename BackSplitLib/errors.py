"""Exceptions for people: each says what is wrong and how to fix it, in one line.

The CLI prints ``str(error)`` and exits non-zero; the server turns them into 4xx ``{"detail": ...}``
bodies; the Slicer module shows them in ``slicer.util.errorDisplay``. Keep messages to one sentence plus
an optional hint.
"""

from __future__ import annotations


class BackSplitError(Exception):
    """Base class: a problem the user can fix. ``hint`` says how."""

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} ({hint})")


class LabelError(BackSplitError):
    """A label map or schema is inconsistent (unknown values, missing target, bad names)."""


class GeometryError(BackSplitError):
    """Two images that must share a voxel grid do not."""


class ImageError(BackSplitError):
    """An image cannot be read or is not usable (missing, wrong type, not 3D, NaN/inf voxels)."""


class DatasetError(BackSplitError):
    """A dataset folder is missing files or its dataset.json is inconsistent."""


class RunError(BackSplitError):
    """A run folder is missing, incomplete or incompatible with the requested operation."""


class TrainingCancelled(Exception):
    """Raised inside the trainer when a stop was requested (server cancel, Slicer Cancel)."""
