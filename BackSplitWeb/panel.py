"""The BackSplit panel in the browser: a binding of the Slicer module's Qt-free ``PanelController``.

The controller (``BackSplitSlicer.panel``) owns the behaviour: roles table rows, the backend and its job,
progress polling, which actions are enabled, messages. This binding only (1) calls its handlers from page
events (trame triggers), (2) calls :meth:`PanelController.tick` from a timer on the app's event loop, and
(3) copies :meth:`PanelController.state` into trame's state as plain data whenever the controller says it
changed. The web app is Remote-only: it talks to a BackSplit server and never trains in its own process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from BackSplitLib.errors import BackSplitError
from BackSplitLib.io import image_from_array, write_image
from BackSplitWeb.uploads import file_stem

from BackSplitSlicer.case import LESION_SEGMENT_NAME, PREDICTION_NODE_NAME, prediction_mask, volume_geometry
from BackSplitSlicer.panel import SETTINGS, TICK_MS, MemorySettings, PanelController
from BackSplitSlicer.roles import ROLES, segment_ids, segment_role

ROLE_ITEMS = [{"title": role.capitalize(), "value": role} for role in ROLES]


class PanelBinding:
    """Page <-> controller. One per app; the controller lives as long as the app's scene."""

    def __init__(self, app):
        self.app = app
        self.state = app.server.state
        self.controller = PanelController(
            app.slicer_app.scene,
            MemorySettings({SETTINGS["backend"]: "Remote", SETTINGS["server_url"]: app.settings.server_url}),
            ask=lambda question: False,  # nothing in the web app asks (no local install)
        )
        self.controller.observe(self._publish)
        self._ticker: asyncio.Task | None = None
        self._watched_output: str | None = None
        self._jump_pending = False
        self.state.bs_panel = self.controller.state().as_dict()
        self.state.bs_role_items = ROLE_ITEMS
        ctrl_trigger = app.server.trigger
        ctrl_trigger("bs_action")(self.action)
        ctrl_trigger("bs_set_role")(self.controller.set_role)
        ctrl_trigger("bs_set_iterations")(lambda n: self.controller.set_training(iterations=int(n or 1)))
        ctrl_trigger("bs_set_train_new")(lambda on: self.controller.set_training(train_new=bool(on)))
        ctrl_trigger("bs_set_predict_auxiliary")(lambda on: self.controller.set_training(predict_auxiliary=bool(on)))
        ctrl_trigger("bs_select_model")(self.controller.select_model)
        ctrl_trigger("bs_set_organ_map")(self.controller.set_organ_map)
        app.server.controller.on_server_ready.add(self._start_ticking)

    # -------------------------------------------------------------------------- controller -> page
    def _publish(self, panel_state) -> None:
        if panel_state.output_id and panel_state.output_id != self._watched_output:
            self._watch_prediction(panel_state.output_id)
        self.state.bs_panel = panel_state.as_dict()
        self.state.bs_organ_maps = self._organ_map_items()
        self.state.flush()

    def _start_ticking(self, **_) -> None:
        if self._ticker is not None and not self._ticker.done():
            return  # one ticker per app, however often "server ready" is announced

        async def ticking():
            while True:
                self.controller.tick()
                if self._jump_pending:
                    self._jump_pending = False
                    self._show_lesion()
                await asyncio.sleep(TICK_MS / 1000)

        self._ticker = asyncio.get_event_loop().create_task(ticking())

    def _watch_prediction(self, output_id: str) -> None:
        """Show each new prediction: the slice views move to a lesion voxel (the first one arrives with the
        output node; later ones modify its segments)."""
        import slicer

        self._watched_output = output_id
        node = self.app.slicer_app.scene.GetNodeByID(output_id)
        if node is None:
            return
        node.GetSegmentation().AddObserver(slicer.vtkSegmentation.SegmentModified, self._on_prediction_modified)
        self._jump_pending = True

    def _on_prediction_modified(self, *_) -> None:
        self._jump_pending = True

    def _show_lesion(self) -> None:
        """Move every slice view to the predicted lesion voxel nearest the lesion's centre."""
        import numpy as np
        import vtk

        node, volume = self._prediction_node(), self.app.volume_node
        if node is None or volume is None:
            return
        try:
            mask = prediction_mask(node, LESION_SEGMENT_NAME, volume)
        except BackSplitError:
            return
        voxels = np.argwhere(mask)
        if not len(voxels):
            return
        k, j, i = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
        ijk_to_ras = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(ijk_to_ras)
        r, a, s_, _ = ijk_to_ras.MultiplyPoint((float(i), float(j), float(k), 1.0))
        for slice_node in self.app.slicer_app.scene.GetNodesByClass("vtkMRMLSliceNode"):
            slice_node.JumpSliceByOffsetting(r, a, s_)

    # -------------------------------------------------------------------------- page -> controller
    def action(self, name: str) -> None:
        """A button of the panel: the controller's handler of the same name (only those it offers)."""
        handlers = {"add_case": self.controller.add_case, "fine_tune": self.controller.fine_tune,
                    "cancel": self.controller.cancel, "predict": self.controller.predict,
                    "reconnect": self.controller.reconnect, "refresh_models": self.controller.refresh_models,
                    "add_tissue_classes": self.controller.add_tissue_classes,
                    "import_organ_map": self.controller.import_organ_map}
        if name in handlers:
            handlers[name]()

    def on_login(self, server_url: str, token: str) -> None:
        self.controller.set_server_url(server_url)
        self.controller.set_token(token)
        self.controller.connect()

    def on_logout(self) -> None:
        self.controller.set_token("")
        self.controller.stop()

    def on_scene_closed(self) -> None:
        self._watched_output = None  # the controller forgets the scene's nodes itself (its scene observer)

    def on_volume_changed(self, volume_node) -> None:
        self.controller.set_volume(volume_node.GetID())
        segmentation = self.app.segmentation_node()
        self.controller.set_segmentation(segmentation.GetID() if segmentation is not None else None)

    def _organ_map_items(self) -> list[dict]:
        scene = self.app.slicer_app.scene
        edited = self.app.segmentation_node()
        items = []
        for class_name in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"):
            for node in scene.GetNodesByClass(class_name):
                if node is not edited and node.GetName() != PREDICTION_NODE_NAME:
                    items.append({"title": node.GetName(), "value": node.GetID()})
        return items

    # ------------------------------------------------------------------------------ files and facts
    def export(self, what: str, folder: Path) -> Path:
        """``segmentation``: the edited segmentation as .seg.nrrd; ``prediction``: the lesion as NIfTI on
        the volume's grid."""
        volume = self.app.volume_node
        if volume is None:
            raise BackSplitError("open a volume first")
        if what == "segmentation":
            import slicer

            node = self.app.segmentation_node()
            if node is None:
                raise BackSplitError("there is no segmentation yet")
            path = folder / f"{file_stem(volume.GetName())}.seg.nrrd"
            storage = slicer.vtkMRMLSegmentationStorageNode()
            storage.SetFileName(str(path))
            if not storage.WriteData(node):
                raise BackSplitError("the segmentation could not be written")
            return path
        if what == "prediction":
            node = self._prediction_node()
            if node is None:
                raise BackSplitError("there is no prediction yet", "click Predict first")
            mask = prediction_mask(node, LESION_SEGMENT_NAME, volume).astype("uint8")
            path = folder / f"{file_stem(volume.GetName())}_lesion.nii.gz"
            write_image(image_from_array(mask, volume_geometry(volume)), path)
            return path
        raise BackSplitError(f"unknown download {what!r}", "use segmentation or prediction")

    def _prediction_node(self):
        output_id = self.controller.state().output_id
        return self.app.slicer_app.scene.GetNodeByID(output_id) if output_id else None

    def describe(self) -> dict:
        """The scene as plain data: the volume's grid, segments with roles and voxel counts, and the lesion
        segment's own labelmap grid (cheap enough to poll: nothing is resampled)."""
        volume = self.app.volume_node
        facts: dict = {"volume": None, "segments": [], "prediction": None,
                       "panel": self.controller.state().as_dict()}
        if volume is None:
            return facts
        geometry = volume_geometry(volume)
        facts["volume"] = {"name": volume.GetName(), "size": list(geometry.size), "spacing": list(geometry.spacing),
                           "origin": list(geometry.origin), "direction": list(geometry.direction),
                           "ijk_to_ras": _matrix(volume.GetIJKToRASMatrix)}
        node = self.app.segmentation_node()
        if node is not None:
            segmentation = node.GetSegmentation()
            for segment_id in segment_ids(node):
                segment = segmentation.GetSegment(segment_id)
                facts["segments"].append({"id": segment_id, "name": segment.GetName(), "role": segment_role(segment),
                                          "voxels": _painted_voxels(segment)})
        prediction = self._prediction_node()
        segment_id = prediction.GetSegmentation().GetSegmentIdBySegmentName(LESION_SEGMENT_NAME) if prediction else ""
        if segment_id:
            segment = prediction.GetSegmentation().GetSegment(segment_id)
            labelmap = segment.GetRepresentation("Binary labelmap")
            display = prediction.GetDisplayNode()
            facts["prediction"] = {
                "node": prediction.GetName(), "segment": LESION_SEGMENT_NAME, "voxels": _painted_voxels(segment),
                "ijk_to_ras": _matrix(labelmap.GetImageToWorldMatrix), "extent": list(labelmap.GetExtent()),
                "color": [round(255 * c) for c in segment.GetColor()],
                "visible": bool(display and display.GetVisibility() and display.GetSegmentVisibility(segment_id)),
            }
        return facts

    # ------------------------------------------------------------------------------------ the page
    def build_ui(self) -> None:
        p = "bs_panel"
        with html.Div(classes="pa-3 d-flex flex-column ga-2", id="bs-panel"):
            html.Div("BackSplit", classes="text-h6")
            html.Div(f"{{{{ {p}.server_info }}}}", classes="text-caption", id="bs-server-info")
            with html.Div(classes="d-flex ga-2"):
                _button("Reconnect", "reconnect", p)
                _button("Refresh models", "refresh_models", p)
            v3.VSelect(label="Model", items=(f"{p}.models.map(m => ({{title: m[1], value: m[0]}}))",),
                       model_value=(f"{p}.model_id",), density="compact", hide_details=True,
                       update_modelValue="trigger('bs_select_model', [$event])", id="bs-model")

            html.Div("Segment roles", classes="text-subtitle-2 mt-2")
            with html.Div(v_for=f"row in {p}.roles", key="row.segment_id", classes="d-flex align-center ga-2",
                          raw_attrs=[":id=\"'bs-role-row-' + row.name\""]):
                html.Span(style=("{width: '14px', height: '14px', display: 'inline-block', "
                                 "background: `rgb(${row.color[0]},${row.color[1]},${row.color[2]})`}",))
                html.Span("{{ row.name }}", style="flex: 1;")
                v3.VSelect(items=("bs_role_items",), model_value=("row.role",), density="compact",
                           hide_details=True, style="max-width: 150px;",
                           update_modelValue="trigger('bs_set_role', [row.segment_id, $event])",
                           raw_attrs=[":id=\"'bs-role-' + row.name\""])
            with html.Div(classes="d-flex ga-2 flex-wrap"):
                _button("Add CT tissue classes", "add_tissue_classes", p)
            with html.Div(classes="d-flex ga-2 align-center"):
                v3.VSelect(label="Organ map", items=("bs_organ_maps", []), model_value=(f"{p}.organ_map_id",),
                           density="compact", hide_details=True,
                           update_modelValue="trigger('bs_set_organ_map', [$event])")
                _button("Import organ map", "import_organ_map", p)
            v3.VTextField(label="Structures (names, groups or globs; empty: all)", density="compact",
                          hide_details=True, model_value=(f"{p}.organ_structures",),
                          update_modelValue=f"trigger('bs_set_organ_map', [{p}.organ_map_id, $event])")

            html.Div("Training", classes="text-subtitle-2 mt-2")
            v3.VTextField(label="Iterations", type="number", model_value=(f"{p}.iterations",), density="compact",
                          hide_details=True, id="bs-iterations",
                          update_modelValue="trigger('bs_set_iterations', [Number($event)])")
            v3.VCheckbox(label="Train a new model", model_value=(f"{p}.train_new",), density="compact",
                         hide_details=True, update_modelValue="trigger('bs_set_train_new', [$event])")
            with html.Div(classes="d-flex ga-2"):
                _button("Add case", "add_case", p)
                _button("Fine-tune", "fine_tune", p)
                _button("Cancel", "cancel", p)
            v3.VProgressLinear(model_value=(f"{p}.job ? 100 * {p}.job.fraction : 0",), height=8,
                               id="bs-progress")
            html.Div(f"{{{{ {p}.job ? {p}.job.text : '' }}}}", classes="text-caption", id="bs-job-text")

            html.Div("Prediction", classes="text-subtitle-2 mt-2")
            v3.VCheckbox(label="Also predict auxiliary structures (hidden)", model_value=(f"{p}.predict_auxiliary",),
                         density="compact", hide_details=True,
                         update_modelValue="trigger('bs_set_predict_auxiliary', [$event])")
            _button("Predict", "predict", p)

            html.Div("Save", classes="text-subtitle-2 mt-2")
            with html.Div(classes="d-flex ga-2"):
                v3.VBtn("Segmentation (.seg.nrrd)", size="small", variant="tonal", id="bs-download-segmentation",
                        href=("'/backsplit/download/segmentation?ticket=' + bs_ticket",), disabled=(f"!{p}.segmentation_id",),
                        raw_attrs=["download"])
                v3.VBtn("Prediction (NIfTI)", size="small", variant="tonal", id="bs-download-prediction",
                        href=("'/backsplit/download/prediction?ticket=' + bs_ticket",), disabled=(f"!{p}.output_id",),
                        raw_attrs=["download"])

            html.Div(f"{{{{ {p}.status }}}}", classes="text-caption mt-2", id="bs-status")
            html.Div(f"{{{{ {p}.message && {p}.message.level === 'error' ? {p}.message.text : '' }}}}",
                     classes="text-caption text-red", id="bs-message")


def _matrix(getter) -> list[float]:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    getter(matrix)
    return [matrix.GetElement(r, c) for r in range(4) for c in range(4)]


def _painted_voxels(segment) -> int:
    """Voxels of a segment, counted in its own binary labelmap (no resampling: cheap enough to poll)."""
    import numpy as np
    from vtk.util import numpy_support

    labelmap = segment.GetRepresentation("Binary labelmap")
    scalars = labelmap.GetPointData().GetScalars() if labelmap is not None else None
    if scalars is None:
        return 0
    return int(np.count_nonzero(numpy_support.vtk_to_numpy(scalars) == segment.GetLabelValue()))


def _button(label: str, action: str, p: str) -> None:
    v3.VBtn(label, size="small", variant="tonal", id=f"bs-{action.replace('_', '-')}",
            disabled=(f"!{p}.enabled.{action}",), click=f"trigger('bs_action', ['{action}'])")
