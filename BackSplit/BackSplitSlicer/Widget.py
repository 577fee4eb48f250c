"""The BackSplit panel: binds the .ui to the parameter node and turns clicks into calls of the Qt-free logic.

Everything slow runs off the UI thread: backend calls go through ``BackgroundCall`` (a thread) and a QTimer
picks up their results; training progress is polled every second; the local engine is a separate process.
Scene work (export, import) stays on the main thread, as MRML requires. Every failure reaches the user
through the status line or ``slicer.util.errorDisplay`` with what to do next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import qt
import slicer
from slicer.util import VTKObservationMixin

from BackSplitLib.errors import BackSplitError
from BackSplitLib.io import image_from_array

from BackSplitSlicer.backends import (ENGINE_MODULE, Backend, BackgroundCall, JobStatus, LocalBackend, ModelInfo, RemoteBackend,
                                      missing_packages, pip_requirements)
from BackSplitSlicer.case import LESION_SEGMENT_NAME, export_case, import_prediction, volume_geometry
from BackSplitSlicer.Parameter import BackSplitLogic, BackSplitParameterNode
from BackSplitSlicer.roles import ROLES, segment_ids, segment_role, set_segment_role

POLL_MS = 1000
PENDING_MS = 100
ROLE_LABELS = {role: role.capitalize() for role in ROLES}


class Widget(qt.QWidget, VTKObservationMixin):
    """The module panel. ``BackSplit.py`` creates one and adds it to the module's layout."""

    def __init__(self, ui_path: str, parent=None):
        qt.QWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = BackSplitLogic()
        self._parameterNode: BackSplitParameterNode | None = None
        self._parameterNodeGuiTag = None
        self.backend: Backend | None = None
        self.job: JobStatus | None = None
        self.models: list[ModelInfo] = []
        self._pending: list[tuple[BackgroundCall, Callable[[Any], None], str]] = []

        layout = qt.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        ui_widget = slicer.util.loadUI(ui_path)
        layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.ui.segmentRolesTable.setHorizontalHeaderLabels(["", "Segment", "Role"])
        self.ui.segmentRolesTable.horizontalHeader().setStretchLastSection(True)

        self._pendingTimer = qt.QTimer(self)
        self._pendingTimer.setInterval(PENDING_MS)
        self._pendingTimer.timeout.connect(self._collectPending)
        self._jobTimer = qt.QTimer(self)
        self._jobTimer.setInterval(POLL_MS)
        self._jobTimer.timeout.connect(self.pollJob)

        self._connectSignals()
        self.initializeParameterNode()

    # ------------------------------------------------------------------ wiring
    def _connectSignals(self) -> None:
        ui = self.ui
        ui.inputSegmentationSelector.currentNodeChanged.connect(self.onSegmentationChanged)
        ui.backendComboBox.currentTextChanged.connect(self.onBackendChanged)
        ui.connectButton.clicked.connect(self.onConnect)
        ui.installDependenciesButton.clicked.connect(self.onInstallDependencies)
        ui.refreshModelsButton.clicked.connect(self.refreshModels)
        ui.addTissueClassesButton.clicked.connect(self.onAddTissueClasses)
        ui.importOrganMapButton.clicked.connect(self.onImportOrganMap)
        ui.segmentEditorButton.clicked.connect(self.onOpenSegmentEditor)
        ui.addCaseButton.clicked.connect(self.onAddCase)
        ui.fineTuneButton.clicked.connect(self.onFineTune)
        ui.cancelButton.clicked.connect(self.onCancel)
        ui.predictButton.clicked.connect(self.onPredict)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        node = self._parameterNode
        if not node.inputVolume:
            node.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not node.inputSegmentation:
            node.inputSegmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        if not node.localDataFolder or str(node.localDataFolder) in ("", "."):
            node.localDataFolder = Path(slicer.app.defaultScenePath) / "BackSplit"
        self.onBackendChanged(node.backend)

    def setParameterNode(self, parameterNode: BackSplitParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
        self.refreshRoles()

    def cleanup(self) -> None:
        """Module closed or reloaded: stop timers, the observers and a local engine."""
        self._jobTimer.stop()
        self._pendingTimer.stop()
        self.removeObservers()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent and self.parent.isVisible():
            self.initializeParameterNode()

    # ------------------------------------------------------------------ status and errors
    def setStatus(self, text: str) -> None:
        self.ui.statusLabel.setText(text)
        slicer.util.showStatusMessage(text, 5000)

    def showError(self, what: str, error: BaseException) -> None:
        """One message for the user, with the hint; the traceback goes to the log for developers."""
        if isinstance(error, BackSplitError):
            text = f"{what}: {error.message}" + (f"\n\nWhat to do: {error.hint}" if error.hint else "")
        else:
            text = f"{what}: {error}"
            logging.exception(error)
        self.setStatus(text.split("\n")[0])
        slicer.util.errorDisplay(text, windowTitle="BackSplit")

    def runInBackground(self, what: str, fn: Callable, *args, onDone: Callable[[Any], None] | None = None,
                        **kwargs) -> None:
        """Run a slow call in a thread; ``onDone(result)`` runs on the UI thread when it returns."""
        self.setStatus(f"{what}...")
        self._pending.append((BackgroundCall(fn, *args, **kwargs), onDone or (lambda result: None), what))
        self._pendingTimer.start()

    def _collectPending(self) -> None:
        still = []
        for call, onDone, what in self._pending:
            if not call.done:
                still.append((call, onDone, what))
                continue
            try:
                result = call.result()
            except BaseException as e:  # shown to the user, not swallowed
                self.showError(f"{what} failed", e)
                continue
            try:
                onDone(result)
            except BaseException as e:
                self.showError(f"{what} failed", e)
        self._pending = still
        if not self._pending:
            self._pendingTimer.stop()

    # ------------------------------------------------------------------ segment roles
    def onSegmentationChanged(self, node) -> None:
        self.refreshRoles()

    def refreshRoles(self) -> None:
        """One row per segment: colour, name, role (combo box that writes the BackSplit.Role tag)."""
        table = self.ui.segmentRolesTable
        table.setRowCount(0)
        node = self._parameterNode.inputSegmentation if self._parameterNode else None
        if node is None:
            return
        segmentation = node.GetSegmentation()
        for row, segment_id in enumerate(segment_ids(node)):
            segment = segmentation.GetSegment(segment_id)
            table.insertRow(row)
            swatch = qt.QTableWidgetItem()
            swatch.setBackground(qt.QColor(*[int(255 * c) for c in segment.GetColor()]))
            table.setItem(row, 0, swatch)
            table.setItem(row, 1, qt.QTableWidgetItem(segment.GetName()))
            combo = qt.QComboBox()
            for role in ROLES:
                combo.addItem(ROLE_LABELS[role], role)
            combo.setCurrentIndex(ROLES.index(segment_role(segment)))
            name = segment.GetName()
            combo.currentIndexChanged.connect(
                lambda index, name=name: set_segment_role(node, name, ROLES[index]))
            table.setCellWidget(row, 2, combo)
        table.resizeColumnToContents(0)

    # ------------------------------------------------------------------ auxiliary structures
    def _inputs(self):
        node = self._parameterNode
        if not node.inputVolume or not node.inputSegmentation:
            raise BackSplitError("choose a volume and a segmentation first", "use the Inputs section")
        return node.inputVolume, node.inputSegmentation

    def onAddTissueClasses(self) -> None:
        from BackSplitSlicer.auxiliary_segments import add_ct_tissue_segments

        try:
            volume, segmentation = self._inputs()
            with slicer.util.WaitCursor():
                names = add_ct_tissue_segments(volume, segmentation)
            self.refreshRoles()
            self.setStatus(f"Added auxiliary segments: {', '.join(names)}.")
        except Exception as e:
            self.showError("Adding CT tissue classes failed", e)

    def onImportOrganMap(self) -> None:
        from BackSplitSlicer.auxiliary_segments import import_organ_segments

        try:
            volume, segmentation = self._inputs()
            with slicer.util.WaitCursor():
                names = import_organ_segments(self.ui.organMapSelector.currentNode(), volume, segmentation,
                                              self.ui.organStructuresLineEdit.text)
            self.refreshRoles()
            self.setStatus(f"Imported auxiliary segments: {', '.join(names)}.")
        except Exception as e:
            self.showError("Importing the organ map failed", e)

    def onOpenSegmentEditor(self) -> None:
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        if self._parameterNode.inputSegmentation:
            editor.setSegmentationNode(self._parameterNode.inputSegmentation)
        if self._parameterNode.inputVolume:
            editor.setSourceVolumeNode(self._parameterNode.inputVolume)

    # ------------------------------------------------------------------ backend
    def onBackendChanged(self, backend: str) -> None:
        remote = backend == "Remote"
        for name in ("serverUrlLabel", "serverUrlLineEdit", "tokenLabel", "tokenLineEdit"):
            getattr(self.ui, name).setVisible(remote)
        for name in ("localDataLabel", "localDataPathLineEdit", "installDependenciesButton"):
            getattr(self.ui, name).setVisible(not remote)
        self.ui.connectButton.text = "Connect" if remote else "Start local engine"
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        self.ui.serverInfoLabel.text = "Not connected."

    def onConnect(self) -> None:
        try:
            node = self._parameterNode
            if self.backend is not None:
                self.backend.close()
            if node.backend == "Remote":
                self.backend = RemoteBackend(node.serverUrl, self.ui.tokenLineEdit.text or None)
                self.runInBackground("Connecting", self.backend.describe, onDone=self._onConnected)
            else:
                backend = LocalBackend(node.localDataFolder)
                self.backend = backend
                self.runInBackground("Checking the local engine's packages", missing_packages, backend.python,
                                     onDone=lambda missing: self._startLocal(backend, missing))
        except Exception as e:
            self.showError("Connecting failed", e)

    def _startLocal(self, backend: LocalBackend, missing: list[str]) -> None:
        if ENGINE_MODULE in missing:
            raise BackSplitError("Slicer's Python cannot import the BackSplit engine (BackSplitLib.server)",
                                 "run Slicer's pip on the BackSplit source folder: "
                                 "slicer.util.pip_install('/path/to/backsplit[server]'), or use a Remote server")
        if missing:
            self.ui.serverInfoLabel.text = f"Missing in Slicer's Python: {', '.join(missing)}."
            raise BackSplitError(f"the local engine needs {', '.join(missing)}",
                                 "click 'Install PyTorch and MONAI', or use a Remote server")
        backend.start()
        self.setStatus("Starting the local engine...")
        self._waitLocal(backend, tries=300)

    def _waitLocal(self, backend: LocalBackend, tries: int) -> None:
        try:
            if backend.is_ready():
                self.runInBackground("Connecting", backend.describe, onDone=self._onConnected)
                return
        except Exception as e:
            self.showError("The local engine did not start", e)
            return
        if tries <= 0:
            self.showError("The local engine did not start", BackSplitError(
                "it did not answer within a minute", f"see {backend.log_path}"))
            return
        qt.QTimer.singleShot(200, lambda: self._waitLocal(backend, tries - 1))

    def _onConnected(self, description: str) -> None:
        self.ui.serverInfoLabel.text = description
        self.setStatus("Connected.")
        self.refreshModels()

    def onInstallDependencies(self) -> None:
        """Install PyTorch (through the PyTorch extension when present) and the engine's other packages."""
        try:
            missing = missing_packages()
            if not missing:
                self.setStatus("The local engine's packages are installed.")
                return
            if not slicer.util.confirmOkCancelDisplay(
                    f"The local engine needs: {', '.join(missing)}.\nInstall them into Slicer's Python now? "
                    "This downloads several hundred MB and may take minutes.", windowTitle="BackSplit"):
                return
            with slicer.util.WaitCursor():
                torch_by_extension = False
                if "torch" in missing:
                    torch_by_extension = self._installTorchWithExtension()
                requirements = pip_requirements(missing, include_torch=not torch_by_extension)
                if requirements:
                    slicer.util.pip_install(requirements)
            self.setStatus("Installed. Click 'Start local engine'.")
        except Exception as e:
            self.showError("Installing the local engine's packages failed", e)

    def _installTorchWithExtension(self) -> bool:
        """PyTorchUtils picks the right CUDA build for this computer; False when the extension is absent."""
        try:
            import PyTorchUtils
        except ImportError:
            return False
        logic = PyTorchUtils.PyTorchUtilsLogic()
        if not logic.torchInstalled():
            logic.installTorch(askConfirmation=False)
        return True

    # ------------------------------------------------------------------ models
    def _requireBackend(self) -> Backend:
        if self.backend is None:
            raise BackSplitError("not connected to a backend", "click Connect (Remote) or Start local engine (Local)")
        return self.backend

    def refreshModels(self) -> None:
        try:
            backend = self._requireBackend()
        except Exception as e:
            self.showError("Listing models failed", e)
            return
        self.runInBackground("Listing models", backend.list_models, onDone=self._onModels)

    def _onModels(self, models: list[ModelInfo]) -> None:
        self.models = models
        combo = self.ui.modelComboBox
        combo.clear()
        for model in models:
            combo.addItem(model.describe(), model.model_id)
        if not models:
            combo.addItem("(no model yet: the first run trains one)", "")
        self.setStatus(f"{len(models)} model(s) on the backend.")

    def _selectedModel(self) -> ModelInfo | None:
        model_id = self.ui.modelComboBox.currentData
        return next((m for m in self.models if m.model_id == model_id), None)

    # ------------------------------------------------------------------ actions
    def onAddCase(self) -> None:
        try:
            backend = self._requireBackend()
            volume, segmentation = self._inputs()
            model = self._selectedModel()
            with slicer.util.WaitCursor():
                case = export_case(volume, segmentation, schema=model.schema if model else None)
            classes = ", ".join(case.schema.class_names[1:])
            self.runInBackground(f"Uploading case '{case.name}' ({classes})", backend.add_case, case,
                                 onDone=lambda case_id: self.setStatus(f"Case added ({case_id})."))
        except Exception as e:
            self.showError("Adding the case failed", e)

    def onFineTune(self) -> None:
        try:
            backend = self._requireBackend()
            model = self._selectedModel()
            train_new = self.ui.trainNewRadioButton.checked or model is None
            self.runInBackground("Starting training", backend.fine_tune,
                                 base_model=None if model is None else model.model_id,
                                 iterations=self._parameterNode.iterations, train_new=train_new,
                                 onDone=self._onJobStarted)
        except Exception as e:
            self.showError("Starting training failed", e)

    def _onJobStarted(self, job: JobStatus) -> None:
        self.job = job
        self.ui.cancelButton.enabled = True
        self.ui.fineTuneButton.enabled = False
        self._showJob(job)
        self._jobTimer.start()

    def pollJob(self) -> None:
        if self.job is None or self.backend is None:
            self._jobTimer.stop()
            return
        if any(what == "Reading progress" for _, _, what in self._pending):
            return  # the previous poll is still on its way
        self._pending.append((BackgroundCall(self.backend.status, self.job.job_id), self._onJobStatus,
                              "Reading progress"))
        self._pendingTimer.start()

    def _onJobStatus(self, job: JobStatus) -> None:
        self.job = job
        self._showJob(job)
        if job.finished:
            self._jobTimer.stop()
            self.ui.cancelButton.enabled = False
            self.ui.fineTuneButton.enabled = True
            if job.state == "failed":
                self.showError("Training failed", BackSplitError(job.error or "no reason given",
                                                                 "read the server log, fix, and start again"))
            else:
                self.refreshModels()

    def _showJob(self, job: JobStatus) -> None:
        self.ui.trainingProgressBar.value = int(round(100 * job.fraction))
        self.ui.trainingProgressLabel.text = job.describe()
        self.setStatus(job.describe())

    def onCancel(self) -> None:
        if self.job is None or self.backend is None:
            return
        self.runInBackground("Cancelling", self.backend.cancel, self.job.job_id, onDone=self._onJobStatus)

    def onPredict(self) -> None:
        try:
            backend = self._requireBackend()
            node = self._parameterNode
            if not node.inputVolume:
                raise BackSplitError("choose a volume first", "use the Inputs section")
            volume = node.inputVolume
            image = image_from_array(np.array(slicer.util.arrayFromVolume(volume), dtype=np.float32),
                                     volume_geometry(volume))
            model = self._selectedModel()
            self.runInBackground("Predicting", backend.predict, image,
                                 model=model.model_id if model else "current", classes=node.predictAuxiliary,
                                 onDone=lambda result: self._onPrediction(volume, result))
        except Exception as e:
            self.showError("Prediction failed", e)

    def _onPrediction(self, volume, result) -> None:
        node = self._parameterNode
        auxiliary = node.predictAuxiliary and result.classes is not None
        created = import_prediction(result.classes if auxiliary else result.mask, volume, node.outputSegmentation,
                                    schema=result.schema if auxiliary else None, auxiliary=auxiliary)
        if not node.outputSegmentation:
            node.outputSegmentation = slicer.mrmlScene.GetFirstNodeByName("BackSplit prediction")
        slicer.util.setSliceViewerLayers(background=volume, fit=True)
        self.setStatus(f"Prediction done: segment '{LESION_SEGMENT_NAME}'"
                       + (f" and {len(created) - 1} hidden auxiliary segment(s)." if auxiliary else "."))
