"""The panel controller's handlers that work on the scene: auxiliary structures, fill between slices, and
predictions (asked of the backend, measured, shown, their auxiliary segments shown on demand, accepted as a
label to correct). A mixin of :class:`~BackSplitSlicer.panel.PanelController`, which owns the state, the
messages and the background tasks these handlers use; no Qt here.
"""

from __future__ import annotations

from collections.abc import Callable

from BackSplitLib.errors import BackSplitError

from BackSplitSlicer.panel_state import Work


class SceneActions:
    """Scene handlers of the panel controller (see the module docstring)."""

    # ------------------------------------------------------------------ scene work (no backend)
    def _scene_work(self, action: str, failure: str, work: Callable[[], str]) -> None:
        """Run ``work`` (MRML, on this thread); its text is the status line, its error one message."""
        try:
            self._succeeded(action, work())
        except Exception as e:  # noqa: BLE001 (shown to the user)
            self._error(failure, e, action=action)
        self._publish()

    def add_tissue_classes(self) -> None:
        from BackSplitSlicer.auxiliary_segments import add_ct_tissue_segments

        self._scene_work("add_tissue_classes", "Adding CT tissue classes failed",
                         lambda: f"Added auxiliary segments: {', '.join(add_ct_tissue_segments(*self._inputs()))}.")

    def import_organ_map(self) -> None:
        from BackSplitSlicer.auxiliary_segments import import_organ_segments

        def work() -> str:
            volume, segmentation = self._inputs()
            organ_map = self._node(self._state.organ_map_id)
            if organ_map is None:
                raise BackSplitError("choose an organ map first", "pick a labelmap or segmentation in 'Organ map'")
            names = import_organ_segments(organ_map, volume, segmentation, self._state.organ_structures)
            return f"Imported auxiliary segments: {', '.join(names)}."

        self._scene_work("import_organ_map", "Importing the organ map failed", work)

    def accept_prediction(self) -> None:
        """Correct and send back: the predicted lesion becomes an editable Target segment of the edited
        segmentation (replacing an earlier accepted one); correct it with the editor, then Add case."""
        from BackSplitSlicer.prediction import accept_prediction

        def work() -> str:
            volume, segmentation = self._inputs()
            name = accept_prediction(self._node(self._state.output_id), segmentation, volume)
            return f"The prediction is now the Target segment '{name}': correct it, then click Add case."

        self._scene_work("accept_prediction", "Using the prediction as a label failed", work)

    def fill_between_slices(self, segment_id: str | None = None) -> None:
        """Fill the slices between painted ones (ITK's morphological contour interpolation, the algorithm of
        Slicer's Fill between slices effect) in ``segment_id``, or in the Target segment when none is given."""
        from BackSplitSlicer.interpolation import fill_between_slices

        def work() -> str:
            volume, segmentation = self._inputs()
            name, before, after = fill_between_slices(segmentation, volume, segment_id)
            return f"Filled between slices of '{name}': painted on {before} slice(s), now {after}."

        self._scene_work("fill_between_slices", "Filling between slices failed", work)

    # ------------------------------------------------------------------ prediction
    def predict(self) -> None:
        from BackSplitSlicer.prediction import predict_and_measure, volume_image

        try:
            backend = self._require_backend()
            volume = self._node(self._state.volume_id)
            if volume is None:
                raise BackSplitError("choose a volume first", "use the Inputs section")
            model = self._selected_model()
            current = next((m.model_id for m in self._models if m.current), None)
            used = model.model_id if model else current
            self._run(Work.predict, predict_and_measure, backend, volume_image(volume),
                      model=model.model_id if model else "current", classes=self._state.predict_auxiliary,
                      on_done=lambda answer: self._on_prediction(volume.GetID(), used, *answer))
        except Exception as e:  # noqa: BLE001
            self._error("Prediction failed", e, action="predict")
        self._publish()

    def _on_prediction(self, volume_id: str, model_id: str | None, result, findings: dict) -> None:
        from BackSplitLib.metrics import describe_findings
        from BackSplitLib.vocabulary import NO_LESION_FOUND_HINT
        from BackSplitSlicer.prediction import show_prediction

        volume = self._node(volume_id)
        if volume is None:
            raise BackSplitError("the volume was removed before the prediction arrived")
        model = next((m for m in self._models if m.model_id == model_id), None)
        output, auxiliary_node, auxiliary_ids = show_prediction(
            result, volume, self._node(self._state.output_id), self._state.predict_auxiliary,
            self._segmentation_node, model.schema if model else None)
        self._auxiliary_node_id = auxiliary_node.GetID() if auxiliary_node is not None else None
        self._auxiliary_segment_ids = auxiliary_ids
        found = describe_findings(findings)
        hint = None if findings.get("voxels") else NO_LESION_FOUND_HINT  # what to do next: said, not implied
        self._set(output_id=output.GetID(), auxiliary_segments=len(auxiliary_ids), auxiliary_shown=False,
                  prediction={**findings, "model_id": model_id, "text": found, "hint": hint})
        hidden = (f" {len(auxiliary_ids)} auxiliary segment(s) hidden: 'Show auxiliary' shows them."
                  if auxiliary_ids else "")
        next_step = f" What to do: {hint}." if hint else ""
        self._succeeded("predict", f"Prediction done with model {model_id or 'current'}: {found}.{hidden}{next_step}")

    def show_auxiliary(self) -> None:
        """Show the last prediction's hidden auxiliary segments, or hide them again."""
        from BackSplitSlicer.prediction import show_segments

        shown = not self._state.auxiliary_shown
        if show_segments(self._node(self._auxiliary_node_id), self._auxiliary_segment_ids, shown):
            self._set(auxiliary_shown=shown)
        self._publish()
