"""The BackSplit panel in Qt: a binding of the .ui to :class:`BackSplitSlicer.panel.PanelController`.

User signals call controller handlers; the controller's state is drawn into the widgets whenever its
observer fires; a QTimer calls ``tick()`` (which also lets worker threads run under PythonQt's GIL, see
``panel.py``). No behaviour lives here: what is enabled, what a click does, polling and errors are the
controller's. Drawing blocks the widgets' signals, so redrawing never feeds back into the controller, and
touches only what changed (``redraw.py``'s rules: the install log grows, the model list and the roles table are
rebuilt only when they change, fields are written only when they differ); overloaded Qt signals are connected
by signature (``"activated(int)"``), as PythonQt needs.
"""

from __future__ import annotations

import qt
import slicer

from BackSplitSlicer.panel import TICK_MS, PanelController, PanelState, Settings
from BackSplitSlicer.project_widgets import ProjectControls
from BackSplitSlicer.redraw import APPEND, REPLACE, Drawn, edits
from BackSplitSlicer.roles_widgets import RolesTable
from BackSplitSlicer.training_widgets import TrainingControls

# Action -> the button that triggers it.
BUTTONS = {"connect": "connectButton", "stop": "stopButton", "reconnect": "reconnectButton",
           "install": "installDependenciesButton", "refresh_models": "refreshModelsButton",
           "add_tissue_classes": "addTissueClassesButton", "import_organ_map": "importOrganMapButton",
           "open_segment_editor": "segmentEditorButton", "add_case": "addCaseButton",
           "fine_tune": "fineTuneButton", "cancel": "cancelButton", "predict": "predictButton",
           "promote": "promoteButton", "show_auxiliary": "showAuxiliaryButton",
           "fill_between_slices": "fillBetweenSlicesButton", "accept_prediction": "acceptPredictionButton",
           "create_project": "newProjectButton"}
REMOTE_ONLY = ("serverUrlLabel", "serverUrlLineEdit", "tokenLabel", "tokenLineEdit", "caBundleLabel",
               "caBundlePathLineEdit")
LOCAL_ONLY = ("localDataLabel", "localDataPathLineEdit", "wheelFolderLabel", "wheelFolderPathLineEdit",
              "installDependenciesButton", "installLogTextEdit")
NODE_SELECTORS = {"inputVolumeSelector": "volume_id", "inputSegmentationSelector": "segmentation_id",
                  "outputSegmentationSelector": "output_id", "organMapSelector": "organ_map_id"}
# Handlers that work on the scene in the main thread (exports, imports): a wait cursor while they run.
SCENE_WORK = ("add_tissue_classes", "import_organ_map", "add_case", "predict")
PATH_FIELDS = {"caBundlePathLineEdit": "ca_bundle", "localDataPathLineEdit": "local_data_folder",
               "wheelFolderPathLineEdit": "wheel_folder"}


class QtSettings(Settings):
    """The controller's settings store on QSettings (per user, across scenes and sessions)."""

    def get(self, key, default=None):
        value = qt.QSettings().value(key)
        return default if value is None else value

    def set(self, key, value) -> None:
        qt.QSettings().setValue(key, value)


