"""What a face redraws (``redraw.py``), the tick's idle cost, and the Qt binding applying both.

The rules are driven with states from a real controller on real MRML; the Qt binding (``Widget.py``) cannot
run outside Slicer (PythonQt), so its use of the rules is checked in its source.
"""

from __future__ import annotations

import ast
import re
import threading

from extension_layout import MODULE

import BackSplitSlicer.panel as panel_module
from BackSplitSlicer.backends import BackgroundCall
from BackSplitSlicer.panel import MemorySettings, PanelController
from BackSplitSlicer.panel_state import Work
from BackSplitSlicer.redraw import APPEND, KEEP, REPLACE, Drawn, edits, log_update

WIDGET = (MODULE / "BackSplitSlicer" / "Widget.py").read_text(encoding="utf-8")


def test_a_growing_log_is_appended_a_new_one_replaces_it():
    assert log_update("", "pip install x") == (REPLACE, "pip install x")
    assert log_update("pip install x", "pip install x\nCollecting x\nDone") == (APPEND, "Collecting x\nDone")
    assert log_update("a\nb", "a\nb") == (KEEP, "")
    assert log_update("a\nb", "other install") == (REPLACE, "other install")
    assert log_update("a\nb", "a\nbc") == (REPLACE, "a\nbc")  # a line that changed is not an append
    drawn = Drawn()
    assert [drawn.grow("log", text)[0] for text in ("x", "x\ny", "x\ny", "z")] == [REPLACE, APPEND, KEEP, REPLACE]


def test_a_part_is_redrawn_only_when_its_data_changes(scene):
    panel = PanelController(scene, MemorySettings())
    drawn = Drawn()
    states = []
    panel.observe(states.append)
    panel.set_local_data_folder("/data/one")
    for _ in range(5):  # a job's progress publishes new states; the model list is the same every time
        panel.set_training(iterations=(panel.state().iterations or panel.state().iterations_default) + 1)
    assert len(states) == 6
    assert [drawn.changed("models", s.models) for s in states] == [True] + [False] * 5
    assert [drawn.changed("roles", s.roles) for s in states] == [True] + [False] * 5


def test_only_fields_that_differ_are_written():
    shown = {"caBundlePathLineEdit": "/ca.pem", "localDataPathLineEdit": "/data/on"}  # the user is typing
    wanted = {"caBundlePathLineEdit": "/ca.pem", "localDataPathLineEdit": "/data/one"}
    assert edits(shown, wanted) == {"localDataPathLineEdit": "/data/one"}
    assert edits(wanted, wanted) == {}


def test_the_tick_sleeps_only_while_background_work_is_pending(scene, monkeypatch):
    sleeps = []
    monkeypatch.setattr(panel_module.time, "sleep", sleeps.append)
    panel = PanelController(scene, MemorySettings())
    for _ in range(20):
        panel.tick()
    assert sleeps == []  # idle: a timer every 100 ms costs nothing
    release = threading.Event()
    panel._tasks.append(panel_module._Task(Work.list_models, "Listing models", BackgroundCall(release.wait, 10),
                                           lambda r: None, None))
    panel.tick()
    assert sleeps == [panel_module.GIL_SLICE_S]  # pending: the GIL is released for the worker
    release.set()


def test_the_widget_applies_the_rules():
    draw = WIDGET[WIDGET.index("    def _draw("):]
    assert 'self._drawn.changed("models", state.models)' in draw and "modelComboBox.clear()" in draw
    assert re.search(r'self\._drawn\.grow\("install_log", state\.install_log\)', draw)
    assert "appendPlainText" in draw and "edits(" in draw
    assert "QCompleter(" not in draw and WIDGET.count("QCompleter(") == 1  # one completer, made once
    assert "PATH_FIELDS" in draw and ".currentPath = state." not in draw
    assert "state.torch_build" in draw
    # Scene work in the main thread (the exports) shows a wait cursor.
    scene_work = ast.literal_eval(re.search(r"^SCENE_WORK = (\(.*?\))$", WIDGET, re.M).group(1))
    assert {"add_case", "add_tissue_classes", "import_organ_map"} <= set(scene_work)
    assert "slicer.util.WaitCursor()" in WIDGET
    assert "install_torch" not in WIDGET and "PyTorchUtils" not in WIDGET  # torch never installs in Slicer's process
