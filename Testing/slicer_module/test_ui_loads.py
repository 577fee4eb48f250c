"""BackSplit.ui loads in a real Qt (PySide6's QUiLoader, offscreen) with every widget the binding uses.

Slicer's own classes (qMRMLNodeComboBox, ctkCollapsibleButton, ctkPathLineEdit, qMRMLWidget) are unknown to
plain Qt and load as placeholders; the standard widgets are real, with the properties the .ui gives them.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtUiTools = pytest.importorskip("PySide6.QtUiTools", reason="PySide6-Essentials (test extra) is not installed")

from extension_layout import MODULE, widget_module_names  # noqa: E402
from PySide6 import QtCore, QtWidgets  # noqa: E402


@pytest.fixture(scope="module")
def panel():
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    loader = QtUiTools.QUiLoader()
    ui_file = QtCore.QFile(str(MODULE / "Resources" / "UI" / "BackSplit.ui"))
    assert ui_file.open(QtCore.QFile.ReadOnly)
    widget = loader.load(ui_file)
    ui_file.close()
    assert widget is not None, loader.errorString()
    yield widget
    widget.deleteLater()
    app.processEvents()


def test_every_widget_the_binding_uses_is_in_the_loaded_ui(panel):
    found = {w.objectName() for w in panel.findChildren(QtCore.QObject)}
    missing = sorted(widget_module_names() - found)
    assert not missing, missing


def test_standard_widgets_are_real_and_configured(panel):
    def child(cls, name):
        widget = panel.findChild(cls, name)
        assert widget is not None, f"{name} is not a {cls.__name__}"
        return widget

    backend = child(QtWidgets.QComboBox, "backendComboBox")
    assert [backend.itemText(i) for i in range(backend.count())] == ["Local", "Remote"]
    assert child(QtWidgets.QLineEdit, "tokenLineEdit").echoMode() == QtWidgets.QLineEdit.Password
    assert child(QtWidgets.QLineEdit, "serverUrlLineEdit").placeholderText().endswith(":8765")
    assert child(QtWidgets.QPlainTextEdit, "installLogTextEdit").isReadOnly()
    assert child(QtWidgets.QTableWidget, "segmentRolesTable").columnCount() == 3
    for name in ("connectButton", "stopButton", "reconnectButton", "fineTuneButton", "cancelButton",
                 "predictButton", "installDependenciesButton"):
        child(QtWidgets.QPushButton, name)
