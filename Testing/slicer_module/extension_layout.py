"""The built extension's layout, read from BackSplit/CMakeLists.txt the way CMake reads it.

``cmake_listed_files`` resolves the module's file lists and the engine glob; ``install_layout`` lays the
files out as Slicer installs a scripted module (``lib/Slicer-X.Y/qt-scripted-modules/``: the module file,
its package, its resources, the engine package copied from the build tree, and the requirements file
generated at configure time), so tests can run the module from exactly what an installed extension holds.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "BackSplit"
ENGINE = REPO / "BackSplitLib"


def cmake_variables(text: str) -> dict[str, str]:
    variables = {"MODULE_NAME": "BackSplit", "CMAKE_CURRENT_SOURCE_DIR": str(MODULE)}
    for name, value in re.findall(r"set\((\w+)\s+([^\s)]+)\)", text):
        variables[name] = value
    return variables


def cmake_listed_files() -> list[Path]:
    """Every source file BackSplit/CMakeLists.txt bundles, resolved the way CMake would (lists and the glob)."""
    text = re.sub(r"#.*", "", (MODULE / "CMakeLists.txt").read_text(encoding="utf-8", errors="replace"))
    variables = cmake_variables(text)

    def expand(value: str) -> str:
        while (expanded := re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), m.group(0)), value)) != value:
            value = expanded
        return value

    files = []
    for list_name in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        body = re.search(rf"set\({list_name}\s+(.*?)\)", text, re.S).group(1)
        files += [MODULE / expand(item) for item in body.split()]
    glob = re.search(r"file\(GLOB_RECURSE ENGINE_PYTHON_SCRIPTS RELATIVE (\S+) CONFIGURE_DEPENDS (\S+)\)", text)
    engine = Path(expand(glob.group(1)))
    assert expand(glob.group(2)) == f"{engine}/*.py", glob.group(2)
    files += sorted(engine.rglob("*.py"))
    return files


def install_layout(dest: Path) -> Path:
    """Copy what CMakeLists.txt bundles to ``dest`` with the installed relative paths; returns ``dest``."""
    for source in cmake_listed_files():
        source = source.resolve()
        target = dest / (source.relative_to(REPO) if ENGINE in source.parents else source.relative_to(MODULE))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8", errors="replace")
    assert "${CMAKE_CURRENT_BINARY_DIR}/BackSplitSlicer/requirements-local.txt" in text
    subprocess.run([sys.executable, str(MODULE / "BackSplitSlicer" / "install.py"), "--requirements",
                    str(REPO / "pyproject.toml"), str(dest / "BackSplitSlicer" / "requirements-local.txt")],
                   check=True)
    return dest


def widget_module_names() -> set[str]:
    """Widget names Widget.py uses: ``ui.name`` and the string values of its module-level tables."""
    text = (MODULE / "BackSplitSlicer" / "Widget.py").read_text(encoding="utf-8", errors="replace")
    used = set(re.findall(r"\bui\.(\w+)", text))
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Dict, ast.Tuple)):
            parts = [*node.value.keys, *node.value.values] if isinstance(node.value, ast.Dict) else node.value.elts
            used |= {p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str)
                     and re.search(r"(Selector|Button|Label|LineEdit|TextEdit)$", p.value)}
    return used - {"setMRMLScene"}
