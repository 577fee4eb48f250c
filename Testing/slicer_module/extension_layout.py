"""The extension as Slicer builds and installs it, and the tree it must install.

:func:`build_extension` runs real ``cmake`` (configure, build, install) on the repository's top-level
``CMakeLists.txt`` with Slicer's and CTK's own CMake files (``Testing/slicer_build``: fixtures with their
licences and commits) and a shim for the variables a Slicer build tree defines. :func:`expected_installed_files`
is the tree that install must hold, derived from the source folders (not from the CMake lists), so a module
file that CMake forgets, or a file CMake cannot build, fails the test.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "BackSplit"
ENGINE = REPO / "BackSplitLib"
SLICER_CMAKE = REPO / "Testing" / "slicer_build"
# Where Slicer 5.10 (and so the extension) puts scripted modules, under the build tree and the install prefix.
SCRIPTED_MODULES_DIR = Path("lib") / "Slicer-5.10" / "qt-scripted-modules"


def slicer_python() -> Path:
    """Slicer 5.10's Python version (3.12) from pyenv when present (CTK byte-compiles with it), else ours."""
    found = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python"))
    return found[-1] if found else Path(sys.executable)


@dataclass
class BuiltExtension:
    build: Path
    install: Path
    log: str

    @property
    def module_dir(self) -> Path:
        """The installed qt-scripted-modules folder: what Slicer adds to its module paths."""
        return self.install / SCRIPTED_MODULES_DIR

    @property
    def metadata(self) -> dict:
        """The catalogue metadata the top-level CMakeLists.txt declared (written by the shim)."""
        return json.loads((self.build / "extension-metadata.json").read_text(encoding="utf-8"))


def cmake() -> str:
    found = shutil.which("cmake")
    if found is None:
        raise AssertionError("cmake is not installed: `apt-get install -y cmake` (as .ci/run does)")
    return found


def build_extension(folder: Path, python: Path | None = None, launcher: Path | None = None) -> BuiltExtension:
    """Configure, build and install the extension into ``folder``/build and ``folder``/install."""
    build, install = folder / "build", folder / "install"
    configure = [cmake(), "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={SLICER_CMAKE / 'shim'}",
                 f"-DPYTHON_EXECUTABLE={python or slicer_python()}", "-DBUILD_TESTING=ON",
                 f"-DCMAKE_INSTALL_PREFIX={install}"]
    if launcher is not None:
        configure.append(f"-DSlicer_LAUNCHER_EXECUTABLE={launcher}")
    log = []
    for command in (configure, [cmake(), "--build", str(build)], [cmake(), "--install", str(build)]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        log.append(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}")
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(command[:2])} failed:\n" + "\n".join(log)[-4000:])
    return BuiltExtension(build, install, "\n".join(log))


def requirements_name() -> str:
    text = (MODULE / "BackSplitSlicer" / "install.py").read_text(encoding="utf-8")
    return re.search(r'^REQUIREMENTS_NAME = "([^"]+)"', text, re.M).group(1)


def expected_installed_files() -> set[str]:
    """Relative paths (POSIX) the installed module folder must hold, besides a ``.pyc`` per ``.py``: the module
    file and its package, its resources, the whole engine package and the generated requirements."""

    def files(folder: Path, pattern: str) -> set[Path]:
        return {p for p in folder.glob(pattern) if p.is_file() and "__pycache__" not in p.parts}

    module = files(MODULE, "BackSplit.py") | files(MODULE, "BackSplitSlicer/*.py") | files(MODULE, "Resources/**/*")
    expected = {p.relative_to(MODULE).as_posix() for p in module}
    expected |= {p.relative_to(REPO).as_posix() for p in files(ENGINE, "**/*.py")}
    return expected | {f"BackSplitSlicer/{requirements_name()}"}


def widget_module_names() -> set[str]:
    """Widget names the Qt binding (Widget.py and its *_widgets.py parts) uses: ``ui.name`` and
    the string values of their module-level tables."""
    text = "\n".join((MODULE / "BackSplitSlicer" / name).read_text(encoding="utf-8", errors="replace")
                     for name in ("Widget.py", "training_widgets.py", "project_widgets.py", "roles_widgets.py"))
    used = set(re.findall(r"\bui\.(\w+)", text))
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Dict, ast.Tuple)):
            parts = [*node.value.keys, *node.value.values] if isinstance(node.value, ast.Dict) else node.value.elts
            used |= {p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str)
                     and re.search(r"(Selector|Button|Label|LineEdit|TextEdit)$", p.value)}
    return used - {"setMRMLScene"}
