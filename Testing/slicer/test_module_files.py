"""The Slicer module's files agree with each other: .ui widget names, parameter names, CMake file lists."""

from __future__ import annotations

import ast
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "BackSplit"
UI_FILE = MODULE / "Resources" / "UI" / "BackSplit.ui"


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def ui_parameter_names() -> dict[str, str]:
    """{SlicerParameterName: widget name} from the dynamic properties."""
    names = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names[prop.findtext("string")] = name
    return names


def test_every_widget_the_code_uses_exists_in_the_ui():
    used = set()
    for source in (MODULE / "BackSplitSlicer" / "Widget.py", MODULE / "BackSplit.py"):
        text = source.read_text()
        used |= set(re.findall(r"\bui\.(\w+)", text))
        # getattr(self.ui, name) over literal tuples of names
        for group in re.findall(r"for name in \(([^)]*)\):\s*\n\s*getattr\(self\.ui", text):
            used |= set(re.findall(r'"(\w+)"', group))
    assert used, "the widget code should refer to .ui widgets"
    missing = sorted(used - set(ui_widgets()))
    assert not missing, f"widgets used in code but missing from BackSplit.ui: {missing}"


def test_every_bound_widget_names_a_parameter_and_every_parameter_has_a_widget():
    tree = ast.parse((MODULE / "BackSplitSlicer" / "Parameter.py").read_text())
    node_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BackSplitParameterNode")
    fields = {s.target.id for s in node_class.body if isinstance(s, ast.AnnAssign)}
    assert set(ui_parameter_names()) == fields


def test_ui_is_a_designer_file_for_a_mrml_widget():
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget"
    # Node selectors get the scene from the top widget (Designer connections), as Slicer modules do.
    receivers = {c.findtext("receiver") for c in root.iter("connection")}
    selectors = {n for n, w in ui_widgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors <= receivers


def cmake_listed_files() -> list[Path]:
    """Every file BackSplit/CMakeLists.txt lists, resolved the way CMake would."""
    text = (MODULE / "CMakeLists.txt").read_text()
    text = re.sub(r"#.*", "", text)
    variables = {"MODULE_NAME": "BackSplit", "CMAKE_CURRENT_SOURCE_DIR": str(MODULE)}
    for name, value in re.findall(r"set\((\w+)\s+([^\s)]+)\)", text):
        variables[name] = value

    def expand(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), m.group(0)), value)

    files = []
    for list_name, base in (("MODULE_PYTHON_SCRIPTS", MODULE), ("MODULE_PYTHON_RESOURCES", MODULE),
                            ("ENGINE_PYTHON_SCRIPTS", Path(expand(variables["ENGINE_SOURCE_DIR"])))):
        body = re.search(rf"set\({list_name}\s+(.*?)\)", text, re.S).group(1)
        files += [base / expand(item) for item in body.split()]
    return files


def test_every_file_the_cmake_lists_name_exists():
    files = cmake_listed_files()
    assert len(files) >= 15
    missing = [str(f.relative_to(REPO)) for f in files if not f.exists()]
    assert not missing, f"listed in BackSplit/CMakeLists.txt but missing: {missing}"


def test_every_module_python_file_is_listed_in_cmake():
    listed = {f.resolve() for f in cmake_listed_files()}
    present = {p.resolve() for p in [MODULE / "BackSplit.py", *(MODULE / "BackSplitSlicer").glob("*.py")]}
    assert present <= listed, f"not in BackSplit/CMakeLists.txt: {sorted(map(str, present - listed))}"


def test_the_engine_files_the_module_imports_are_bundled():
    # engine modules by name: a file BackSplitLib/x.py or a package BackSplitLib/x/ (listed with its files)
    engine_files = [f for f in cmake_listed_files() if "BackSplitLib" in f.parts]
    engine = {f"{f.parent.name if f.parent.name != 'BackSplitLib' else f.stem}.py" for f in engine_files}
    imported = set()
    for source in [MODULE / "BackSplit.py", *(MODULE / "BackSplitSlicer").glob("*.py")]:
        if source.name == "selftest.py":
            continue  # the phantom it uses is an engine feature; the self-test runs from a checkout or install
        imported |= set(re.findall(r"from BackSplitLib\.(\w+) import", source.read_text()))
    assert {f"{m}.py" for m in imported} <= engine
    # ...and those engine files import only each other (no torch, no server), so the bundle is complete.
    for path in engine_files:
        name, text = path.name, path.read_text()
        deps = set(re.findall(r"^from BackSplitLib\.(\w+) import|^import BackSplitLib\.(\w+)", text, re.M))
        for dep in {d for pair in deps for d in pair if d}:
            assert f"{dep}.py" in engine, f"BackSplitLib/{name} imports {dep}, which is not bundled"
        assert not re.search(r"^\s*(import|from) (torch|monai)\b", text, re.M), f"{name} imports torch at top level"


def test_extension_cmake_has_the_slicer_metadata():
    text = (REPO / "CMakeLists.txt").read_text()
    for needle in ("set(EXTENSION_NAME BackSplit)", "set(EXTENSION_CATEGORY \"Segmentation\")",
                   "EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                   "EXTENSION_SCREENSHOTURLS", "find_package(Slicer REQUIRED)", "add_subdirectory(BackSplit)",
                   "Slicer_EXTENSION_GENERATE_CONFIG", "Slicer_EXTENSION_CPACK"):
        assert needle in text, needle
    module = (MODULE / "CMakeLists.txt").read_text()
    assert "WITH_GENERIC_TESTS" in module and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in module


def test_icon_is_a_128_pixel_png():
    data = (MODULE / "Resources" / "Icons" / "BackSplit.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (128, 128)


def test_module_file_has_metadata_citation_and_self_test():
    text = (MODULE / "BackSplit.py").read_text()
    assert "arXiv:2511.19394" in text and "Saluja" in text
    assert "class BackSplitTest(ScriptedLoadableModuleTest)" in text
    assert 'categories = ["Segmentation"]' in text
    assert len(text.splitlines()) < 150  # the shell stays thin
