"""Installing what Local mode needs into Slicer's Python: requirements from pyproject, Slicer's pins kept.

The extension bundles the whole engine package (``BackSplitLib``) beside the module; what it does not bundle
are the engine's third-party packages. ``BackSplit/CMakeLists.txt`` runs this file when building
(``python install.py --requirements pyproject.toml OUT``) to write :data:`REQUIREMENTS_NAME` from pyproject's
``dependencies`` and its ``server`` extra into the module's folder, where :func:`bundled_requirements` finds it.

:class:`PipInstall` runs the install steps (:func:`install_steps`) one after another in child processes of
Slicer's Python, never in Slicer's own process, their output collected line by line for the panel. PyTorch
is installed the way the PyTorch extension's ``PyTorchUtils.installTorch`` installs it: light-the-torch picks
the CUDA build the NVIDIA driver supports (PyPI's Windows wheel is CPU-only); but here in a child process, so
Slicer never blocks and never imports torch. The other packages follow with pip and a constraints file
pinning the numpy and SimpleITK that Slicer ships, so they are never replaced. Offline, one pip call
installs everything, torch included, from a wheel folder (``--no-index --find-links``); behind a proxy pip
honours ``HTTPS_PROXY``. A non-zero exit is a failure. Last, a child imports torch and reports its build
(:class:`TorchBuild`), so a CPU-only build on a GPU computer is visible.

Standard library only, and importable on Python 3.9 (no ``tomllib``): pyproject's two arrays are read with
a small parser that a test checks against ``tomllib``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a script (by CMake, by the Makefile): the package is one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from BackSplitSlicer.processes import default_python, popen, run  # noqa: E402

REQUIREMENTS_NAME = "requirements-local.txt"
# Slicer's own packages: replacing them breaks Slicer's modules.
SLICER_PINNED = ("numpy", "SimpleITK")
SERVER_EXTRA = "server"


def _toml_array(text: str, section: str, key: str) -> list[str]:
    """The strings of ``key = [...]`` in ``[section]`` of a TOML text (comments dropped)."""
    body = re.search(rf"^\[{re.escape(section)}\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if body is None:
        raise ValueError(f"pyproject has no [{section}] table")
    # Up to the array's own closing bracket: brackets inside strings ("psycopg[binary]") or comments don't end it.
    array = re.search(rf'^{re.escape(key)}\s*=\s*\[((?:"[^"]*"|#[^\n]*|[^\]"#])*)\]', body.group(1), re.M)
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


# The PyTorch extension's installer (PyTorchUtils._installLightTheTorch) and how it is run (installTorch).
TORCH_BUILD_CHOOSER = "light-the-torch>=0.5"
TORCH_BUILD_MODULE = "light_the_torch"
PIP_OPTIONS = ("--progress-bar", "off", "--disable-pip-version-check")
# Run in the target Python after installing: the build it imports (not this process: torch never loads here).
TORCH_PROBE = """import json, torch
cuda = torch.version.cuda
gpu = torch.cuda.get_device_name(0) if cuda and torch.cuda.is_available() else None
mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
print(json.dumps({"version": torch.__version__, "cuda": cuda, "gpu": gpu, "mps": mps}))
"""


@dataclass(frozen=True)
class InstallStep:
    what: str  # a line for the log
    command: list


@dataclass(frozen=True)
class TorchBuild:
    """The PyTorch that a Python imports: version, CUDA build or not, the GPU it sees."""

    version: str
    cuda: str | None = None
    gpu: str | None = None
    mps: bool = False

    def describe(self) -> str:
        if self.cuda and self.gpu:
            return f"PyTorch {self.version} (CUDA {self.cuda} build, GPU: {self.gpu})."
        if self.cuda:
            return (f"PyTorch {self.version} (CUDA {self.cuda} build) but no usable GPU: training runs on the CPU; "
                    "check the NVIDIA driver.")
        if self.mps:
            return f"PyTorch {self.version} (Apple GPU, MPS)."
        return (f"PyTorch {self.version} (CPU-only build): training runs on the CPU. On a computer with an NVIDIA "
                "GPU, uninstall torch and install again online, or put a CUDA wheel in the wheel folder.")


def torch_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if requirement_names([line]) == ["torch"]]


def install_steps(python: str, requirements: Path, constraints: Path, lines: list[str],
                  wheel_folder: str | None = None) -> list[InstallStep]:
    """The commands that install ``lines`` (requirements) into ``python``, in order.

    ``requirements`` is the file the last pip call reads (written by the caller): ``lines`` without torch online,
    where light-the-torch installs torch first; all of ``lines`` offline, where the wheel folder has them all.
    """
    pip = [python, "-m", "pip", "install", *PIP_OPTIONS]
    if wheel_folder:
        return [InstallStep(f"Installing PyTorch, MONAI and the other packages from {wheel_folder} (offline)",
                            pip + ["-r", str(requirements), "-c", str(constraints), "--no-index", "--find-links",
                                   str(wheel_folder)])]
    steps = []
    torch = torch_lines(lines)
    if torch:
        steps += [InstallStep("Installing light-the-torch, which picks the PyTorch build for this computer",
                              pip + [TORCH_BUILD_CHOOSER]),
                  InstallStep("Installing PyTorch (light-the-torch: the CUDA build the NVIDIA driver supports, "
                              "else the CPU build)",
                              [python, "-m", TORCH_BUILD_MODULE, "install", *PIP_OPTIONS, *torch, "-c",
                               str(constraints)])]
    return steps + [InstallStep("Installing MONAI and the other packages",
                                pip + ["-r", str(requirements), "-c", str(constraints)])]


def torch_build(python: str, timeout_s: float = 180.0) -> TorchBuild | None:
    """The torch build ``python`` imports (in a child process), or None when it cannot import torch."""
    try:
        done = run([python, "-c", TORCH_PROBE], capture_output=True, encoding="utf-8", errors="replace",
                   timeout=timeout_s, stdin=subprocess.DEVNULL)
        found = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return TorchBuild(**found) if found else None


class PipInstall:
    """The install steps in child processes (never in Slicer's process, never blocking the UI thread), one
    after another, their output collected line by line for the panel; then the torch build they left."""

    def __init__(self, python: str | None = None, wheel_folder: str | None = None, requirements: Path | None = None):
        self.python = python or default_python()
        # pip reads both files from this folder; it is removed when the steps are done
        self._folder = Path(tempfile.mkdtemp(prefix="BackSplit-install-"))
        lines = requirements.read_text(encoding="utf-8").splitlines() if requirements else requirement_lines()
        lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        self.requirements = self._folder / REQUIREMENTS_NAME
        rest = lines if wheel_folder else [line for line in lines if line not in torch_lines(lines)]
        self.requirements.write_text("\n".join(rest) + "\n", encoding="utf-8")
        self.constraints = self._folder / "constraints.txt"
        self.constraints.write_text("\n".join(slicer_constraints()) + "\n", encoding="utf-8")
        self.steps = install_steps(self.python, self.requirements, self.constraints, lines, wheel_folder)
        self.torch: TorchBuild | None = None
        self.returncode: int | None = None
        self.process: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._runner = threading.Thread(target=self._run, daemon=True)
        self._runner.start()

    @property
    def command(self) -> list[str]:
        """The last step's command (pip with the requirements and the constraints)."""
        return self.steps[-1].command

    def _say(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def _run(self) -> None:
        code = 0
        try:
            for step in self.steps:
                self._say(f"== {step.what}\n" + " ".join(step.command))
                try:
                    self.process = popen(step.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, encoding="utf-8", errors="replace",
                                         env={**os.environ, "PIP_NO_INPUT": "1"})
                except OSError as e:
                    self._say(f"cannot run {self.python}: {e}")
                    code = 1
                    break
                for line in self.process.stdout:
                    self._say(line.rstrip())
                code = self.process.wait()
                if code != 0:
                    break
            if code == 0:
                self.torch = torch_build(self.python)
                self._say("== " + (self.torch.describe() if self.torch else "PyTorch does not import in this Python."))
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)
            self.returncode = code

    @property
    def done(self) -> bool:
        return self.returncode is not None

    def wait(self, timeout: float | None = None) -> int:
        """Block until every step has run (call it from a background thread); the first non-zero exit code."""
        self._runner.join(timeout)
        if self.returncode is None:
            raise TimeoutError("the install is still running")
        return self.returncode

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
