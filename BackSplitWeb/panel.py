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
from BackSplitLib.vocabulary import AUXILIARY_EVIDENCE
from BackSplitWeb.uploads import file_stem

from BackSplitSlicer.case import LESION_SEGMENT_NAME, PREDICTION_NODE_NAME, prediction_mask, volume_geometry
from BackSplitSlicer.panel import SETTINGS, TICK_MS, MemorySettings, PanelController
from BackSplitSlicer.panel_state import CASE_MODES as CASE_MODE_CHOICES
from BackSplitSlicer.roles import ROLES, segment_ids, segment_role

ROLE_ITEMS = [{"title": role.capitalize(), "value": role} for role in ROLES]
# CT window/level presets (window, level in HU), Slicer's Volumes module values; mediastinum and liver from
# common radiology practice.
WINDOW_PRESETS = {"Lung": (1400, -500), "Mediastinum": (350, 50), "Abdomen": (350, 40), "Liver": (150, 30),
                  "Bone": (1000, 400), "Brain": (100, 50)}
# The case mode's choices in the page, from the one list both faces offer.
CASE_MODES = {key: value for key, value, _ in CASE_MODE_CHOICES}
CASE_MODE_ITEMS = [{"title": words, "value": key} for key, _, words in CASE_MODE_CHOICES]


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
        self.state.bs_case_mode_items = CASE_MODE_ITEMS
        self.state.bs_unsaved = False
        self._unsaved_source = None
        self._paint_one_slice()
        ctrl_trigger = app.server.trigger
        ctrl_trigger("bs_action")(self.action)
        ctrl_trigger("bs_set_role")(self.controller.set_role)
        ctrl_trigger("bs_set_iterations")(lambda n: self.controller.set_training(iterations=_count(n)))
        ctrl_trigger("bs_set_case_mode")(lambda mode: self.controller.set_case_mode(CASE_MODES.get(mode)))
        ctrl_trigger("bs_fill_between_slices")(self.fill_between_slices)
        ctrl_trigger("bs_dismiss_message")(self.controller.dismiss_message)
        ctrl_trigger("bs_window_preset")(self.window_preset)
        ctrl_trigger("bs_select_cases")(lambda ids: self.controller.select_cases(list(ids or []) or None))
        self.state.bs_window_presets = [{"title": f"{name} (W {w} / L {level})", "value": name}
                                        for name, (w, level) in WINDOW_PRESETS.items()]
        ctrl_trigger("bs_set_train_new")(lambda on: self.controller.set_training(train_new=bool(on)))
        ctrl_trigger("bs_set_predict_auxiliary")(lambda on: self.controller.set_training(predict_auxiliary=bool(on)))
        ctrl_trigger("bs_select_model")(self.controller.select_model)
        ctrl_trigger("bs_set_organ_map")(self.controller.set_organ_map)
        self.state.client_only("bs_new_project_name")  # typed in the page, sent with the click
        ctrl_trigger("bs_choose_project")(self.controller.choose_project)
        ctrl_trigger("bs_create_project")(lambda name: self.controller.create_project(str(name or "")))
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

    def _paint_one_slice(self) -> None:
        """The brush paints on the slice under it, as Slicer's does (trame-slicer's page starts with a sphere
        brush, which painted eleven 5 mm slices of a chest CT at once)."""
        from trame_slicer.app.logic.segmentation.brush_effect_logic import BrushEffectLogic

        for logic in getattr(self.app.segment_editor_logic, "_effect_logic", []):
            if isinstance(logic, BrushEffectLogic):
                logic.data.use_sphere_brush = False

    # -------------------------------------------------------------------------- page -> controller
    def action(self, name: str) -> None:
        """A button of the panel: the controller's handler of the same name (only those it offers)."""
        c = self.controller
        handlers = {"add_case": c.add_case, "fine_tune": c.fine_tune, "cancel": c.cancel, "predict": c.predict,
                    "reconnect": c.reconnect, "refresh_models": c.refresh_models,
                    "add_tissue_classes": c.add_tissue_classes, "import_organ_map": c.import_organ_map,
                    "promote": c.promote, "show_auxiliary": c.show_auxiliary,
                    "accept_prediction": c.accept_prediction, "fill_between_slices": self.fill_between_slices}
        if name in handlers:
            handlers[name]()
        if name == "add_case" and self.controller.state().busy:
            self._set_unsaved(False)  # the case is on its way to the server

    def window_preset(self, name: str) -> None:
        """Show the volume with a CT window (W/L in HU) instead of the automatic one."""
        volume = self.app.volume_node
        display = volume.GetDisplayNode() if volume is not None else None
        if display is None or name not in WINDOW_PRESETS:
            return
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(*WINDOW_PRESETS[name])
        self.state.bs_window_preset = name
        self.state.flush()

    def fill_between_slices(self) -> None:
        """Fill between slices of the segment selected in the editor (the Target segment when none is)."""
        editor = self.app.slicer_app.segmentation_editor
        self.controller.fill_between_slices(editor.get_active_segment_id() or None)

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
        self._watch_unsaved(segmentation)

    # -------------------------------------------------------------------------- unsaved work
    def _watch_unsaved(self, segmentation) -> None:
        """Paint since the last open, download or Add case is unsaved work: the page asks before replacing it
        (``bs_unsaved``). Slicer asks on its own when a scene with changes is closed."""
        import slicer

        self._set_unsaved(False)
        if segmentation is not None and segmentation is not self._unsaved_source:
            self._unsaved_source = segmentation
            for event in (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved,
                          slicer.vtkSegmentation.SegmentModified):
                segmentation.GetSegmentation().AddObserver(event, lambda *_: self._set_unsaved(True))

    def _set_unsaved(self, unsaved: bool) -> None:
        if self.state.bs_unsaved != unsaved:
            self.state.bs_unsaved = unsaved
            self.state.flush()

    def _organ_map_items(self) -> list[dict]:
        scene = self.app.slicer_app.scene
        edited = self.app.segmentation_node()
        items = []
        for class_name in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"):
            for node in scene.GetNodesByClass(class_name):
                if node is not edited and not node.GetName().startswith(PREDICTION_NODE_NAME):
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
            self._set_unsaved(False)
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
        display = volume.GetDisplayNode()
        if display is not None:
            facts["volume"]["window_level"] = [display.GetWindow(), display.GetLevel()]
        node = self.app.segmentation_node()
        if node is not None:
            segmentation = node.GetSegmentation()
            for segment_id in segment_ids(node):
                segment = segmentation.GetSegment(segment_id)
                facts["segments"].append({"id": segment_id, "name": segment.GetName(), "role": segment_role(segment),
                                          "voxels": _painted_voxels(segment),
                                          "color": [round(255 * c) for c in segment.GetColor()]})
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
            v3.VSelect(label="Window (CT)", items=("bs_window_presets",), model_value=("bs_window_preset", None),
                       density="compact", hide_details=True, id="bs-window",
                       update_modelValue="trigger('bs_window_preset', [$event])")
            html.Div(f"{{{{ {p}.server_info }}}}", classes="text-caption", id="bs-server-info")
            _project_ui(p)
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
            html.Div(AUXILIARY_EVIDENCE, classes="text-caption", id="bs-auxiliary-evidence")
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

            _button("Fill between slices", "fill_between_slices", p)

            html.Div("Training", classes="text-subtitle-2 mt-2")
            v3.VSelect(label="Add case trains on", items=("bs_case_mode_items",), density="compact",
                       hide_details=True, id="bs-case-mode",
                       model_value=(f"{p}.annotated_slices_only === null ? 'auto' : "
                                    f"({p}.annotated_slices_only ? 'on' : 'off')",),
                       update_modelValue="trigger('bs_set_case_mode', [$event])")
            v3.VTextField(label=(f"'Iterations (default ' + {p}.iterations_default + ')'",), type="number",
                          model_value=(f"{p}.iterations || ''",), placeholder=(f"String({p}.iterations_default)",),
                          density="compact", hide_details=True, id="bs-iterations",
                          update_modelValue="trigger('bs_set_iterations', [Number($event || 0)])")
            v3.VSelect(label="Train on (empty: every case on the server)", multiple=True, chips=True,
                       closable_chips=True, items=(f"{p}.cases.map(c => ({{title: c[1], value: c[0]}}))",),
                       model_value=(f"{p}.case_ids || []",), density="compact", hide_details=True, id="bs-cases-train",
                       update_modelValue="trigger('bs_select_cases', [$event])")
            v3.VCheckbox(label="Train a new model", model_value=(f"{p}.train_new",), density="compact",
                         hide_details=True, update_modelValue="trigger('bs_set_train_new', [$event])")
            with html.Div(classes="d-flex ga-2"):
                _button("Add case", "add_case", p)
                _button("Fine-tune", "fine_tune", p)
                _button("Cancel", "cancel", p)
            v3.VProgressLinear(model_value=(f"{p}.job ? 100 * {p}.job.fraction : 0",), height=8,
                               id="bs-progress")
            html.Div(f"{{{{ {p}.job ? {p}.job.text : '' }}}}", classes="text-caption", id="bs-job-text")
            with html.Div(v_if=(f"{p}.curve.length > 1",), id="bs-curve"):
                html.Div("Loss", classes="text-caption")
                v3.VSparkline(model_value=(f"{p}.curve.filter(c => c[1] !== null).map(c => c[1])",), height=40,
                              line_width=2, color="primary", auto_draw=False)
                html.Div("Validation Dice", classes="text-caption",
                         v_if=(f"{p}.curve.filter(c => c[2] !== null).length > 1",))
                v3.VSparkline(model_value=(f"{p}.curve.filter(c => c[2] !== null).map(c => c[2])",), height=40,
                              line_width=2, color="success", auto_draw=False, min=0, max=1,
                              v_if=(f"{p}.curve.filter(c => c[2] !== null).length > 1",))
            with v3.VAlert(v_if=(f"{p}.unpromoted",), type="warning", density="compact", variant="tonal",
                           id="bs-unpromoted"):
                html.Div(f"Model {{{{ {p}.unpromoted.model_id }}}} kept but not used: {{{{ {p}.unpromoted.reason }}}}."
                         " Train longer, or use it anyway.")
                _button("Use this model", "promote", p)

            html.Div("Prediction", classes="text-subtitle-2 mt-2")
            v3.VCheckbox(label="Also predict auxiliary structures (hidden)", model_value=(f"{p}.predict_auxiliary",),
                         density="compact", hide_details=True,
                         update_modelValue="trigger('bs_set_predict_auxiliary', [$event])")
            _button("Predict", "predict", p)
            html.Div(f"{{{{ {p}.prediction ? {p}.prediction.text + ' (model ' + ({p}.prediction.model_id || "
                     f"'current') + ')' : '' }}}}", classes="text-body-2", id="bs-prediction-text")
            html.Div(f"What to do: {{{{ {p}.prediction.hint }}}}", v_if=(f"{p}.prediction && {p}.prediction.hint",),
                     classes="text-body-2", id="bs-prediction-hint")
            with html.Div(classes="d-flex ga-2"):
                v3.VBtn(f"{{{{ {p}.auxiliary_shown ? 'Hide' : 'Show' }}}} {{{{ {p}.auxiliary_segments }}}} auxiliary",
                        size="small", variant="tonal", id="bs-show-auxiliary", v_if=(f"{p}.auxiliary_segments",),
                        disabled=(f"!{p}.enabled.show_auxiliary",), click="trigger('bs_action', ['show_auxiliary'])")
                _button("Use as label", "accept_prediction", p)

            html.Div("Save", classes="text-subtitle-2 mt-2")
            with html.Div(classes="d-flex ga-2"):
                v3.VBtn("Segmentation (.seg.nrrd)", size="small", variant="tonal", id="bs-download-segmentation",
                        href=("'/backsplit/download/segmentation?ticket=' + bs_ticket",), disabled=(f"!{p}.segmentation_id",),
                        raw_attrs=["download"])
                v3.VBtn("Prediction (NIfTI)", size="small", variant="tonal", id="bs-download-prediction",
                        href=("'/backsplit/download/prediction?ticket=' + bs_ticket",), disabled=(f"!{p}.output_id",),
                        raw_attrs=["download"])

            html.Div(f"{{{{ {p}.status }}}}", classes="text-caption mt-2", id="bs-status")
            with v3.VAlert(v_if=(f"{p}.message && {p}.message.level === 'error'",), type="error", density="compact",
                           variant="tonal", closable=True, id="bs-message",
                           click_close="trigger('bs_dismiss_message')"):
                html.Div(f"{{{{ {p}.message.text }}}}", id="bs-message-text")
                html.Div(f"What to do: {{{{ {p}.message.hint }}}}", v_if=(f"{p}.message.hint",),
                         id="bs-message-hint")


