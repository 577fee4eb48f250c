"""The panel controller on real MRML: inputs, the live roles table, scene close, enabled actions, messages.

No server here (see test_panel_server.py for a real local engine and a slow one): these scenarios need only
the scene, so they run in well under a second each.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from BackSplitSlicer.panel import (CONNECTED, DISCONNECTED, LOCAL_MODE_NOTE, SETTINGS, MemorySettings,
                                   PanelController)
from BackSplitSlicer.roles import AUXILIARY, IGNORE, TARGET, UNUSED


def add_segmentation(scene, name: str, segments: list[str]):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    for segment in segments:
        node.GetSegmentation().AddEmptySegment("", segment)
    return node


def add_volume(scene, name: str = "CT"):
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.zeros((4, 5, 6), np.float32))
    return node


def names(controller) -> list[str]:
    return [row.name for row in controller.state().roles]


class Recorder:
    def __init__(self, controller):
        self.states = []
        controller.observe(self.states.append)


def test_inputs_are_picked_from_the_scene_and_labelmaps_are_not_volumes(scene):
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    volume = add_volume(scene)
    segmentation = add_segmentation(scene, "Segments", ["lesion", "liver"])
    panel = PanelController(scene, MemorySettings())
    state = panel.state()
    assert (state.volume_id, state.segmentation_id) == (volume.GetID(), segmentation.GetID())
    assert [(r.name, r.role) for r in state.roles] == [("lesion", TARGET), ("liver", AUXILIARY)]


def test_roles_table_follows_the_selected_segmentation_live(scene):
    first = add_segmentation(scene, "First", ["tumor", "kidney"])
    second = add_segmentation(scene, "Second", ["cyst"])
    panel = PanelController(scene, MemorySettings())
    seen = Recorder(panel)
    assert names(panel) == ["tumor", "kidney"]

    panel.set_segmentation(second.GetID())
    assert names(panel) == ["cyst"]
    first.GetSegmentation().AddEmptySegment("", "bone")  # the old one no longer drives the table
    assert names(panel) == ["cyst"]

    before = len(seen.states)
    segment_id = second.GetSegmentation().AddEmptySegment("", "fat")
    assert names(panel) == ["cyst", "fat"] and len(seen.states) == before + 1  # pushed, not only on read
    second.GetSegmentation().GetSegment(segment_id).SetName("fat tissue")
    assert seen.states[-1].roles[-1].name == "fat tissue"
    panel.set_role(segment_id, IGNORE)  # by id: the rename in between does not matter
    assert seen.states[-1].roles[-1].role == IGNORE
    second.GetSegmentation().RemoveSegment(segment_id)
    assert [r.name for r in seen.states[-1].roles] == ["cyst"]


def test_a_role_of_a_removed_segment_gives_one_message_not_an_exception(scene):
    node = add_segmentation(scene, "Segments", ["lesion"])
    panel = PanelController(scene, MemorySettings())
    segment_id = node.GetSegmentation().GetNthSegmentID(0)
    node.GetSegmentation().RemoveSegment(segment_id)
    panel.set_role(segment_id, AUXILIARY)
    message = panel.state().message
    assert message.level == "error" and "no longer exists" in message.text


def test_after_closing_the_scene_the_panel_works_with_the_new_one(scene):
    add_volume(scene)
    add_segmentation(scene, "Old", ["lesion"])
    panel = PanelController(scene, MemorySettings())
    scene.Clear(0)
    state = panel.state()
    assert state.volume_id is None and state.segmentation_id is None and state.roles == ()
    assert not state.enabled["add_tissue_classes"]
    volume = add_volume(scene, "New CT")
    new = add_segmentation(scene, "New", ["nodule", "lung"])
    panel.enter()  # what the module does when it is shown again
    assert panel.state().volume_id == volume.GetID()
    assert names(panel) == ["nodule", "lung"]
    new.GetSegmentation().AddEmptySegment("", "vessel")
    assert names(panel) == ["nodule", "lung", "vessel"]
    assert panel.state().enabled["add_tissue_classes"]


def test_removing_an_input_node_clears_it(scene):
    volume = add_volume(scene)
    segmentation = add_segmentation(scene, "Segments", ["lesion"])
    panel = PanelController(scene, MemorySettings())
    scene.RemoveNode(segmentation)
    scene.RemoveNode(volume)
    state = panel.state()
    assert state.volume_id is None and state.segmentation_id is None and state.roles == ()


def test_predictions_default_to_unused_so_add_case_never_trains_on_them(scene):
    from BackSplitSlicer.case import LESION_SEGMENT_NAME, import_prediction

    volume = add_volume(scene)
    output = add_segmentation(scene, "Mine", ["lesion"])
    import_prediction(np.ones((4, 5, 6), np.uint8), volume, output, show_3d=False)
    panel = PanelController(scene, MemorySettings())
    roles = {r.name: r.role for r in panel.state().roles}
    assert roles == {"lesion": TARGET, LESION_SEGMENT_NAME: UNUSED}


def test_actions_without_a_backend(scene):
    panel = PanelController(scene, MemorySettings())
    enabled = panel.state().enabled
    assert enabled["connect"] and enabled["install"]
    for action in ("stop", "reconnect", "refresh_models", "add_case", "fine_tune", "cancel", "predict",
                   "add_tissue_classes", "import_organ_map", "open_segment_editor"):
        assert not enabled[action], action


def test_local_mode_on_python_3_9_says_so_in_one_line_and_defaults_to_remote(scene):
    panel = PanelController(scene, MemorySettings(), python_version=(3, 9))
    state = panel.state()
    assert state.backend_kind == "Remote"
    assert state.local_mode_note == LOCAL_MODE_NOTE.format(version="3.9") and "\n" not in state.local_mode_note
    panel.set_backend_kind("Local")
    assert not panel.state().enabled["connect"] and not panel.state().enabled["install"]
    panel.connect()
    assert panel.state().message.text.endswith(LOCAL_MODE_NOTE.format(version="3.9"))
    assert panel.state().connection == DISCONNECTED


def test_server_url_and_recent_servers_live_in_the_settings_and_the_token_nowhere(scene, tmp_path):
    from BackSplitLib.vocabulary import DEFAULT_PORT, DEFAULT_SERVER_URL as DEFAULT_SERVER

    settings = MemorySettings()
    panel = PanelController(scene, settings)
    assert panel.state().server_url == DEFAULT_SERVER and DEFAULT_SERVER.endswith(f":{DEFAULT_PORT}")
    panel.set_backend_kind("Remote")
    panel.set_token("secret-token-123456")
    for url in ("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:1"):
        panel.set_server_url(url)
        panel.connect()
        panel.stop()
    assert settings.get(SETTINGS["server_url"]) == "http://127.0.0.1:1"
    assert settings.get(SETTINGS["recent_servers"]) == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert "secret-token" not in repr(settings.values) and "secret-token" not in repr(panel.state())
    scene_file = tmp_path / "scene.mrml"
    scene.SetURL(str(scene_file))
    scene.Commit()
    assert "secret-token" not in scene_file.read_text(encoding="utf-8", errors="replace")
    # A new panel (a new scene, or Slicer restarted) starts from the remembered server.
    again = PanelController(scene, settings)
    assert again.state().server_url == "http://127.0.0.1:1" and again.state().backend_kind == "Remote"


def test_observers_get_plain_data(scene):
    add_segmentation(scene, "Segments", ["lesion"])
    panel = PanelController(scene, MemorySettings())
    seen = Recorder(panel)
    panel.set_training(iterations=12)
    data = seen.states[-1].as_dict()
    assert data["iterations"] == 12 and data["roles"][0]["name"] == "lesion"
    assert set(data["enabled"]) >= {"connect", "fine_tune", "predict"}
    import json

    json.dumps(data)  # a browser face sends it as it is


@pytest.mark.parametrize("kind", ["Remote"])
def test_an_unreachable_server_gives_one_message_and_connect_again(scene, kind):
    from BackSplitSlicer.backends import RemoteBackend, free_port

    panel = PanelController(scene, MemorySettings(), backend_factory=lambda kind, **kw: RemoteBackend(
        kw["url"], retries=0, timeout=2))
    panel.set_backend_kind(kind)
    panel.set_server_url(f"http://127.0.0.1:{free_port()}")
    seen = Recorder(panel)
    panel.connect()
    for _ in range(200):
        panel.tick()
        if panel.state().connection != "connecting":
            break
    errors = {s.message.serial for s in seen.states if s.message is not None}
    assert len(errors) == 1 and panel.state().connection == DISCONNECTED
    assert "check that the server runs" in panel.state().message.hint
    assert panel.state().enabled["connect"] and panel.state().connection != CONNECTED


def test_the_self_tests_qt_free_part_passes_on_real_mrml(scene):
    from BackSplitSlicer.selftest import check_roles_export_and_import

    assert check_roles_export_and_import(scene).startswith("Roles, export and import passed")


def test_a_failed_install_is_reported_with_its_log_never_as_success(scene, tmp_path):
    import venv

    from BackSplitSlicer.backends import LocalBackend

    # A Python without the engine's packages (pyenv's when there, else a fresh venv; both have pip).
    bare = next(iter(sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python"))), None)
    if bare is None:
        venv.create(tmp_path / "bare", with_pip=True)
        bare = tmp_path / "bare" / "bin" / "python"
    bare = str(bare)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    panel = PanelController(scene, MemorySettings(), ask=lambda question: True,
                            backend_factory=lambda kind, **kw: LocalBackend(tmp_path / "data", python=bare))
    panel.set_wheel_folder(str(wheels))  # offline and empty: pip cannot find anything
    panel.install()
    assert panel.state().connection == "installing" and not panel.state().enabled["connect"]
    for _ in range(1200):
        panel.tick()
        if panel.state().connection != "installing":
            break
        time.sleep(0.05)
    state = panel.state()
    assert state.message.level == "error" and "pip exited with code" in state.message.text
    assert "--no-index" in state.install_log and "torch" in state.install_log
    assert not state.status.startswith("Installed")


def test_the_install_step_keeps_slicers_numpy_and_simpleitk(tmp_path):
    import numpy
    import SimpleITK

    from BackSplitSlicer.install import PipInstall

    requirements = tmp_path / "r.txt"
    requirements.write_text("numpy\nSimpleITK\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    install = PipInstall(python=sys.executable, wheel_folder=str(wheels), requirements=requirements)
    pins = install.constraints.read_text(encoding="utf-8", errors="replace").split()
    assert install.wait() == 0, install.log()
    assert f"numpy=={numpy.__version__}" in pins and f"SimpleITK=={SimpleITK.Version_VersionString()}" in pins
    assert "-c" in install.command and str(install.constraints) in install.command
    assert not install.constraints.parent.exists()  # pip's files go when pip is done
