"""The trame application: trame-slicer's scene, views and segment editor, plus BackSplit's own parts.

One :class:`WebApp` per process (one user: see :mod:`BackSplitWeb.security`). It assembles trame-slicer's
logic pieces (views, segment editor, volume properties, layouts) the way trame-slicer's segmentation app
does, but opens volumes through :mod:`BackSplitWeb.uploads` (streamed to disk, size limit, the engine's
upload gate) instead of trame-slicer's in-memory loader, and adds the BackSplit panel
(:mod:`BackSplitWeb.panel`) and the login step (:mod:`BackSplitWeb.login`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from BackSplitLib.errors import BackSplitError
from BackSplitLib.io import case_name, write_image
from BackSplitLib.vocabulary import DEFAULT_SERVER_URL

from BackSplitWeb import module_path, policy
from BackSplitWeb.security import APP_ROUTE_PREFIX, WS_PATH, Gate, SecretCheck, new_secret
from BackSplitWeb.uploads import (
    StreamedFile, UploadError, file_stem, received_image, received_segmentation, upload_name,
)

module_path.ensure_slicer_module_on_path()

from trame.app import get_server  # noqa: E402 (after the module path is set)
from trame_slicer import module as trame_slicer_module  # noqa: E402
from trame_slicer.app.logic import (  # noqa: E402
    LayoutButtonLogic,
    MprInteractionButtonLogic,
    SegmentEditorLogic,
    VolumePropertyLogic,
)
from trame_slicer.core import SlicerApp  # noqa: E402
from trame_slicer.rca_view import register_rca_factories  # noqa: E402

from BackSplitWeb import page  # noqa: E402
from BackSplitWeb.login import check_token  # noqa: E402
from BackSplitWeb.slice_overlay import SliceOverlays, slice_view_ui  # noqa: E402

log = logging.getLogger("backsplit.web")
STATIC = Path(__file__).with_name("static")
UPLOAD_CHUNK = 1 << 20
# Frames per second of the views the pointer is not over. With the brush active, every mouse move asks every
# slice view for a frame (the brush shows in all of them: `backsplit bench paint` counts the requests); at
# trame-slicer's 10 the two other views render back to back (a frame costs more than 0.1 s on llvmpipe) and the
# painted view's frames wait behind theirs. At 1 they follow within a second.
UNFOCUSED_VIEW_FPS = 1.0
# A segmentation of the open volume: up to eight uint8 layers (or one int64 label map) per volume voxel.
LABEL_BYTES_PER_VOLUME_VOXEL = 8


@dataclass
class WebSettings:
    """What `backsplit web` was started with."""

    host: str = "127.0.0.1"
    port: int = 0
    server_url: str = DEFAULT_SERVER_URL
    token: str | None = None  # from the environment, loopback only (login.startup_token)
    max_upload: int = 2 << 30
    work_dir: Path | None = None
    secret: str = field(default_factory=new_secret)


def volume_voxels(node) -> int:
    """Voxels of a volume node's image."""
    x, y, z = node.GetImageData().GetDimensions()
    return x * y * z


