"""The role table: cumulative, every action reachable, and ``may`` reading a /me body."""

from BackSplitLib.permissions import ACTIONS, ROLE_ACTIONS, ROLES, may, role_allows


def test_roles_are_cumulative_and_admin_may_everything():
    for lower, higher in zip(ROLES, ROLES[1:]):
        assert ROLE_ACTIONS[lower] < ROLE_ACTIONS[higher]
    assert ROLE_ACTIONS["admin"] == frozenset(ACTIONS)


def test_issue_wording():
    assert role_allows("viewer", "predict") and not role_allows("viewer", "upload_case")
    assert role_allows("annotator", "delete_case") and not role_allows("annotator", "start_job")
    assert role_allows("trainer", "cancel_job") and not role_allows("trainer", "promote_model")
    assert not role_allows(None, "read") and not role_allows("root", "read")


def test_may_reads_a_me_body_per_project():
    me = {"user": "ana", "admin": False, "projects": {"liver": "trainer", "kidney": "viewer"}}
    assert may(me, "liver", "start_job") and not may(me, "kidney", "start_job")
    assert not may(me, "lung", "read") and not may(None, "liver", "read")
    assert may({"user": "op", "admin": True, "projects": {}}, "anything", "manage_users")


def test_least_role_names_who_to_ask_for_and_reads_are_the_only_unaudited_action():
    from BackSplitLib.permissions import AUDITED_ACTIONS, least_role

    assert [least_role(a) for a in ("read", "upload_case", "start_job", "read_audit")] == \
        ["viewer", "annotator", "trainer", "admin"]
    assert least_role("fly") is None
    assert set(ACTIONS) - AUDITED_ACTIONS == {"read"}
