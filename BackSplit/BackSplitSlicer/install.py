"""Installing what Local mode needs into Slicer's Python: requirements from pyproject, Slicer's pins kept.

The extension bundles the whole engine package (``BackSplitLib``) beside the module; what it does not bundle
are the engine's third-party packages. ``BackSplit/CMakeLists.txt`` runs this file at configure time
(``python install.py --requirements pyproject.toml OUT``) to write :data:`REQUIREMENTS_NAME` from pyproject's
``dependencies`` and its ``server`` extra, and bundles it. The install step then runs pip with that file and a
constraints file pinning the numpy and SimpleITK that Slicer ships, so they are never replaced; PyTorch goes
through the PyTorch extension when it is there (it picks the CUDA build), else pip. pip's output goes to the
panel's log; a non-zero exit is a failure. Offline installs use a wheel folder (``--no-index
--find-links``); behind a proxy pip honours ``HTTPS_PROXY``.

Standard library only, and importable on Python 3.9 (no ``tomllib``): pyproject's two arrays are read with
a small parser that a test checks against ``tomllib``.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REQUIREMENTS_NAME = "requirements-local.txt"
# Slicer's own packages: replacing them breaks Slicer's modules.
SLICER_PINNED = ("numpy", "SimpleITK")
SERVER_EXTRA = "server"


def _toml_array(text: str, section: str, key: str) -> list[str]:
    """The strings of ``key = [...]`` in ``[section]`` of a TOML text (comments dropped)."""
    body = re.search(rf"^\[{re.escape(section)}\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if body is None:
        raise ValueError(f"pyproject has no [{section}] table")
    array = re.search(rf"^{re.escape(key)}\s*=\s*\[(.*?)\]", body.group(1), re.M | re.S)
    if array is None:
        raise ValueError(f"pyproject's [{section}] has no {key} array")
    lines = [re.sub(r"#.*", "", line) for line in array.group(1).splitlines()]
    return re.findall(r'"([^"]+)"', "\n".join(lines))


def runtime_requirements(pyproject_text: str) -> list[str]:
    """What Local mode imports: the engine's dependencies plus the server extra, in pyproject's order."""
    return (_toml_array(pyproject_text, "project", "dependencies")
            + _toml_array(pyproject_text, "project.optional-dependencies", SERVER_EXTRA))


def write_requirements(pyproject: str | Path, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = runtime_requirements(Path(pyproject).read_text(encoding="utf-8"))
    out.write_text("# Generated from pyproject.toml when the extension is built; do not edit.\n"
                   + "\n".join(lines) + "\n", encoding="utf-8")
    return out


def bundled_requirements() -> Path | None:
    """The requirements file of the built extension (None in a checkout, which has pyproject instead)."""
    path = Path(__file__).resolve().parent / REQUIREMENTS_NAME
    return path if path.is_file() else None


def requirement_lines() -> list[str]:
    """What Local mode needs: the built extension's bundled list, or in a checkout the same list generated in
    memory from the pyproject beside the module (no file: nothing to leave behind)."""
    bundled = bundled_requirements()
    if bundled is not None:
        return bundled.read_text(encoding="utf-8").splitlines()
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if not pyproject.is_file():
        raise FileNotFoundError(f"{REQUIREMENTS_NAME} is not bundled and no pyproject.toml is beside the module")
    return runtime_requirements(pyproject.read_text(encoding="utf-8"))


def requirement_names(lines: list[str]) -> list[str]:
    """The distribution names in requirements lines (``torch>=2.2  # why`` -> ``torch``)."""
    names = []
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match and not line.lstrip().startswith("#"):
            names.append(match.group(1))
    return names


def slicer_constraints() -> list[str]:
    """``name==version`` for Slicer's own packages present in this Python."""
    pins = []
    for name in SLICER_PINNED:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return pins


def pip_command(requirements: Path, constraints: Path, python: str = sys.executable,
                wheel_folder: str | None = None) -> list[str]:
    command = [python, "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check",
               "-r", str(requirements), "-c", str(constraints)]
    if wheel_folder:
        command += ["--no-index", "--find-links", str(wheel_folder)]
    return command


class PipInstall:
    """pip in a child process (never in the UI thread), its output collected line by line for the panel."""

    def __init__(self, python: str | None = None, wheel_folder: str | None = None, skip_torch: bool = False,
                 requirements: Path | None = None):
        from BackSplitSlicer.backends import default_python

        self.python = python or default_python()
        # pip reads both files from this folder; it is removed when pip has exited (wait)
        self._folder = Path(tempfile.mkdtemp(prefix="BackSplit-install-"))
        lines = requirements.read_text(encoding="utf-8").splitlines() if requirements else requirement_lines()
        if skip_torch:  # installed by the PyTorch extension with the right CUDA build
            lines = [line for line in lines if not re.match(r"\s*torch\b", line)]
        self.requirements = self._folder / REQUIREMENTS_NAME
        self.requirements.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.constraints = self._folder / "constraints.txt"
        self.constraints.write_text("\n".join(slicer_constraints()) + "\n", encoding="utf-8")
        self.command = pip_command(self.requirements, self.constraints, self.python, wheel_folder)
        self._lines: list[str] = [" ".join(self.command)]
        self._lock = threading.Lock()
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, encoding="utf-8", errors="replace",
                                        env={**os.environ, "PIP_NO_INPUT": "1"})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._lock:
                self._lines.append(line.rstrip())

    def wait(self) -> int:
        """Block until pip exits (call it from a background thread); its exit code."""
        code = self.process.wait()
        self._reader.join(10)
        shutil.rmtree(self._folder, ignore_errors=True)
        return code

    def log(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    def log_tail(self, lines: int = 3) -> str:
        with self._lock:
            return " | ".join(line for line in self._lines[-lines:] if line.strip())


if __name__ == "__main__":  # CMake: --requirements-name at configure time, --requirements when building
    if sys.argv[1:] == ["--requirements-name"]:
        print(REQUIREMENTS_NAME)
    elif len(sys.argv) == 4 and sys.argv[1] == "--requirements":
        write_requirements(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: install.py --requirements PYPROJECT OUT | --requirements-name")
