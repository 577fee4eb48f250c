"""The audit log (issue 24): one append-only row per audited or refused request.

Written by the front door (``front_door.py``) after the response: every request whose action is in
``permissions.AUDITED_ACTIONS`` (all but plain reads) and every refusal (401, 403, 429). A row holds the time,
the user (``unknown`` when the token was missing or wrong), the client address, the action, the project, the
object (a case, job or model id from the path, or the id of what the request created), the route and the
HTTP status. Never a token, never image bytes, never a request body. The database refuses UPDATE and
DELETE on the table (migration 0004's triggers).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from sqlalchemy import insert, select

from BackSplitLib.server.database import audit
from BackSplitLib.server.store import Store

UNKNOWN_USER = "unknown"
MAX_ROWS = 10_000  # one GET /audit answer; narrow the filters (since/until) for more


@dataclass(frozen=True)
class AuditRow:
    user: str
    address: str
    action: str
    project: str
    object: str | None
    request: str  # method and route template, e.g. "DELETE /cases/{case_id}"
    outcome: int  # the HTTP status answered


class AuditLog:
    """The audit table of a store: ``record`` appends, ``rows`` reads with filters."""

    def __init__(self, store: Store):
        self.store = store

    def record(self, row: AuditRow) -> None:
        with self.store.write() as db:
            db.execute(insert(audit).values(time=time.time(), **asdict(row)))

    def rows(self, user: str | None = None, project: str | None = None, action: str | None = None,
             since: float | None = None, until: float | None = None, limit: int = MAX_ROWS) -> list[dict]:
        """Rows oldest first, each filter applied when given (``since``/``until``: epoch seconds, inclusive)."""
        query = select(*(column.label(column.key) for column in audit.c)).order_by(audit.c.id)
        for column, value in ((audit.c.user, user), (audit.c.project, project), (audit.c.action, action)):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(audit.c.time >= since)
        if until is not None:
            query = query.where(audit.c.time <= until)
        with self.store.read() as db:
            return [dict(r) for r in db.execute(query.limit(max(1, min(limit, MAX_ROWS)))).mappings()]
