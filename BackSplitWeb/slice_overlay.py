"""What the slice views show beyond the image: the view's name and position, R/L/A/P/S/I at the edges, the
value under the pointer, and left-drag window/level.

A binding: the words come from :mod:`BackSplitSlicer.slice_views` (Qt-free, tested on real MRML); this module
only copies them into trame state (``bs_views``: per view its title and edge letters; ``bs_probe``: the view
under the pointer and the value there) and draws them over each view (:func:`slice_view_ui`, passed to
trame-slicer's view factory). The pointer position comes from the crosshair node, which Slicer's slice view
interactor updates on every mouse move.

Window/level by left-drag is Slicer's own widget (``vtkMRMLWindowLevelWidget`` in the scalar bar displayable
manager of every trame-slicer slice view): it takes a left-drag only in the interaction node's
``AdjustWindowLevel`` mode. That mode is on while no segment editor tool is active, so a left-drag with the
brush still paints.
"""

from __future__ import annotations

from trame.widgets import html
from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui

from BackSplitSlicer.slice_views import probe, slice_view_facts

# Letters at the edges, clear of trame-slicer's gutter (left) and slice slider (bottom). White, like Slicer's
# view annotations: a coloured overlay could be taken for (or, in a screenshot, counted as) a segment's colour.
_EDGE_STYLE = {
    "left": "left: 44px; top: 50%;", "right": "right: 8px; top: 50%;",
    "top": "top: 4px; left: 50%;", "bottom": "bottom: 34px; left: 50%;",
}
_TEXT = "position: absolute; color: #ffffff; font: 13px sans-serif; text-shadow: 0 0 2px #000; pointer-events: none;"


def slice_view_ui(server, view_id: str, view) -> None:
    """trame-slicer's slice view controls, then BackSplit's overlay for the view called ``view.name``."""
    create_vertical_slice_view_gutter_ui(server, view_id, view)
    key = f"bs_views[{view.name!r}]"
    with html.Div(v_if=(key,), style="position: absolute; inset: 0; pointer-events: none;",
                  raw_attrs=[f'id="bs-view-{view.name}"']):
        html.Div(f"{{{{ {key}.title }}}}", style=_TEXT + "top: 4px; left: 44px;", classes="bs-view-title")
        for edge, where in _EDGE_STYLE.items():
            html.Div(f"{{{{ {key}.{edge} }}}}", style=_TEXT + where + "font-weight: bold;",
                     classes=f"bs-edge-{edge}")
        html.Div("{{ bs_probe.text }}", v_if=(f"bs_probe && bs_probe.view === {view.name!r}",),
                 style=_TEXT + "bottom: 34px; right: 8px;", classes="bs-probe")


class SliceOverlays:
    """Keeps ``bs_views`` and ``bs_probe`` true, and left-drag window/level on while no tool is active."""

    def __init__(self, app):
        self.app = app
        self.state = app.server.state
        self.state.bs_views = {}
        self.state.bs_probe = None
        self._observed: set[str] = set()
        scene = app.slicer_app.scene
        import slicer

        self._crosshair = slicer.vtkMRMLCrosshairDisplayableManager().FindCrosshairNode(scene)
        if self._crosshair is not None:
            self._crosshair.AddObserver(slicer.vtkMRMLCrosshairNode.CursorPositionModifiedEvent, self._on_cursor)
        editor = app.slicer_app.segmentation_editor
        editor.active_effect_name_changed.connect(lambda *_: self.update_drag_mode())
        self.update_drag_mode()

    # ------------------------------------------------------------------------------ window/level
    def update_drag_mode(self) -> None:
        """Left-drag adjusts window/level unless a segment editor tool wants the drag."""
        from trame_slicer.segmentation import SegmentationEffectNoTool

        interaction = self.app.slicer_app.app_logic.GetInteractionNode()
        if interaction is None:
            return
        effect = self.app.slicer_app.segmentation_editor.active_effect_name
        idle = effect in ("", SegmentationEffectNoTool.get_effect_name())
        interaction.SetCurrentInteractionMode(interaction.AdjustWindowLevel if idle else interaction.ViewTransform)

    # ------------------------------------------------------------------------------ view facts
    def refresh(self) -> None:
        """Every slice view's title and edge letters (and observe views created since); the drag mode again,
        as a new scene may bring its own interaction node state."""
        self.update_drag_mode()
        views = {}
        for view in self.app.slicer_app.view_manager.get_slice_views():
            node = view.get_view_node()
            if node is None:
                continue
            if node.GetID() not in self._observed:
                self._observed.add(node.GetID())
                node.AddObserver("ModifiedEvent", lambda *_: self.refresh())
            views[view.name] = slice_view_facts(node)
        if views != self.state.bs_views:
            self.state.bs_views = views
            self.state.flush()

    def _on_cursor(self, *_) -> None:
        """The pointer moved over a view: the value there, or nothing outside the volume."""
        import slicer  # noqa: F401 (vtk wrapping of the out-parameters)

        ras = [0.0, 0.0, 0.0]
        xyz = [0.0, 0.0, 0.0]
        found = None
        if self._crosshair.GetCursorPositionRAS(ras):
            slice_node = self._crosshair.GetCursorPositionXYZ(xyz)
            name = slice_node.GetLayoutName() if slice_node is not None else None
            value = probe(self.app.volume_node, ras) if name else None
            found = {"view": name, "text": value.text, "value": value.value, "ijk": list(value.ijk)} if value else None
        if found != self.state.bs_probe:
            self.state.bs_probe = found
            self.state.flush()