class WebApp:
    """The scene, the views, the segment editor, the BackSplit panel, and the app's HTTP routes."""

    def __init__(self, settings: WebSettings, server=None):
        self.settings = settings
        self.work = Path(settings.work_dir or tempfile.mkdtemp(prefix="backsplit-web-"))
        self.work.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o700)
        # The app does seconds of VTK work on its event loop (loading, surfaces, rendering); wslink's default
        # 30 s heartbeat then drops the only browser on a busy machine.
        os.environ.setdefault("WSLINK_HEART_BEAT", "300")
        self.server = server or get_server(client_type="vue3")
        self.server.enable_module(trame_slicer_module)
        self.server.enable_module({"serve": {"backsplit_web": str(STATIC)}, "scripts": ["backsplit_web/backsplit.js"]})
        self.state = self.server.state
        self.gate = Gate(settings.secret, settings.host)
        self.gate.on_connect = self._on_browser_connected
        self.gate.on_disconnect = self._on_browser_disconnected
        self.server.add_protocol_to_configure(lambda protocol: protocol.registerLinkProtocol(SecretCheck(self.gate)))
        self._token: str | None = None  # the server token, in memory only; set once checked = signed in

        self.slicer_app = SlicerApp()
        register_rca_factories(self.slicer_app.view_manager, self.server, slice_view_ui_f=slice_view_ui,
                               blur_fps=UNFOCUSED_VIEW_FPS)
        self.segment_editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        self.volume_property_logic = VolumePropertyLogic(self.server, self.slicer_app)
        self.layout_logic = LayoutButtonLogic(self.server, self.slicer_app)
        self.mpr_logic = MprInteractionButtonLogic(self.server, self.slicer_app)
        self.volume_node = None
        self.overlays = SliceOverlays(self)

        from BackSplitWeb.panel import PanelBinding

        self.panel = PanelBinding(self)
        self.ui = page.build(self)
        self._reset_state()
        self.server.controller.on_server_bind.add(self._bind_routes)
        self.server.trigger("backsplit_login")(self.login)
        self.server.trigger("bs_list_cases")(self.list_cases)
        self.server.trigger("bs_open_case")(self.open_case)
        if settings.token:
            self._use_token(settings.token)

    # ------------------------------------------------------------------------------ state and login
    def _reset_state(self) -> None:
        self.state.update({
            "trame__title": "BackSplit",
            "bs_logged_in": False,
            "bs_login_error": "",
            "bs_server_url": self.settings.server_url,
            "bs_ticket": "",
            "bs_message": "",
            "bs_error": "",
            "bs_volume_name": "",
            "bs_uploading": False,
            "bs_cases": [],
        })

    def login(self, token: str) -> None:
        """The page's Sign in: the typed token is checked against the server and kept in memory only."""
        try:
            check_token(self.settings.server_url, token)
        except BackSplitError as e:
            self.state.bs_login_error = str(e)
            return
        self._use_token(token)

    @property
    def signed_in(self) -> bool:
        """Whether a checked server token is held: the one authorisation the app has, kept here in Python,
        never in trame state (the page may write any state key; ``bs_logged_in`` only shows this)."""
        return self._token is not None

    def _use_token(self, token: str) -> None:
        self._token = token
        self.state.bs_logged_in = True
        self.state.bs_login_error = ""
        self.panel.on_login(self.settings.server_url, token)

    # ------------------------------------------------------------------------ cases on the server
    def _client(self):
        from BackSplitLib.client import BackSplitClient

        if not self.signed_in:
            raise BackSplitError("sign in first")
        return BackSplitClient(self.settings.server_url, token=self._token, timeout=60,
                               project=self.panel.controller.state().project)  # the picker's project

    async def list_cases(self) -> None:
        """The server's cases, for the case picker."""
        import asyncio

        try:
            cases = await asyncio.get_running_loop().run_in_executor(None, self._client().list_cases)
        except Exception as e:  # noqa: BLE001 (shown to the user)
            self._set(bs_error=f"listing the server's cases failed: {e}")
            return
        from BackSplitSlicer.backends import describe_case

        self._set(bs_cases=[{"title": describe_case(c), "value": c["id"]} for c in cases], bs_error="")

    async def open_case(self, case_id: str) -> None:
        """Open a case stored on the server: its image, and its label map as named segments with roles."""
        import asyncio

        from BackSplitLib.schema import LabelSchema

        work = Path(tempfile.mkdtemp(dir=self.work))
        self._set(bs_uploading=True, bs_error="", bs_message="downloading the case")
        try:
            client = self._client()
            loop = asyncio.get_running_loop()
            case = await loop.run_in_executor(None, client.get_case, case_id)
            image_path, label_path = await loop.run_in_executor(None, client.download_case, case_id, work)
            image = received_image(image_path, work, self.settings.max_upload)
            label = received_image(label_path, work, self.settings.max_upload, what="case label")
            self.open_volume(image, case["name"])
            self.segments_from_label(label, LabelSchema.from_dict(case["schema"]))
            self._set(bs_uploading=False, bs_message=f"opened case {case['name']}")
        except Exception as e:  # noqa: BLE001 (shown to the user)
            self._set(bs_uploading=False, bs_error=f"opening the case failed: {e}", bs_message="")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def segments_from_label(self, label, schema) -> None:
        """One segment per class of ``schema`` found in ``label``, named and coloured as in the schema, with
        the role the class has there (target, auxiliary, ignore)."""
        import numpy as np
        import SimpleITK as sitk

        from BackSplitLib.schema import BACKGROUND, IGNORE
        from BackSplitSlicer.case import set_segment_mask
        from BackSplitSlicer.roles import AUXILIARY, IGNORE as IGNORE_ROLE, TARGET, set_segment_role

        node = self.segmentation_node()
        values = sitk.GetArrayFromImage(label)
        for name, value in schema.labels.items():
            if name == BACKGROUND or not np.any(values == value):
                continue
            set_segment_mask(node, name, values == value, self.volume_node, schema.colors.get(name, (128, 128, 128)),
                             True)
            role = TARGET if name == schema.target else IGNORE_ROLE if name == IGNORE else AUXILIARY
            set_segment_role(node, name, role)
        self.segment_editor_logic.on_volume_changed(self.volume_node)
        self.panel.on_volume_changed(self.volume_node)

    def _on_browser_connected(self) -> None:
        self.state.bs_ticket = self.gate.ticket
        self.state.flush()

    def _on_browser_disconnected(self) -> None:
        # The next browser logs in again unless the token came from the environment on loopback; it must
        # not see the previous user's scene before it has signed in.
        if not self.settings.token:
            self._token = None
            self.panel.on_logout()
            self.close_scene()
            self._reset_state()  # signed out, and no server case names left in the state
        self.state.bs_ticket = ""
        self.state.flush()

    # --------------------------------------------------------------------------------- HTTP routes
    def _bind_routes(self, wslink_server) -> None:
        app: web.Application = wslink_server.app
        app.middlewares.append(self.gate.middleware)
        app.on_response_prepare.append(self.gate.remember_socket)
        rpc_policy = policy.RpcPolicy(lambda: self.signed_in)
        handlers = [route.handler.__self__ for route in app.router.routes()
                    if route.resource is not None and route.resource.canonical == WS_PATH]
        if not handlers:
            raise RuntimeError("trame's WebSocket route was not found; the web app refuses to start unguarded")
        for handler in handlers:
            policy.install(handler, rpc_policy)
        app.router.add_post(f"{APP_ROUTE_PREFIX}upload", self._upload)
        app.router.add_get(f"{APP_ROUTE_PREFIX}download/{{what}}", self._download)
        app.router.add_get(f"{APP_ROUTE_PREFIX}state", self._state_json)

    def _need_login(self) -> web.Response | None:
        if not self.signed_in:
            return web.json_response({"detail": "sign in first"}, status=403)
        return None

    async def _upload(self, request: web.Request) -> web.Response:
        refused = self._need_login()
        if refused:
            return refused
        kind = request.query.get("kind", "volume")
        client_name = request.query.get("name", "volume")
        if kind not in ("volume", "segmentation", "organ_map"):
            return web.json_response({"detail": f"unknown upload kind {kind!r}"}, status=400)
        work = Path(tempfile.mkdtemp(dir=self.work))
        target = StreamedFile(work / upload_name(client_name), self.settings.max_upload)
        self._set(bs_uploading=True, bs_error="", bs_message=f"receiving {client_name}")
        try:
            async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
                target.write(chunk)
            path = target.close()
            if kind == "volume":
                self.open_volume(received_image(path, work, self.settings.max_upload, client_name), client_name)
            elif kind == "segmentation":
                self.open_segmentation(path, work, client_name)
            else:
                self.open_organ_map(path, work, client_name)
        except UploadError as e:
            target.abort()
            self._set(bs_uploading=False, bs_error=str(e), bs_message="")
            return web.json_response({"detail": str(e)}, status=e.status)
        except BackSplitError as e:
            self._set(bs_uploading=False, bs_error=str(e), bs_message="")
            return web.json_response({"detail": str(e)}, status=400)
        except Exception as e:  # noqa: BLE001 (a reader or the connection failed: say so, the app lives on)
            log.exception("opening an upload (%s) failed", kind)
            message = f"{client_name} could not be opened ({type(e).__name__})"
            self._set(bs_uploading=False, bs_error=message, bs_message="")
            return web.json_response({"detail": message}, status=422)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._set(bs_uploading=False, bs_message=f"opened {client_name}")
        return web.json_response({"ok": True})

    def _set(self, **values) -> None:
        self.state.update(values)
        self.state.flush()

    async def _download(self, request: web.Request) -> web.StreamResponse:
        refused = self._need_login()
        if refused:
            return refused
        what = request.match_info["what"]
        folder = Path(tempfile.mkdtemp(dir=self.work))
        try:
            try:
                path = self.panel.export(what, folder)
            except BackSplitError as e:
                return web.json_response({"detail": str(e)}, status=409)
            except Exception as e:  # noqa: BLE001 (a message, not a traceback, for the page)
                log.exception("download %s failed", what)
                return web.json_response({"detail": f"the {what} could not be written ({type(e).__name__})"},
                                         status=500)
            response = web.FileResponse(path, headers={"Content-Disposition": f'attachment; filename="{path.name}"'})
            await response.prepare(request)  # sent in full here, so the file can go before returning
            return response
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _state_json(self, request: web.Request) -> web.Response:
        """The scene as plain data (volume, segments, roles, geometry): what tests and scripts read back."""
        refused = self._need_login()
        return refused or web.json_response(self.panel.describe())

    # ------------------------------------------------------------------------------------ the scene
    def open_volume(self, image, client_name: str) -> None:
        """Replace the scene's contents with ``image`` and show it in every view."""
        name = case_name(client_name) or "volume"
        folder = Path(tempfile.mkdtemp(dir=self.work))
        try:
            nrrd = write_image(image, folder / f"{file_stem(name)}.nrrd")
            self.slicer_app.scene.Clear()
            volumes = self.slicer_app.io_manager.load_volumes([str(nrrd)])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not volumes:
            raise UploadError("the volume could not be loaded into the scene")
        self.volume_node = volumes[0]
        self.volume_node.SetName(name)
        self.slicer_app.display_manager.show_volume(self.volume_node, do_reset_views=True)
        self.volume_property_logic.on_volume_changed(self.volume_node)
        self.segment_editor_logic.on_volume_changed(self.volume_node)
        self.layout_state.data.is_volume_loaded = True
        self.state.bs_volume_name = name
        self.panel.on_volume_changed(self.volume_node)
        self.overlays.refresh()

    def open_segmentation(self, path: Path, work: Path, client_name: str) -> None:
        """An existing segmentation (.seg.nrrd, or a label map) for the open volume."""
        if self.volume_node is None:
            raise UploadError("open a volume first, then its segmentation")
        if not client_name.lower().endswith(".seg.nrrd"):
            image = received_image(path, work, self._label_limit(), what=client_name)
            path = write_image(image, work / "labels.nrrd")
        else:
            path = received_segmentation(path, self._label_limit(), client_name)
        node = self.slicer_app.segmentation_editor.load_segmentation_from_file(str(path))
        if node is None:
            raise UploadError("the segmentation could not be loaded")
        for other in list(self.slicer_app.scene.GetNodesByClass("vtkMRMLSegmentationNode")):
            if other is not node:
                self.slicer_app.scene.RemoveNode(other)
        node.SetName(case_name(client_name) or "segmentation")
        self.segment_editor_logic.on_volume_changed(self.volume_node)
        self.panel.on_volume_changed(self.volume_node)

    def open_organ_map(self, path: Path, work: Path, client_name: str) -> None:
        """An organ map for "Import organ map": a label map (names from its colour table) or a .seg.nrrd."""
        if self.volume_node is None:
            raise UploadError("open a volume first, then an organ map for it")
        name = case_name(client_name) or "organ map"
        if client_name.lower().endswith(".seg.nrrd"):
            path = received_segmentation(path, self._label_limit(), client_name)
            node = self.slicer_app.segmentations_logic.LoadSegmentationFromFile(str(path), False, name)
        else:
            image = received_image(path, work, self._label_limit(), what=client_name)
            node = self.slicer_app.volumes_logic.AddArchetypeVolume(str(write_image(image, work / "organs.nrrd")),
                                                                    name, 1)
        if node is None:
            raise UploadError("the organ map could not be loaded")
        self.panel.controller.set_organ_map(node.GetID())

    def _label_limit(self) -> int:
        """Voxel bytes a segmentation, label map or organ map of the open volume may declare: a few bytes
        per voxel of that volume (layers of a .seg.nrrd, a wide label type), never past --max-upload."""
        return min(self.settings.max_upload, volume_voxels(self.volume_node) * LABEL_BYTES_PER_VOLUME_VOXEL)

    def close_scene(self) -> None:
        """An empty scene (after sign-out): nothing of the last user's volume or segments stays visible."""
        self.slicer_app.scene.Clear()
        self.volume_node = None
        self.layout_state.data.is_volume_loaded = False
        self.state.bs_volume_name = ""
        self.state.bs_probe = None
        self.panel.on_scene_closed()

    def segmentation_node(self):
        editor = self.slicer_app.segmentation_editor
        return editor.active_segmentation_node if editor.active_segmentation else None

    # ------------------------------------------------------------------------------------- running
    def url(self) -> str:
        host = self.settings.host if self.settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.server.port}/?secret={self.settings.secret}"

    def start(self, **kwargs) -> None:
        """Serve until stopped; prints the URL to open, with the launch secret, on a line of its own."""

        def announce(**_):
            sys.stdout.write(f"BackSplit web is ready: open this URL in your browser:\n{self.url()}\n")
            sys.stdout.flush()

        self.server.controller.on_server_ready.add(announce)
        # trame parses sys.argv for its own options; give it only ours (the secret never goes on argv).
        argv, sys.argv = sys.argv, [sys.argv[0], "--authKey", self.settings.secret]
        try:
            self.server.start(host=self.settings.host, port=self.settings.port, open_browser=False,
                              show_connection_info=False, timeout=0, **kwargs)
        finally:
            sys.argv = argv
