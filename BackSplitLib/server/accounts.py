"""Users of a server and their tokens (issue 24): who a bearer token is, and their role in each project.

A user has a role per project (``user_roles``) or is an admin of every project (``users.admin``). Only a
hash of each token is stored (``hash_token``), so the database, its backups and its logs never hold a
working token: the token is printed once by ``backsplit users add`` / ``rotate``. Revoking or rotating
takes effect at once on every API process, because every request looks its token up in the database (one
indexed read; no cache).

The operator's token (``backsplit serve``'s token file or ``BACKSPLIT_TOKEN``) is not in the table: each API
process holds it and it names the admin :data:`OPERATOR`; the name is reserved.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field

from sqlalchemy import delete, insert, select, update

from BackSplitLib.errors import BackSplitError
from BackSplitLib.permissions import ACTIONS, DEFAULT_PROJECT, ROLE_ACTIONS, ROLES, Role, may
from BackSplitLib.server.database import projects, user_roles, users
from BackSplitLib.server.store import Store

OPERATOR = "operator"  # the admin that the operator's token file / BACKSPLIT_TOKEN stands for
TOKEN_BYTES = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """SHA-256 of the token, hex. A slow password hash (bcrypt, scrypt) defends guessable secrets; these
    tokens are 256 random bits, so no dictionary exists and one fast hash is already beyond brute force.
    A fast hash also lets every request look its token up by an index, which is what makes revocation
    immediate on every API process."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who made a request: a user's name, whether they are an admin, and their role in each project."""

    name: str
    admin: bool = False
    projects: dict[str, str] = field(default_factory=dict)

    def may(self, project: str, action: str) -> bool:
        return may(self.me(), project, action)

    def role(self, project: str) -> str | None:
        return Role.admin.value if self.admin else self.projects.get(project)

    def me(self) -> dict:
        """The ``GET /me`` body: ``{"user", "admin", "projects": {PROJECT: ROLE}, "actions": {PROJECT: [...]}}``;
        an admin's ``actions`` has the key ``"*"`` (every project)."""
        actions = {project: sorted(ROLE_ACTIONS[role]) for project, role in self.projects.items()}
        if self.admin:
            actions["*"] = sorted(ACTIONS)
        return {"user": self.name, "admin": self.admin, "projects": dict(self.projects), "actions": actions}


OPERATOR_PRINCIPAL = Principal(OPERATOR, admin=True)


def check_name(name: str, what: str = "user name") -> str:
    if not _NAME.fullmatch(name or ""):
        raise BackSplitError(f"{what} {name!r} is not allowed",
                             "use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise BackSplitError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


class Accounts:
    """The users table of a store."""

    def __init__(self, store: Store):
        self.store = store

    def add(self, name: str, role: str, project: str = DEFAULT_PROJECT) -> str:
        """A new user with ``role`` in ``project`` (an admin: every project); returns their token (shown once)."""
        check_name(name)
        check_role(role)
        if name == OPERATOR:
            raise BackSplitError(f"the name {OPERATOR!r} is the operator's token file / BACKSPLIT_TOKEN",
                                 "choose another name")
        token, now = new_token(), time.time()
        with self.store.write() as db:
            _check_project(db, project)
            if db.execute(select(users.c.name).where(users.c.name == name)).first() is not None:
                raise BackSplitError(f"user {name!r} exists already",
                                     f"'backsplit users grant {name} --role ROLE --project P' adds a role; "
                                     f"'backsplit users rotate {name}' gives a new token")
            db.execute(insert(users).values(name=name, admin=int(role == Role.admin), token_hash=hash_token(token),
                                            created=now, token_created=now))
            if role != Role.admin:
                db.execute(insert(user_roles).values(user=name, project=project, role=role))
        return token

    def grant(self, name: str, role: str, project: str = DEFAULT_PROJECT) -> None:
        """Give an existing user ``role`` in ``project`` (replacing their role there); ``admin``: every project."""
        check_role(role)
        with self.store.write() as db:
            self._existing(db, name)
            _check_project(db, project)
            if role == Role.admin:
                db.execute(update(users).where(users.c.name == name).values(admin=1))
                return
            db.execute(delete(user_roles).where(user_roles.c.user == name, user_roles.c.project == project))
            db.execute(insert(user_roles).values(user=name, project=project, role=role))

    def revoke(self, name: str) -> None:
        """The user's token stops working at once (on every API process); ``rotate`` gives them a new one."""
        with self.store.write() as db:
            self._existing(db, name)
            db.execute(update(users).where(users.c.name == name).values(token_hash=None, revoked=time.time()))

    def rotate(self, name: str) -> tuple[str, bool]:
        """A new token for the user (the old one stops working at once). Returns (token, was_revoked)."""
        token = new_token()
        with self.store.write() as db:
            was_revoked = self._existing(db, name)["revoked"] is not None
            db.execute(update(users).where(users.c.name == name).values(
                token_hash=hash_token(token), token_created=time.time(), revoked=None))
        return token, was_revoked

    def list(self) -> list[dict]:
        """Every user: name, admin, projects {project: role}, created, token_created, revoked (never a hash)."""
        with self.store.read() as db:
            rows = db.execute(select(users.c.name, users.c.admin, users.c.created, users.c.token_created,
                                     users.c.revoked).order_by(users.c.name)).mappings().all()
            roles = db.execute(select(user_roles.c.user, user_roles.c.project, user_roles.c.role)).all()
        projects: dict[str, dict[str, str]] = {}
        for user, project, role in roles:
            projects.setdefault(user, {})[project] = role
        return [{**dict(row), "admin": bool(row["admin"]), "projects": projects.get(row["name"], {})} for row in rows]

    def identify(self, token: str) -> Principal | None:
        """The user whose token this is, or None (unknown or revoked)."""
        with self.store.read() as db:
            row = db.execute(select(users.c.name, users.c.admin).where(
                users.c.token_hash == hash_token(token), users.c.revoked.is_(None))).first()
            if row is None:
                return None
            roles = db.execute(select(user_roles.c.project, user_roles.c.role)
                               .where(user_roles.c.user == row.name)).all()
        return Principal(row.name, bool(row.admin), {project: role for project, role in roles})

    @staticmethod
    def _existing(db, name: str):
        row = db.execute(select(users).where(users.c.name == name)).mappings().first()
        if row is None:
            raise BackSplitError(f"there is no user {name!r}", "'backsplit users list' shows the users")
        return row


def _check_project(db, project: str) -> None:
    """A role is for a project of this store: a typo must not grant a role in a project nobody can reach."""
    known = list(db.execute(select(projects.c.name).order_by(projects.c.created, projects.c.name)).scalars())
    if project not in known:
        shown = repr(project)[:80]
        raise BackSplitError(f"project {shown} does not exist on this server (its projects: {', '.join(known)})",
                             "pick one of those, or create the project first: "
                             "'backsplit remote projects --create NAME ...'")
