"""Child processes of Slicer's Python (the local engine, pip, probes): started one way, console hidden on Windows.

On Windows ``PythonSlicer.exe`` is a console program: a child started without ``CREATE_NO_WINDOW`` opens a
console window, and closing that window kills the child (``slicer.util.launchConsoleProcess`` passes the flag
for the same reason). Every process this package starts goes through :func:`popen` or :func:`run`, which add
it. Standard library only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import Any

CREATE_NO_WINDOW = 0x08000000  # subprocess.CREATE_NO_WINDOW, which exists only on Windows
WINDOWS = sys.platform == "win32"


def console_flags() -> int:
    """The ``creationflags`` for a child of Slicer's Python: no console window on Windows, none elsewhere."""
    return CREATE_NO_WINDOW if WINDOWS else 0


def popen(command: list[str], **options: Any) -> subprocess.Popen:
    """``subprocess.Popen`` with the console hidden (Windows)."""
    return subprocess.Popen(command, creationflags=console_flags(), **options)


def run(command: list[str], **options: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` with the console hidden (Windows)."""
    return subprocess.run(command, creationflags=console_flags(), **options)


def default_python() -> str:
    """Slicer's Python launcher when inside Slicer (``sys.executable`` is the Slicer app there), else ours."""
    return shutil.which("PythonSlicer") or sys.executable
