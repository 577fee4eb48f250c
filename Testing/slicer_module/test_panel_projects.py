"""Projects and who is signed in, through the panel controller on real MRML against a real `backsplit serve`
(issue 24): the picker lists the server's projects and sends every call to the chosen one (remembered in the
settings), a case added in project B is not in A, a new project takes this segmentation's roles as its
schema (a taken or bad name says what to do), and the enabled actions follow the role table.

One server for the module (each test uses its own projects); nothing trains here, so each test takes seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_harness import ServerProcess  # noqa: E402
from test_panel_server import connected_panel, run_until  # noqa: E402

from BackSplitLib.client import BackSplitClient  # noqa: E402
from BackSplitLib.schema import LabelSchema  # noqa: E402
from BackSplitSlicer.panel import CONNECTED, SETTINGS, MemorySettings, PanelController  # noqa: E402
from BackSplitSlicer.panel_state import CHOOSE_PROJECT, PanelState, enabled_actions  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("projects-server")
    served = ServerProcess(root / "data", root / "token").start()
    yield served
    served.stop()


def phantom(scene):
    from BackSplitSlicer.selftest import phantom_scene

    return phantom_scene(seed=3, scene=scene)


def test_the_picker_lists_projects_and_a_case_added_in_b_is_not_in_a(scene, server):
    client = BackSplitClient(server.url, server.token)
    client.create_project("kidney-cysts", LabelSchema.from_names("lesion", ["kidney"]))
    phantom(scene)
    settings = MemorySettings()
    panel = connected_panel(scene, server, settings)
    state = panel.state()
    assert state.project == "default" and state.me["admin"] and state.identity.startswith("signed in ")
    choices = dict(state.projects)
    assert choices["kidney-cysts"] == "kidney-cysts (lesion; no model yet; 0 cases)"
    assert choices["default"].startswith("default (")
    assert state.projects_note == "" and state.enabled[CHOOSE_PROJECT]

    panel.choose_project("kidney-cysts")
    state = panel.state()
    assert state.project == "kidney-cysts" and state.message is None, state.message
    assert panel.backend.client.project == "kidney-cysts" and settings.get(SETTINGS["project"]) == "kidney-cysts"
    panel.add_case()
    run_until(panel, lambda s: s.status.startswith("Case added") and s.cases, 60, "the upload")
    (case_id, _), = panel.state().cases  # the picker lists the chosen project's cases
    assert [c["id"] for c in client.in_project("kidney-cysts").list_cases()] == [case_id]
    assert client.list_cases() == []  # not in the default project
    run_until(panel, lambda s: "1 case)" in dict(s.projects)["kidney-cysts"], 30, "the picker's count")

    panel.choose_project("default")
    run_until(panel, lambda s: s.project == "default" and not s.busy, 30, "back to the default project")
    assert panel.state().cases == () and panel.backend.client.project == "default"
    panel.choose_project("kidney-cysts")
    panel.stop()

    again = connected_panel(scene, server, settings)  # the chosen project is remembered
    assert again.state().project == "kidney-cysts" and again.backend.client.project == "kidney-cysts"
    assert [c for c, _ in again.state().cases] == [case_id]
    again.stop()


def test_a_remembered_project_that_is_gone_falls_back_to_default_and_says_so(scene, server):
    panel = connected_panel(scene, server, MemorySettings({SETTINGS["project"]: "no-such-project"}))
    state = panel.state()
    assert state.project == "default" and panel.backend.client.project == "default"
    assert state.projects_note == "Project no-such-project is not on this server (any more): using default."
    panel.stop()


def test_a_new_project_takes_the_segmentations_roles_and_a_taken_or_bad_name_says_what_to_do(scene, server):
    from BackSplitSlicer.case import schema_from_roles

    _, segmentation = phantom(scene)
    panel = connected_panel(scene, server)
    assert panel.state().enabled["create_project"]
    panel.set_role(segmentation.GetSegmentation().GetSegmentIdBySegmentName("bowel"), "unused")
    panel.create_project("Liver Mets")  # refused before anything is sent
    message = panel.state().message
    assert message.level == "error" and "project name 'Liver Mets' is not valid" in message.text
    assert message.hint == "type a name like liver-mets" and message.action == "create_project"

    panel.create_project("liver-mets")
    run_until(panel, lambda s: s.status.startswith("Project liver-mets created"), 60, "the new project")
    state = panel.state()
    assert state.message is None  # the earlier error went with the success
    assert state.project == "liver-mets" and panel.backend.client.project == "liver-mets"
    stored = BackSplitClient(server.url, server.token).get_project("liver-mets")
    expected = schema_from_roles(segmentation)
    assert stored["schema"] == expected.to_dict() and stored["target"] == "lesion"
    assert {"liver", "kidney_left"} <= set(expected.auxiliary_names) and "bowel" not in expected.labels
    liver = segmentation.GetSegmentation().GetSegment(
        segmentation.GetSegmentation().GetSegmentIdBySegmentName("liver"))
    assert stored["schema"]["colors"]["liver"] == [round(255 * c) for c in liver.GetColor()]
    assert "liver-mets" in dict(state.projects)
    # Add case in the new project writes its classes (the project's schema, no model yet).
    panel.add_case()
    run_until(panel, lambda s: s.status.startswith("Case added"), 60, "the upload")

    panel.create_project("liver-mets")  # taken: the server's 409, with what to do
    run_until(panel, lambda s: s.message is not None, 30, "the refusal")
    message = panel.state().message
    assert "creating project 'liver-mets' failed: project 'liver-mets' exists already" in message.text
    assert message.hint == "pick it in the Project list, or choose another name"
    panel.stop()


def test_the_role_table_decides_what_is_enabled_in_the_chosen_project():
    viewer = {"user": "vera", "admin": False, "projects": {"liver": "viewer", "lung": "trainer"}}
    base = dict(volume_id="v", segmentation_id="s", connection=CONNECTED, projects=(("liver", ""), ("lung", "")),
                me=viewer, unpromoted={"model_id": "m", "reason": "r"})
    enabled = enabled_actions(PanelState(project="liver", **base), True, False, set())
    assert enabled["predict"] and enabled["refresh_models"] and enabled[CHOOSE_PROJECT]
    assert not any(enabled[a] for a in ("add_case", "fine_tune", "promote", "create_project"))
    assert not enabled_actions(PanelState(project="liver", **base), True, True, set())["cancel"]
    enabled = enabled_actions(PanelState(project="lung", **base), True, False, set())
    assert enabled["add_case"] and enabled["fine_tune"] and not enabled["promote"]
    assert enabled_actions(PanelState(project="lung", **base), True, True, set())["cancel"]
    assert not any(enabled_actions(PanelState(project="kidney", **base), True, False, set())[a]
                   for a in ("predict", "add_case", "refresh_models"))  # no role there
    unknown = enabled_actions(PanelState(project="liver", **{**base, "me": None}), True, False, set())
    assert not unknown["predict"]  # before GET /me has answered, nothing that needs a role


def test_connecting_picks_a_project_the_user_has_a_role_in_and_says_why():
    from BackSplitSlicer.backend_session import LEGACY_PROJECTS_NOTE, pick_project

    projects = [{"name": "default"}, {"name": "liver"}, {"name": "lung"}]
    lung_only = {"user": "lu", "admin": False, "projects": {"lung": "trainer"}}
    assert pick_project("lung", projects, lung_only) == ("lung", "")
    assert pick_project("default", projects, lung_only) == ("lung", "You have no role in project default: using lung.")
    assert pick_project("gone", projects, lung_only) == ("lung", "Project gone is not on this server (any more): "
                                                                  "using lung.")
    nobody = {"user": "no", "admin": False, "projects": {}}
    assert pick_project("liver", projects, nobody)[1] == "You have no role in any project of this server; ask an admin."
    admin = {"user": "ad", "admin": True, "projects": {}}
    assert pick_project("liver", projects, admin) == ("liver", "")
    assert pick_project("liver", None, admin) == ("default", LEGACY_PROJECTS_NOTE)


def test_the_local_engine_offers_no_project_picker_and_says_why(scene, server, tmp_path):
    """A LocalBackend pointed at the module's server (its process is not started here): one project."""
    from BackSplitSlicer.backend_session import LOCAL_PROJECTS_NOTE
    from BackSplitSlicer.backends import LocalBackend

    backend = LocalBackend(tmp_path, port=int(server.url.rsplit(":", 1)[1]), token=server.token)
    session = backend.open_session("kidney-cysts")
    assert (session.projects, session.project, session.note) == (None, "default", LOCAL_PROJECTS_NOTE)
    assert backend.client.project == "default" and session.description.startswith("Local engine: ")
    panel = PanelController(scene, MemorySettings())
    panel._on_session(session)  # what connecting does with it
    state = panel.state()
    assert state.projects == () and state.projects_note == LOCAL_PROJECTS_NOTE and not state.enabled[CHOOSE_PROJECT]


