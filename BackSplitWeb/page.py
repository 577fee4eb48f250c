"""The page: trame-slicer's viewer layout with the segment editor on the left, the BackSplit panel on the
right, the views in the middle, and a sign-in card until the server token is checked.

Layout only: what the controls do lives in :mod:`BackSplitWeb.app` (scene, uploads, login) and in the
panel controller that :mod:`BackSplitWeb.panel` binds.
"""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer.app.ui import (
    LayoutButton,
    MprInteractionButton,
    SegmentEditorUI,
    SegmentEditorUndoRedoUI,
    ViewerLayout,
)


# Asked before an open replaces painted segments that were neither downloaded nor added as a case.
UNSAVED_QUESTION = ("The segmentation has changes that are not saved (not downloaded, not added as a case). "
                    "Open anyway and lose them?")


def build(app) -> ViewerLayout:
    server = app.server
    server.state.client_only("bs_token_input")
    with ViewerLayout(server, title="BackSplit", is_drawer_visible=True) as layout:
        app.layout_state = layout.typed_state
        loaded = layout.typed_state.name.is_volume_loaded
        with layout.appbar:
            _open_buttons(loaded)
        with layout.drawer:
            editor_ui = SegmentEditorUI(v_if=(loaded,))
            html.Div("Open a volume (NIfTI, NRRD, MHA or a DICOM zip) to start.", v_if=(f"!{loaded}",), classes="pa-4")
        with layout.toolbar:
            LayoutButton(classes="mt-1", disabled=(f"!{loaded}",))
            app.mpr_button = MprInteractionButton(classes="mt-1", disabled=(f"!{loaded}",))
        with layout.undo_redo:
            SegmentEditorUndoRedoUI(editor_ui=editor_ui, v_if=(loaded,))
        with layout.content:
            _sign_in_card()
            with html.Div(v_show=("bs_logged_in",), style="position: relative; width: 100%; height: 100%;"):
                app.layout_logic.layout_manager.initialize_layout_grid(layout)
        with v3.VNavigationDrawer(location="right", permanent=True, width=380, v_if=("bs_logged_in",)):
            app.panel.build_ui()
    app.segment_editor_logic.set_ui(editor_ui)
    app.layout_logic.set_ui(None)
    app.mpr_logic.set_ui(app.mpr_button)
    return layout


def _open_buttons(loaded: str) -> None:
    """Open a volume / an existing segmentation: streamed to the app's upload route (static/backsplit.js)."""
    with html.Div(v_if=("bs_logged_in",), classes="d-flex align-center ga-2 mx-2"):
        for kind, label, icon, extra in (("volume", "Open volume", "mdi-file-upload", ""),
                                         ("segmentation", "Open segmentation", "mdi-shape-plus", loaded),
                                         ("organ_map", "Open organ map", "mdi-map-outline", loaded)):
            with v3.VBtn(prepend_icon=icon, variant="tonal", size="small", tag="label",
                         disabled=(f"bs_uploading || !{extra}",) if extra else ("bs_uploading",),
                         id=f"bs-open-{kind}"):
                html.Span(label)
                html.Input(type="file", style="display: none;", id=f"bs-file-{kind}",
                           change=f"({'true' if kind == 'organ_map' else '!bs_unsaved'} || window.confirm("
                                  f"{UNSAVED_QUESTION!r})) && window.backsplitUpload($event.target.files[0], "
                                  f"'{kind}', bs_ticket); $event.target.value = ''")
        with v3.VMenu(close_on_content_click=False):
            with v3.Template(v_slot_activator="{ props }"):
                v3.VBtn("Server cases", prepend_icon="mdi-database", variant="tonal", size="small", v_bind="props",
                        id="bs-cases", click="trigger('bs_list_cases')", disabled=("bs_uploading",))
            with v3.VCard(min_width=320):
                with v3.VList(density="compact"):
                    v3.VListItem(v_for="item in bs_cases", key="item.value", title=("item.title",),
                                 click=f"(!bs_unsaved || window.confirm({UNSAVED_QUESTION!r})) && "
                                       "trigger('bs_open_case', [item.value])")
                    v3.VListItem(v_if=("bs_cases.length === 0",), title="No cases on the server yet.")
        v3.VProgressCircular(v_if=("bs_uploading",), indeterminate=True, size=20)
        html.Span("{{ bs_volume_name }}", classes="text-caption", id="bs-volume-name")
        html.Span("{{ bs_message }}", classes="text-caption", id="bs-message-line")
        html.Span("{{ bs_error }}", classes="text-caption text-red", id="bs-error")


def _sign_in_card() -> None:
    with v3.VCard(v_if=("!bs_logged_in",), max_width=480, classes="ma-auto mt-12", id="bs-login"):
        v3.VCardTitle("Sign in to the BackSplit server")
        with v3.VCardText():
            html.Div("Server: {{ bs_server_url }}", classes="mb-2")
            v3.VTextField(v_model=("bs_token_input", ""), label="Server token", type="password",
                          autocomplete="off", id="bs-token",
                          keydown_enter="trigger('backsplit_login', [bs_token_input]); bs_token_input = ''")
            html.Div("{{ bs_login_error }}", classes="text-red", id="bs-login-error")
        with v3.VCardActions():
            v3.VBtn("Sign in", id="bs-sign-in", variant="tonal",
                    click="trigger('backsplit_login', [bs_token_input]); bs_token_input = ''")
