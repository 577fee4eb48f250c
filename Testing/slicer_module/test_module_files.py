"""The Slicer module's files agree with each other: .ui widget names, parameter names, CMake file lists."""

from __future__ import annotations

import ast
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

from extension_layout import MODULE, REPO, widget_module_names

UI_FILE = MODULE / "Resources" / "UI" / "BackSplit.ui"


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def test_every_widget_the_code_uses_exists_in_the_ui():
    used = widget_module_names()
    assert {"connectButton", "stopButton", "reconnectButton", "caBundlePathLineEdit", "installLogTextEdit",
            "inputVolumeSelector"} <= used
    missing = sorted(used - set(ui_widgets()))
    assert not missing, f"widgets used in code but missing from BackSplit.ui: {missing}"


def test_the_widget_is_a_thin_binding_of_every_controller_action():
    from BackSplitSlicer.panel import ACTIONS

    text = (MODULE / "BackSplitSlicer" / "Widget.py").read_text(encoding="utf-8", errors="replace")
    assert len(text.splitlines()) < 250
    buttons = ast.literal_eval(re.search(r"^BUTTONS = (\{.*?\})$", text, re.M | re.S).group(1))
    assert set(buttons) == set(ACTIONS)
    # No behaviour: the widget neither talks to a backend nor edits the scene's segments itself.
    for forbidden in ("BackSplitLib", "backends", "export_case", "import_prediction", "set_segment_role",
                      "BackgroundCall", "initializeParameterNode", "connectGui"):
        assert forbidden not in text, forbidden
    # Only user-initiated signals reach the controller, and drawing blocks signals: no feedback loops.
    for signal in re.findall(r'\.(\w+)\.connect\((?!")', text) + re.findall(r'\.connect\("(\w+)\(', text):
        assert signal in ("currentNodeIDChanged", "editingFinished", "activated", "textEdited",
                          "currentPathChanged", "valueChanged", "toggled", "clicked", "timeout"), signal
    assert "blockSignals(True)" in text


def test_the_volume_selector_offers_no_labelmaps_and_no_widget_is_bound_to_a_parameter_node():
    widget = ui_widgets()["inputVolumeSelector"]
    props = {p.get("name"): p for p in widget.findall("property")}
    assert props["showChildNodeTypes"].findtext("bool") == "false"
    assert not any(p.get("name") == "SlicerParameterName" for w in ui_widgets().values()
                   for p in w.findall("property"))


def test_ui_is_a_designer_file_for_a_mrml_widget():
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget"
    # Node selectors get the scene from the top widget (Designer connections), as Slicer modules do.
    receivers = {c.findtext("receiver") for c in root.iter("connection")}
    selectors = {n for n, w in ui_widgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors <= receivers


def test_the_bundled_requirements_are_pyprojects_runtime_dependencies(tmp_path):
    import tomllib

    from BackSplitSlicer.install import runtime_requirements

    pyproject = REPO / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8", errors="replace"))["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["server"]
    assert runtime_requirements(pyproject.read_text(encoding="utf-8", errors="replace")) == expected
    assert any(r.startswith("nibabel") for r in expected)  # MONAI's Orientation needs it
    assert any(r.startswith("torch") for r in expected) and any(r.startswith("fastapi") for r in expected)
    # What the build runs (BackSplit/CMakeLists.txt) writes the same list; test_extension_build.py checks the
    # installed file.
    out = tmp_path / "BackSplitSlicer" / "requirements-local.txt"
    done = subprocess.run([sys.executable, str(MODULE / "BackSplitSlicer" / "install.py"), "--requirements",
                           str(pyproject), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [line for line in out.read_text(encoding="utf-8", errors="replace").splitlines() if not line.startswith("#")] == expected


def test_extension_cmake_has_the_slicer_metadata():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8", errors="replace")
    for needle in ("set(EXTENSION_NAME BackSplit)", "set(EXTENSION_CATEGORY \"Segmentation\")",
                   "EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                   "EXTENSION_SCREENSHOTURLS", "find_package(Slicer REQUIRED)", "add_subdirectory(BackSplit)",
                   "Slicer_EXTENSION_GENERATE_CONFIG", "Slicer_EXTENSION_CPACK"):
        assert needle in text, needle
    module = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8", errors="replace")
    assert "WITH_GENERIC_TESTS" in module and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in module
    # The marker the end-to-end part prints is the one ctest skips on (test_extension_build runs ctest).
    marker = re.search(r'SKIP_REGULAR_EXPRESSION "([^"]+)"', module).group(1)
    assert f'SELFTEST_SKIP_MARKER = "{marker}"' in (MODULE / "BackSplitSlicer" / "selftest.py").read_text(encoding="utf-8")


def test_icon_is_a_128_pixel_png():
    data = (MODULE / "Resources" / "Icons" / "BackSplit.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (128, 128)


def test_module_file_has_metadata_citation_and_self_test():
    text = (MODULE / "BackSplit.py").read_text(encoding="utf-8", errors="replace")
    assert "arXiv:2511.19394" in text and "Saluja" in text
    assert "class BackSplitTest(ScriptedLoadableModuleTest)" in text
    assert 'categories = ["Segmentation"]' in text
    assert len(text.splitlines()) < 150  # the shell stays thin


def test_the_example_schemas_load():
    from BackSplitLib.schema import LabelSchema

    schemas = sorted((REPO / "Resources" / "Schemas").glob("*.json"))
    assert len(schemas) >= 2
    for path in schemas:
        schema = LabelSchema.load(path)
        assert schema.target and schema.auxiliary_names, path.name


def test_enter_exit_and_cleanup_survive_a_setup_that_failed(monkeypatch):
    """Slicer calls enter/exit/cleanup even when setup() raised; they must not add an error of their own."""
    import importlib.util
    import types

    base = types.ModuleType("slicer.ScriptedLoadableModule")  # only what BackSplit.py subclasses

    class ScriptedLoadableModuleWidget:
        def setup(self):
            pass

    base.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {})
    base.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (), {})
    base.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", base)
    spec = importlib.util.spec_from_file_location("BackSplit_under_test", MODULE / "BackSplit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    widget = module.BackSplitWidget()
    try:
        widget.setup()  # fails here: no Qt (PythonQt) to build the panel with
    except ImportError:
        pass
    else:
        raise AssertionError("setup() was expected to fail without Qt")
    widget.enter()
    widget.exit()
    widget.cleanup()
