"""``/me`` (who this token is and what it may do) and ``/audit`` (the audit log, admins only)."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from BackSplitLib.permissions import Action
from BackSplitLib.server.access import SIGNED_IN, Requirement, requires
from BackSplitLib.server.accounts import Principal
from BackSplitLib.server.audit import MAX_ROWS, AuditLog
from BackSplitLib.server.state import AppState, app_state

router = APIRouter(tags=["people"])


class Me(BaseModel):
    user: str
    admin: bool = Field(description="an admin may take every action in every project")
    projects: dict[str, str] = Field(description="project -> role (viewer, annotator, trainer, admin)")
    actions: dict[str, list[str]] = Field(description="project -> the actions the role allows; '*': every "
                                                      "project (admins)")


class AuditEntry(BaseModel):
    id: int
    time: float = Field(description="epoch seconds")
    user: str = Field(description="the user's name, or 'unknown' when the token was missing or wrong")
    address: str = Field(description="the client's address")
    action: str
    project: str
    object: str | None = Field(description="the case, job or model id acted on or created")
    request: str = Field(description="method and route, e.g. 'DELETE /cases/{case_id}'")
    outcome: int = Field(description="the HTTP status answered")


@router.get("/me", response_model=Me, dependencies=[SIGNED_IN])
def me(principal: Principal = Depends(Requirement(None))) -> dict:
    """Who this token is, their role per project and the actions each allows (``permissions.may`` reads it)."""
    return principal.me()


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


@router.get("/audit", response_model=list[AuditEntry], dependencies=[requires(Action.read_audit)])
def read_audit(user: str | None = None, project: str | None = None, action: str | None = None,
               since: datetime | None = Query(None, description="ISO 8601 (UTC unless it says) or epoch seconds"),
               until: datetime | None = Query(None, description="ISO 8601 (UTC unless it says) or epoch seconds"),
               limit: int = Query(MAX_ROWS, ge=1, le=MAX_ROWS),
               state: AppState = Depends(app_state)) -> list[dict]:
    """The audit log, oldest first, filtered by user, project, action and time."""
    return AuditLog(state.store).rows(user, project, action, _epoch(since), _epoch(until), limit)
