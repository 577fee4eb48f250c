"""The Qt panel's Project section: a binding of the controller's identity and project picker (issue 24).

Who is signed in, the server's projects (the chosen one selected), why there is no picker (the local engine,
a server from before projects, not connected), and "New from roles" with the name typed beside it. What is
enabled and what a choice does are the controller's (``panel_projects.py``); ``Widget`` owns the button's
enabled state like every other action's.
"""

from __future__ import annotations

from BackSplitSlicer.panel_state import CHOOSE_PROJECT
from BackSplitSlicer.redraw import Drawn

# Shown only when the server has projects.
PICKER = ("projectLabel", "projectComboBox", "newProjectNameLabel", "newProjectNameLineEdit", "newProjectButton")


class ProjectControls:
    """Binds ``identityLabel``, ``projectComboBox``, ``projectNoteLabel`` and the new-project name field."""

    def __init__(self, ui, controller):
        self.ui, self.controller = ui, controller
        self._drawn = Drawn()
        ui.projectComboBox.connect("activated(int)",
                                   lambda index: controller.choose_project(ui.projectComboBox.itemData(index)))

    def create(self, *unused) -> None:
        """The "New from roles" button (clicked(bool) may pass its argument)."""
        self.controller.create_project(self.ui.newProjectNameLineEdit.text)

    def draw(self, state) -> None:
        ui = self.ui
        ui.identityLabel.text = state.identity
        ui.identityLabel.setVisible(bool(state.identity))
        if self._drawn.changed("projects", state.projects):  # an open dropdown stays open while polling
            ui.projectComboBox.clear()
            for name, text in state.projects:
                ui.projectComboBox.addItem(text, name)
        index = ui.projectComboBox.findData(state.project)
        if index >= 0 and ui.projectComboBox.currentIndex != index:
            ui.projectComboBox.setCurrentIndex(index)
        for name in PICKER:
            getattr(ui, name).setVisible(bool(state.projects))
        ui.projectComboBox.enabled = state.enabled[CHOOSE_PROJECT]
        ui.projectNoteLabel.text = state.projects_note
        ui.projectNoteLabel.setVisible(bool(state.projects_note))
