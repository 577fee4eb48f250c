"""The panel's segment-roles table in Qt: one row per segment (colour, name, a role combo box).

A binding, like ``Widget.py``: the rows come from the controller's state (``PanelState.roles``, built and
tested Qt-free), a pick calls ``PanelController.set_role`` (which writes the segment's ``BackSplit.Role``
tag). The table is rebuilt only when the rows change (``redraw.py``), so an open combo box stays open while
a job's progress redraws the panel.
"""

from __future__ import annotations

import qt

from BackSplitSlicer.redraw import Drawn
from BackSplitSlicer.roles import ROLES


class RolesTable:
    """Binds ``ui.segmentRolesTable``."""

    def __init__(self, ui, controller):
        self.table, self.controller = ui.segmentRolesTable, controller
        self._drawn = Drawn()
        self.table.setHorizontalHeaderLabels(["", "Segment", "Role"])
        self.table.horizontalHeader().setStretchLastSection(True)

    def draw(self, rows) -> None:
        if not self._drawn.changed("roles", rows):
            return
        table = self.table
        table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            swatch = qt.QTableWidgetItem()
            swatch.setBackground(qt.QColor(*row.color))
            table.setItem(index, 0, swatch)
            table.setItem(index, 1, qt.QTableWidgetItem(row.name))
            combo = qt.QComboBox()
            for role in ROLES:
                combo.addItem(role.capitalize(), role)
            combo.setCurrentIndex(ROLES.index(row.role))
            combo.connect("activated(int)",
                          lambda i, segment_id=row.segment_id: self.controller.set_role(segment_id, ROLES[i]))
            table.setCellWidget(index, 2, combo)
        table.resizeColumnToContents(0)
