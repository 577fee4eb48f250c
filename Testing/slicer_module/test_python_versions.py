"""What the extension bundles works under the Pythons Slicer ships: 3.9 (Slicer 5.8) and 3.12 (Slicer 5.10).

Neither pyenv Python has slicer-core (no cp39 wheel) or torch (the CPU wheel here is cp311 only), so in each:
every bundled file compiles, and every bundled module whose imports (followed through the bundle) are the
standard library imports for real — the client, the errors, the install step. The torch path runs on the
suite's own 3.11; the standard-library client talks to a real server on 3.12 in test_panel_server.py.
Local mode needs 3.10+ (pydantic evaluates ``X | None``): the panel says so on 5.8 (test_panel.py).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PYENV = Path.home() / ".pyenv" / "versions"
CHECK = textwrap.dedent("""
    import importlib, json, os, py_compile, sys, tempfile
    layout, modules, files = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    sys.path.insert(0, layout)
    out = tempfile.mkdtemp()  # the installed tree stays as installed
    for index, path in enumerate(files):
        py_compile.compile(path, doraise=True, cfile=os.path.join(out, f"{index}.pyc"))
    for module in modules:
        importlib.import_module(module)
    print(len(files), "compiled,", len(modules), "imported on", sys.version.split()[0])
""")


def python(version: str) -> Path:
    found = sorted(PYENV.glob(f"{version}.*/bin/python"))
    if not found:
        pytest.skip(f"no Python {version} under {PYENV} (pyenv)")
    return found[-1]


def stdlib_only_modules(layout: Path) -> list[str]:
    """Bundled modules whose imports, followed through the bundle, reach only the standard library."""
    imports: dict[str, set[str]] = {}
    for path in layout.rglob("*.py"):
        parts = path.relative_to(layout).with_suffix("").parts
        if parts == ("BackSplit",):
            continue  # the module shell imports the Slicer application
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.parse(path.read_text(encoding="utf-8", errors="replace")).body:  # top level: what importing the module runs
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                found.add(node.module)
        imports[name] = found

    def pure(name: str, seen: frozenset = frozenset()) -> bool:
        parents = [name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)]  # imported first
        for imported in [*imports[name], *parents]:
            if imported.split(".")[0] in sys.stdlib_module_names or imported in seen:
                continue
            inside = imported if imported in imports else imported.rsplit(".", 1)[0]  # from pkg import module
            if inside not in imports or not pure(inside, seen | {name}):
                return False
        return True

    return sorted(n for n in imports if pure(n))


@pytest.mark.parametrize("version", ["3.9", "3.12"])
def test_bundled_files_compile_and_stdlib_modules_import(version, installed_extension):
    import json

    interpreter = python(version)
    layout = installed_extension.module_dir  # built and installed by cmake (conftest)
    modules = stdlib_only_modules(layout)
    assert {"BackSplitLib.client", "BackSplitLib.errors", "BackSplitSlicer.install"} <= set(modules), modules
    files = [str(p) for p in layout.rglob("*.py")]
    done = subprocess.run([str(interpreter), "-I", "-c", CHECK, str(layout), json.dumps(modules), json.dumps(files)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout.strip())
