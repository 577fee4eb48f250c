"""The panel controller against real servers: a slow one (nothing may block) and a real local engine.

The local-engine scenario is the one a clinician lives through: start the engine, add the case, fine-tune,
leave and re-enter the module during the job (which must keep running and being polled), predict, then the
engine dies and the panel says so once, stops polling, and reconnects; on the new engine the self-test's
end-to-end flow (``selftest.run_end_to_end``, what BackSplitTest runs in Slicer) passes. The engine runs as an installed
extension runs it: the engine package from the extension's layout (BackSplit/CMakeLists.txt), in a Python
holding only what the install step installs (the requirements generated from pyproject: ``make local-venv``,
which ``make test`` builds once), not the pip-installed project.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from extension_layout import REPO

from BackSplitSlicer.backends import LocalBackend, RemoteBackend
from BackSplitSlicer.panel import CONNECTED, DISCONNECTED, LOST, MemorySettings, PanelController, Work

DELAY_S = 5.0
HANDLER_BUDGET_S = 0.050


class SlowHandler(BaseHTTPRequestHandler):
    """Every answer comes after ``delay_s``: /health ok, no models, a running job."""

    delay_s = DELAY_S

    def _answer(self) -> None:
        time.sleep(self.delay_s)
        if self.path in ("/me", "/projects"):  # a server from before issue 24
            self.send_error(404)
            return
        if self.path.endswith("/health"):
            body = {"status": "ok", "device": "cpu", "queue_length": 0}
        elif self.path.endswith("/models"):
            body = []
        else:
            body = {"id": "j1", "state": "running", "iteration": 1, "total_iterations": 10}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def slow_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def timed(durations: list, fn, *args) -> None:
    start = time.perf_counter()
    fn(*args)
    durations.append((getattr(fn, "__name__", "?"), time.perf_counter() - start))


def test_no_handler_or_tick_waits_for_a_server_that_takes_5_s_per_answer(scene, slow_server):
    panel = PanelController(scene, MemorySettings(), backend_factory=lambda kind, **kw: RemoteBackend(
        kw["url"], retries=0, timeout=30))
    durations: list = []
    timed(durations, panel.set_backend_kind, "Remote")
    timed(durations, panel.set_server_url, slow_server)
    timed(durations, panel.connect)
    timed(durations, panel.refresh_models)
    assert panel.state().connection == "connecting"
    enabled = panel.state().enabled  # while connecting: only Stop
    assert [a for a, on in enabled.items() if on] == ["stop"], enabled
    deadline = time.monotonic() + 5 * DELAY_S + 10  # /me, /projects, /health, /models: 5 s each
    while panel.state().connection != CONNECTED and time.monotonic() < deadline:
        timed(durations, panel.tick)
        time.sleep(0.02)
    assert panel.state().connection == CONNECTED  # the slow answers did arrive, through tick
    # A server from before issue 24 (no /me, no /projects): its single token is an admin, said as such.
    state = panel.state()
    assert state.identity.startswith("signed in with the server's single token (admin") and state.me["admin"]
    assert state.projects == () and "before projects" in state.projects_note and state.project == "default"
    enabled = panel.state().enabled  # connected, no inputs in this scene, no job
    assert enabled["fine_tune"] and enabled["refresh_models"] and enabled["stop"] and enabled["connect"]
    assert not enabled["add_case"] and not enabled["predict"] and not enabled["cancel"] and not enabled["reconnect"]
    timed(durations, panel.fine_tune)
    assert not panel.state().enabled["fine_tune"]  # while the request is on its way
    timed(durations, panel.tick)
    timed(durations, panel.enter)
    timed(durations, panel.leave)
    timed(durations, panel.stop)  # closing a remote backend never waits either
    slowest = max(durations, key=lambda d: d[1])
    over = [d for d in durations if d[1] >= HANDLER_BUDGET_S]
    print(f"{len(durations)} calls, slowest {slowest[0]} {1000 * slowest[1]:.1f} ms, {len(over)} over 50 ms")
    # A call that waited for the server would take >= 5 s. On the shared 2-core test machine the scheduler
    # alone sometimes delays a 5 ms call past 50 ms, so up to 1 % of calls may exceed the budget, by < 1 s.
    assert slowest[1] < 1.0, slowest
    assert len(over) <= len(durations) // 100, over
    names = {d[0] for d in durations}
    assert {"connect", "refresh_models", "tick", "fine_tune", "enter", "leave", "stop"} <= names


class QuickHandler(SlowHandler):
    delay_s = 0.0


def test_remote_mode_trusts_a_custom_ca_bundle(scene, tmp_path):
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test's certificate: apt-get install openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), QuickHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        panel = PanelController(scene, MemorySettings())
        panel.set_backend_kind("Remote")
        panel.set_server_url(f"https://127.0.0.1:{server.server_address[1]}")
        for ca_bundle, expected in (("", DISCONNECTED), (str(cert), CONNECTED)):
            panel.set_ca_bundle(ca_bundle)
            panel.connect()
            deadline = time.monotonic() + 60
            while panel.state().connection == "connecting" and time.monotonic() < deadline:
                panel.tick()
                time.sleep(0.02)
            assert panel.state().connection == expected, panel.state().message
            if expected == DISCONNECTED:
                assert "CA bundle" in panel.state().message.hint
        assert panel.settings.get("BackSplit/CABundle") == str(cert)
    finally:
        server.shutdown()


# ------------------------------------------------------------------------------------- a real local engine
pytest.importorskip("torch")
pytest.importorskip("fastapi")

LOCAL_VENV = Path(os.environ.get("BACKSPLIT_LOCAL_VENV", REPO / ".venv-local")).absolute()
LOCAL_PYTHON = LOCAL_VENV / "bin" / "python"
FAST_TRAINING = {"batch_size": 1, "val_every": 2, "patch_size": [32, 32, 16], "val_fraction": 0.0}


def run_until(panel: PanelController, done, timeout_s: float, what: str) -> None:
    start = time.monotonic()
    deadline = start + timeout_s
    while not done(panel.state()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s: {panel.state()}")
        panel.tick()
        time.sleep(0.05)
    print(f"{what}: {time.monotonic() - start:.1f} s")


def connected_panel(scene, server, settings=None, token=None, ready=lambda s: not s.busy,
                    **options) -> PanelController:
    """A panel connected to a served BackSplit the way a clinician connects (Remote, URL, token, Connect),
    once ``ready(state)`` holds; ``options`` go to the controller."""
    panel = PanelController(scene, settings or MemorySettings(), **options,
                            backend_factory=lambda kind, **kw: RemoteBackend(kw["url"], kw["token"], retries=0))
    panel.set_backend_kind("Remote")
    panel.set_server_url(server.url)
    panel.set_token(token or server.token)
    panel.connect()
    run_until(panel, lambda s: s.connection == CONNECTED and ready(s), 60, "connecting")
    return panel


@pytest.mark.slow
@pytest.mark.skipif(not LOCAL_PYTHON.exists(), reason="no install-step venv: run `make local-venv` (make test does)")
def test_local_engine_through_the_panel_survives_re_entering_and_a_crash(scene, tmp_path, installed_extension):
    from BackSplitSlicer.case import LESION_SEGMENT_NAME
    from BackSplitSlicer.selftest import phantom_scene

    layout = installed_extension.module_dir  # built and installed by cmake (conftest)
    # Only the install step's packages: the project is not installed there.
    bare_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a checkout on PYTHONPATH is not "there"
    assert subprocess.run([str(LOCAL_PYTHON), "-c", "import BackSplitLib"], cwd=tmp_path, env=bare_env,
                          capture_output=True).returncode != 0

    def factory(kind, *, token=None, data_folder=None, **unused):
        return LocalBackend(data_folder, python=str(LOCAL_PYTHON), engine_path=layout, token=token,
                            extra_env={"PYTHONNOUSERSITE": "1"})

    volume, segmentation = phantom_scene(seed=3, scene=scene)
    settings = MemorySettings()
    panel = PanelController(scene, settings, backend_factory=factory, training_options=FAST_TRAINING)
    seen: list = []
    panel.observe(seen.append)
    panel.set_local_data_folder(str(tmp_path / "engine"))
    panel.set_training(iterations=6)
    assert panel.state().backend_kind == "Local"
    panel.connect()
    run_until(panel, lambda s: s.connection == CONNECTED, 90, "the local engine answering")
    engine = panel.backend
    assert f"BackSplit server on {engine.url}" in engine.log_path.read_text(encoding="utf-8", errors="replace")
    assert engine.token and "--no-auth" not in engine.command()  # a per-launch token, not on argv
    assert engine.token not in " ".join(engine.command())
    assert not (engine.data_dir / "token").exists()  # the token lives in the engine's environment only
    # Slicer 5.10's Python (3.12) reaches it with the bundled standard-library client.
    python312 = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python"))
    if python312:
        script = ("import sys; sys.path.insert(0, sys.argv[1]); from BackSplitLib.client import BackSplitClient; "
                  "c = BackSplitClient(sys.argv[2], token=sys.argv[3]); "
                  "print(c.health()['status'], len(c.list_models()))")
        done = subprocess.run([str(python312[-1]), "-I", "-c", script, str(layout), engine.url, engine.token],
                              capture_output=True, text=True, timeout=60)
        assert done.stdout.split() == ["ok", "0"], done.stderr[-2000:]

    panel.add_case()
    run_until(panel, lambda s: not s.busy, 60, "the upload")
    assert panel.state().status.startswith("Case added"), panel.state().status
    panel.fine_tune()
    run_until(panel, lambda s: s.job is not None, 30, "the job starting")
    assert not panel.state().enabled["fine_tune"] and panel.state().enabled["cancel"]

    # Leave the module and come back (as "Open Segment Editor" does) while the job runs.
    panel.leave()
    panel.enter()
    assert panel.backend is engine and engine.running
    run_until(panel, lambda s: s.job["state"] == "succeeded", 240, "the job finishing")
    assert panel.state().job["iteration"] == 6
    assert panel.state().enabled["fine_tune"] and not panel.state().enabled["cancel"]
    run_until(panel, lambda s: s.models, 30, "the new model listed")

    panel.predict()
    run_until(panel, lambda s: s.status.startswith("Prediction done"), 120, "the prediction")
    output = scene.GetNodeByID(panel.state().output_id)
    assert output.GetSegmentation().GetSegmentIdBySegmentName(LESION_SEGMENT_NAME)
    assert output is not segmentation and volume.GetID() == panel.state().volume_id

    # The engine dies while a job runs: one message, polling stops, Reconnect starts a new engine.
    panel.set_training(iterations=400)
    panel.fine_tune()
    run_until(panel, lambda s: s.job is not None and s.job["state"] in ("queued", "running"), 30, "job 2")
    job_2 = panel.state().job["job_id"]
    # With a model selected the panel asks for a fine-tune of it: the server trains it with the engine's one
    # fine-tune recipe (training.finetune_config; test_finetune_recipe.py checks the settings it writes).
    record = engine.client.get_job(job_2)
    assert record["kind"] == "finetune" and record["base_model"] == panel.state().model_id, record
    engine.process.kill()
    run_until(panel, lambda s: s.connection == LOST, 30, "the lost connection noticed")
    errors = {s.message.serial for s in seen if s.message is not None and s.message.level == "error"}
    for _ in range(30):  # more ticks: no new message, no new poll
        panel.tick()
        time.sleep(0.05)
    assert {s.message.serial for s in seen if s.message is not None and s.message.level == "error"} == errors
    assert not panel._pending(Work.read_progress)
    assert panel.state().enabled["reconnect"] and not panel.state().enabled["fine_tune"]
    panel.reconnect()
    run_until(panel, lambda s: s.connection == CONNECTED, 90, "reconnecting")
    assert panel.backend is not engine and panel.backend.running
    # The new engine requeued the killed job; the panel follows it again and can cancel it.
    assert panel.state().job["job_id"] == job_2 and panel.state().enabled["cancel"]
    check_the_self_tests_flow(panel.backend, job_2, volume, segmentation)
    panel.stop()
    assert panel.state().connection == DISCONNECTED and panel.state().enabled["connect"]


def check_the_self_tests_flow(backend, old_job: str, volume, segmentation) -> None:
    """BackSplitTest's end-to-end part (selftest.run_end_to_end) on a running engine: add the case, train
    two iterations, predict, and the scene holds exactly the server's lesion voxels on the volume's grid."""
    import numpy as np
    import SimpleITK as sitk

    from BackSplitLib.io import Geometry
    from BackSplitSlicer.case import LESION_SEGMENT_NAME, prediction_mask, volume_geometry
    from BackSplitSlicer.selftest import run_end_to_end

    backend.cancel(old_job)  # the killed engine's job came back queued on this one
    result = run_end_to_end(volume, segmentation, backend, iterations=2, training=FAST_TRAINING)
    assert result.job.state == "succeeded" and result.job.iteration == 2
    assert [m.model_id for m in backend.list_models() if m.current] == [result.job.model_id]
    assert result.prediction.schema.target == "lesion"  # classes by name, and the schema travels back
    assert set(result.prediction.schema.auxiliary_names) >= {"liver", "kidney_left"}
    assert volume_geometry(volume).mismatch(Geometry.of(result.prediction.mask)) is None
    server_lesion = sitk.GetArrayFromImage(result.prediction.classes) == result.prediction.schema.target_value
    assert np.array_equal(prediction_mask(result.output_node, LESION_SEGMENT_NAME, volume), server_lesion)
    assert np.array_equal(server_lesion, sitk.GetArrayFromImage(result.prediction.mask) > 0)
    display = result.output_node.GetDisplayNode()
    assert display.GetSegmentVisibility(result.segments[LESION_SEGMENT_NAME])
    assert not display.GetSegmentVisibility(result.segments["liver"])
