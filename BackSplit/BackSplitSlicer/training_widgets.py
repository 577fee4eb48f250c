"""The panel's training controls in Qt: Add case's mode, the case picker, the training curve.

A binding, like ``Widget.py``: the choices come from ``panel_state`` (``CASE_MODES``, ``case_choices``,
``chosen_cases``), the curve's MRML nodes from ``training_curve`` (both Qt-free and tested); here the widgets
call the controller's handlers and are drawn from its state. Qt and Slicer API as Slicer's sources use them:
``QListWidgetItem`` check states, ``slicer.qMRMLPlotWidget`` with ``setMRMLScene`` / ``setMRMLPlotViewNode``
(Slicer's Plots self-test does the same).
"""

from __future__ import annotations

import qt
import slicer

from BackSplitSlicer.panel_state import CASE_MODES, PanelState, case_choices, case_mode_index, chosen_cases
from BackSplitSlicer.redraw import Drawn
from BackSplitSlicer.training_curve import TrainingCurve


class TrainingControls:
    """Binds ``ui.caseModeComboBox``, ``ui.trainCasesListWidget`` and ``ui.trainingCurveFrame``."""

    def __init__(self, ui, controller):
        self.ui, self.controller = ui, controller
        self._drawn = Drawn()
        for _, _, words in CASE_MODES:
            ui.caseModeComboBox.addItem(words)
        ui.caseModeComboBox.connect("activated(int)", lambda i: controller.set_case_mode(CASE_MODES[i][1]))
        ui.trainCasesListWidget.connect("itemChanged(QListWidgetItem*)", self._on_ticked)
        self._plot = slicer.qMRMLPlotWidget()
        self._plot.setMRMLScene(slicer.mrmlScene)
        ui.trainingCurveFrame.layout().addWidget(self._plot)
        self._curve: TrainingCurve | None = None

    def _on_ticked(self, item=None) -> None:
        cases = self.ui.trainCasesListWidget
        rows = [cases.item(i) for i in range(cases.count)]
        ticked = {row.data(qt.Qt.UserRole) for row in rows if row.checkState() == qt.Qt.Checked}
        self.controller.select_cases(chosen_cases([row.data(qt.Qt.UserRole) for row in rows], ticked))

    def _curve_nodes(self) -> TrainingCurve:
        """The curve's nodes, made again when a scene close removed them."""
        if self._curve is None or self._curve.chart.GetScene() is None:
            self._curve = TrainingCurve(slicer.mrmlScene)
            self._plot.setMRMLPlotViewNode(self._curve.view_node)
        return self._curve

    def draw(self, state: PanelState) -> None:
        """Draw from the state (the caller blocks the widgets' signals)."""
        ui = self.ui
        if ui.caseModeComboBox.currentIndex != case_mode_index(state.annotated_slices_only):
            ui.caseModeComboBox.setCurrentIndex(case_mode_index(state.annotated_slices_only))
        if self._drawn.changed("cases", (state.cases, state.case_ids)):
            ui.trainCasesListWidget.clear()
            for case_id, text, ticked in case_choices(state):
                item = qt.QListWidgetItem(text)
                item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
                item.setCheckState(qt.Qt.Checked if ticked else qt.Qt.Unchecked)
                item.setData(qt.Qt.UserRole, case_id)
                ui.trainCasesListWidget.addItem(item)
        ui.trainCasesListWidget.setVisible(bool(state.cases))
        ui.trainCasesLabel.setVisible(bool(state.cases))
        shown = len(state.curve) > 1  # the nodes are made only for a curve worth drawing
        if self._drawn.changed("curve", state.curve) and (shown or self._curve is not None):
            self._curve_nodes().update(state.curve)
        ui.trainingCurveFrame.setVisible(shown)
