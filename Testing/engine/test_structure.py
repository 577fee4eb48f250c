"""The code's shape, checked: no import cycles in any package (the engine, the Slicer module's logic, the web
app), no source file over ~600 lines.

The import graph is read from the source (``ast``), function-level imports included: a cycle hidden in a
function body still couples two modules, and only works by the accident of import order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "BackSplitLib"
# Import name -> the folder that holds the package (the Slicer module's logic sits beside BackSplit.py).
PACKAGES = {"BackSplitLib": REPO, "BackSplitSlicer": REPO / "BackSplit", "BackSplitWeb": REPO}
MAX_LINES = 600
SOURCE_FOLDERS = ("BackSplitLib", "BackSplit", "BackSplitWeb", "Testing")


def _module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str = PACKAGE) -> dict[str, Path]:
    root = PACKAGES[package]
    return {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest module of ``modules`` that ``name`` (a dotted import target) names or lies in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(package: str = PACKAGE) -> dict[str, set[str]]:
    """module -> modules of ``package`` it imports anywhere in its source (top level or inside functions).

    ``from A import b`` counts as importing ``A.b`` when that is a module, else ``A``. A package's
    implicit import of its parents is not an edge (it is how Python loads any submodule).
    """
    modules = _modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, one level up per extra dot
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" for alias in node.names]
            for target in targets:
                if target.split(".")[0] != package:
                    continue
                resolved = _resolve(target, modules)
                if resolved and resolved != name:
                    edges.add(resolved)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_function_level_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "BackSplitLib.inference" in graph["BackSplitLib.auxiliary.advisor"]  # imported inside advise()
    assert "BackSplitLib.errors" in graph["BackSplitLib.losses"]  # relative import


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_package_has_import_cycles(package):
    graph = import_graph(package)
    assert len(graph) >= 5, graph  # the package's modules were found
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_source_file_is_over_600_lines():
    sizes = {}
    for folder in SOURCE_FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                sizes[path.relative_to(REPO).as_posix()] = lines
    assert not sizes, f"split these by subject (over {MAX_LINES} lines): {sizes}"
