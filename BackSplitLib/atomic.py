"""Write-then-rename: a file or folder appears complete under its final name, or not at all.

Standard library only: the client (inside Slicer) and the server's token file use it as well as the engine.
Everything is written beside its destination (same file system, so ``os.replace`` is atomic) under a hidden
temporary name, renamed on success and removed on any error. Temporary files are created with mode 0600
(``tempfile.mkstemp``), which is kept by the rename: a token written this way is never world-readable.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_file(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block succeeds.

    ``suffix`` keeps an extension on the temporary name for writers that choose the format by it
    (SimpleITK: ``.nii.gz``, ``.nrrd``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any, indent: int = 2) -> Path:
    """Write ``data`` as indented JSON with a final newline, atomically."""
    return write_text_atomic(path, json.dumps(data, indent=indent) + "\n")


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """Build a folder beside ``out`` and rename it into place on success (replacing ``out``); on any error
    the half-built folder is removed, so readers never see a partial dataset."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield work
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