def _project_ui(p: str) -> None:
    """Who is signed in, the project picker (hidden with the reason when the server has no projects) and a new
    project from this segmentation's roles (issue 24)."""
    html.Div(f"{{{{ {p}.identity }}}}", v_if=(f"{p}.identity",), classes="text-caption", id="bs-identity")
    with html.Div(v_if=(f"{p}.projects.length",), id="bs-project"):  # Vuetify gives an id to the inner <input>
        v3.VSelect(label="Project", items=(f"{p}.projects.map(r => ({{title: r[1], value: r[0]}}))",),
                   model_value=(f"{p}.project",), density="compact", hide_details=True,
                   disabled=(f"!{p}.enabled.choose_project",), update_modelValue="trigger('bs_choose_project', [$event])")
    html.Div(f"{{{{ {p}.projects_note }}}}", v_if=(f"{p}.projects_note",), classes="text-caption",
             id="bs-projects-note")
    with html.Div(classes="d-flex ga-2 align-center", v_if=(f"{p}.projects.length",)):
        v3.VTextField(v_model=("bs_new_project_name", ""), label="New project name", placeholder="liver-mets",
                      density="compact", hide_details=True, id="bs-new-project-name")
        v3.VBtn("New from roles", size="small", variant="tonal", id="bs-create-project",
                disabled=(f"!{p}.enabled.create_project",),
                click="trigger('bs_create_project', [bs_new_project_name])")


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


def _count(value) -> int:
    """An iteration count from the page: empty or not a number is 0 (the recipe's default)."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _button(label: str, action: str, p: str) -> None:
    v3.VBtn(label, size="small", variant="tonal", id=f"bs-{action.replace('_', '-')}",
            disabled=(f"!{p}.enabled.{action}",), click=f"trigger('bs_action', ['{action}'])")