def add_user(server, name: str, role: str, project: str = "default") -> str:
    """A user of the server's store (what `backsplit users add` does, in-process: faster); returns the token."""
    from BackSplitLib.server.accounts import Accounts
    from BackSplitLib.server.store import Store

    return Accounts(Store(server.data)).add(name, role, project)


def test_a_viewer_is_told_who_they_are_and_cannot_add_cases_or_fine_tune(scene, server):
    BackSplitClient(server.url, server.token).create_project("vera-notes", LabelSchema.from_names("lesion", ["liver"]))
    token = add_user(server, "vera", "viewer", "default")
    cases_before = BackSplitClient(server.url, server.token).list_cases()
    from BackSplitLib.server.accounts import Accounts
    from BackSplitLib.server.store import Store

    Accounts(Store(server.data)).grant("vera", "annotator", "vera-notes")  # and an annotator there
    phantom(scene)
    panel = connected_panel(scene, server, token=token)
    state = panel.state()
    assert state.identity == "signed in as vera (viewer in default)" and not state.me["admin"]
    assert state.enabled["predict"] and state.enabled["refresh_models"] and state.enabled[CHOOSE_PROJECT]
    assert not any(state.enabled[a] for a in ("add_case", "fine_tune", "create_project", "promote"))

    panel.add_case()  # as a stale button would: the server refuses, and the panel says it in the user's words
    run_until(panel, lambda s: s.message is not None and not s.busy, 30, "the refusal")
    message = panel.state().message
    assert message.text == "Uploading case failed: your role viewer in default cannot add cases; ask an admin"
    assert message.hint is None and "403" not in message.text
    assert BackSplitClient(server.url, server.token).list_cases() == cases_before  # nothing stored

    panel.choose_project("vera-notes")  # an annotator there: Add case, not Fine-tune
    state = panel.state()
    assert state.identity == "signed in as vera (annotator in vera-notes)"
    assert state.enabled["add_case"] and not state.enabled["fine_tune"]
    panel.stop()