class Widget(qt.QWidget):
    """The module panel. ``BackSplit.py`` creates one and adds it to the module's layout."""

    def __init__(self, ui_path: str, parent=None):
        qt.QWidget.__init__(self, parent)
        layout = qt.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        ui_widget = slicer.util.loadUI(ui_path)
        layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self._shown_message = 0
        self._drawn = Drawn()
        self._recent_servers = qt.QStringListModel()  # one completer; its list follows the state
        self.ui.serverUrlLineEdit.setCompleter(qt.QCompleter(self._recent_servers, self.ui.serverUrlLineEdit))
        self.controller = PanelController(slicer.mrmlScene, QtSettings(), ask=lambda question: (
            slicer.util.confirmOkCancelDisplay(question, windowTitle="BackSplit")))
        self.roles = RolesTable(self.ui, self.controller)  # one row per segment: colour, name, role
        self.projects = ProjectControls(self.ui, self.controller)  # who is signed in, the project picker
        self._connect()
        self.training = TrainingControls(self.ui, self.controller)  # case mode, case picker, training curve
        self.controller.observe(self.render)
        self.render(self.controller.state())
        self._timer = qt.QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self.controller.tick)
        self._timer.start()

    def cleanup(self) -> None:
        """Module reloaded or application closing: stop the timer; a local engine is told to stop."""
        self._timer.stop()
        self.controller.shutdown()

    # ------------------------------------------------------------------ user -> controller
    def _connect(self) -> None:
        ui, c = self.ui, self.controller
        ui.inputVolumeSelector.currentNodeIDChanged.connect(c.set_volume)
        ui.inputSegmentationSelector.currentNodeIDChanged.connect(c.set_segmentation)
        ui.outputSegmentationSelector.currentNodeIDChanged.connect(c.set_output)
        ui.organMapSelector.currentNodeIDChanged.connect(lambda node_id: c.set_organ_map(node_id))
        ui.organStructuresLineEdit.editingFinished.connect(
            lambda: c.set_organ_map(ui.organMapSelector.currentNodeID, ui.organStructuresLineEdit.text))
        ui.backendComboBox.connect("activated(int)",
                                   lambda index: c.set_backend_kind(ui.backendComboBox.itemText(index)))
        ui.serverUrlLineEdit.editingFinished.connect(lambda: c.set_server_url(ui.serverUrlLineEdit.text))
        ui.tokenLineEdit.textEdited.connect(c.set_token)
        ui.caBundlePathLineEdit.currentPathChanged.connect(c.set_ca_bundle)
        ui.localDataPathLineEdit.currentPathChanged.connect(c.set_local_data_folder)
        ui.wheelFolderPathLineEdit.currentPathChanged.connect(c.set_wheel_folder)
        ui.iterationsSpinBox.connect("valueChanged(int)", lambda value: c.set_training(iterations=value))
        ui.trainNewRadioButton.toggled.connect(lambda checked: c.set_training(train_new=checked))
        ui.predictAuxiliaryCheckBox.toggled.connect(lambda checked: c.set_training(predict_auxiliary=checked))
        ui.modelComboBox.connect("activated(int)",
                                 lambda index: c.select_model(ui.modelComboBox.itemData(index)))
        handlers = {"open_segment_editor": self.openSegmentEditor, "create_project": self.projects.create,
                    "fill_between_slices": lambda: self.openSegmentEditor("Fill between slices"),
                    **{action: self._waiting(getattr(c, action)) for action in SCENE_WORK}}
        for action, button in BUTTONS.items():
            getattr(ui, button).clicked.connect(handlers.get(action, getattr(c, action)))

    @staticmethod
    def _waiting(handler):
        def run(*unused):  # clicked(bool) may pass its argument
            with slicer.util.WaitCursor():
                handler()

        return run

    def openSegmentEditor(self, effect: str = "") -> None:
        """Slicer's own editor (its Fill between slices effect is the same ITK algorithm the browser uses)."""
        state = self.controller.state()
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(slicer.mrmlScene.GetNodeByID(state.segmentation_id))
        editor.setSourceVolumeNode(slicer.mrmlScene.GetNodeByID(state.volume_id))
        if effect:
            editor.setActiveEffectByName(effect)

    # ------------------------------------------------------------------ controller -> widgets
    def render(self, state: PanelState) -> None:
        ui = self.ui
        blocked = [w for w in vars(ui).values() if isinstance(w, qt.QObject) and not w.signalsBlocked()]
        for widget in blocked:
            widget.blockSignals(True)
        try:
            self._draw(state)
        finally:
            for widget in blocked:
                widget.blockSignals(False)
        if state.message is not None and state.message.serial > self._shown_message:
            self._shown_message = state.message.serial
            if state.message.level == "error":
                hint = f"\n\nWhat to do: {state.message.hint}" if state.message.hint else ""
                slicer.util.errorDisplay(state.message.text + hint, windowTitle="BackSplit")

    def _draw(self, state: PanelState) -> None:
        ui = self.ui
        for selector, key in NODE_SELECTORS.items():
            if getattr(ui, selector).currentNodeID != (getattr(state, key) or ""):
                getattr(ui, selector).setCurrentNodeID(getattr(state, key) or "")
        self.roles.draw(state.roles)
        ui.backendComboBox.setCurrentIndex(ui.backendComboBox.findText(state.backend_kind))
        remote = state.backend_kind == "Remote"
        for name in REMOTE_ONLY:
            getattr(ui, name).setVisible(remote)
        for name in LOCAL_ONLY:
            getattr(ui, name).setVisible(not remote)
        ui.connectButton.text = "Connect" if remote else "Start local engine"
        if ui.serverUrlLineEdit.text != state.server_url:
            ui.serverUrlLineEdit.text = state.server_url
        if self._drawn.changed("recent_servers", state.recent_servers):
            self._recent_servers.setStringList(list(state.recent_servers))
        paths = {name: getattr(state, key) for name, key in PATH_FIELDS.items()}
        for name, path in edits({name: getattr(ui, name).currentPath for name in paths}, paths).items():
            getattr(ui, name).currentPath = path
        local_info = "\n".join(filter(None, [state.server_info, state.torch_build]))
        ui.serverInfoLabel.text = state.local_mode_note or local_info if not remote else state.server_info
        how, text = self._drawn.grow("install_log", state.install_log)
        if how == APPEND:
            ui.installLogTextEdit.appendPlainText(text)  # the view keeps its scroll position
        elif how == REPLACE:
            ui.installLogTextEdit.setPlainText(text)
        ui.iterationsSpinBox.value = state.iterations or state.iterations_default
        ui.trainNewRadioButton.checked = state.train_new
        ui.fineTuneFromRadioButton.checked = not state.train_new
        ui.predictAuxiliaryCheckBox.checked = state.predict_auxiliary
        if self._drawn.changed("models", state.models):  # an open dropdown stays open during a job
            ui.modelComboBox.clear()
            for model_id, text in state.models:
                ui.modelComboBox.addItem(text, model_id)
            if not state.models:
                ui.modelComboBox.addItem("(no model yet: the first run trains one)", "")
        index = max(0, ui.modelComboBox.findData(state.model_id or ""))
        if ui.modelComboBox.currentIndex != index:
            ui.modelComboBox.setCurrentIndex(index)
        ui.trainingProgressBar.value = int(round(100 * (state.job or {}).get("fraction", 0.0)))
        ui.trainingProgressLabel.text = (state.job or {}).get("text", "")
        self.training.draw(state)
        self.projects.draw(state)
        ui.statusLabel.text = state.status
        for action, button in BUTTONS.items():
            getattr(ui, button).enabled = state.enabled[action]
        ui.reconnectButton.setVisible(state.enabled["reconnect"])
