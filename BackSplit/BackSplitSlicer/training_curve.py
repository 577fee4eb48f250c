"""The training curve as Slicer plots it: MRML table, plot series, chart and plot view nodes, without Qt.

The controller's ``state().curve`` holds the job's polled (iteration, loss, validation Dice); Slicer draws
curves from a ``vtkMRMLTableNode`` through ``vtkMRMLPlotSeriesNode`` / ``vtkMRMLPlotChartNode`` and shows a
chart in a ``qMRMLPlotWidget`` bound to a ``vtkMRMLPlotViewNode`` (the Plots module's design). This module keeps
those nodes up to date; the Qt widget only binds a ``qMRMLPlotWidget`` to :attr:`TrainingCurve.view_node`.
The nodes are hidden from the data tree and not saved with the scene: the curve belongs to the running job.
"""

from __future__ import annotations

import math

import vtk

SERIES = (("loss", 1, (0.2, 0.4, 1.0)), ("validation Dice", 2, (0.1, 0.7, 0.2)))  # name, curve column, colour


class TrainingCurve:
    """Loss and validation Dice over iterations, as MRML plot nodes in ``scene``."""

    def __init__(self, scene, name: str = "BackSplit training"):
        self.scene = scene
        self.chart = self._node("vtkMRMLPlotChartNode", name)
        self.chart.SetXAxisTitle("iteration")
        self.chart.SetTitle("Training")
        self.tables, self.series = [], []
        for label, _, color in SERIES:
            table = self._node("vtkMRMLTableNode", f"{name} {label}")
            for column in ("iteration", label):
                array = vtk.vtkDoubleArray()
                array.SetName(column)
                table.AddColumn(array)
            series = self._node("vtkMRMLPlotSeriesNode", label)
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("iteration")
            series.SetYColumnName(label)
            series.SetPlotType(series.PlotTypeScatter)
            series.SetColor(*color)
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
            self.tables.append(table)
            self.series.append(series)
        self.view_node = self._node("vtkMRMLPlotViewNode", name)
        self.view_node.SetPlotChartNodeID(self.chart.GetID())

    def _node(self, class_name: str, name: str):
        node = self.scene.AddNewNodeByClass(class_name, name)
        node.SetHideFromEditors(True)
        node.SetSaveWithScene(False)
        return node

    def update(self, curve) -> None:
        """Replace the plotted points with ``curve``'s (iteration, loss, validation Dice) rows; a value that was
        not measured at an iteration (None) is left out of its series."""
        for table, (_, column, _) in zip(self.tables, SERIES):
            points = [(row[0], row[column]) for row in curve
                      if row[column] is not None and not math.isnan(float(row[column]))]
            data = table.GetTable()
            data.SetNumberOfRows(len(points))
            for index, (iteration, value) in enumerate(points):
                data.SetValue(index, 0, vtk.vtkVariant(float(iteration)))
                data.SetValue(index, 1, vtk.vtkVariant(float(value)))
            data.Modified()
            table.Modified()

    def points(self) -> list:
        """What each series plots now: one list of (iteration, value) per series (what tests read back)."""
        result = []
        for table in self.tables:
            data = table.GetTable()
            result.append([(data.GetValue(r, 0).ToDouble(), data.GetValue(r, 1).ToDouble())
                           for r in range(data.GetNumberOfRows())])
        return result

    def remove(self) -> None:
        for node in (self.view_node, self.chart, *self.series, *self.tables):
            if node.GetScene() is not None:
                self.scene.RemoveNode(node)
