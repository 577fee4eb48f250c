"""``backsplit users ...`` and ``backsplit audit``: run by the operator on the server host, on the server's
store directly (the same ``--data`` and ``--database`` as ``backsplit serve``), not over HTTP.

A new or rotated token goes to stdout alone (``backsplit users add ana --role viewer > ana.token``); what
happened goes to stderr. Only the token's hash is stored: a lost token is replaced with ``users rotate``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from BackSplitLib.cli.app import app, console
from BackSplitLib.cli.remote import DATABASE, _warn_password_on_argv, output
from BackSplitLib.errors import BackSplitError
from BackSplitLib.permissions import ACTIONS, DEFAULT_PROJECT, Role

users_app = typer.Typer(help="Users of a server, their role per project and their tokens (on the server host).",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")

DATA = typer.Option(..., "--data", help="The server's data folder (the --data of 'backsplit serve').")
PROJECT = typer.Option(DEFAULT_PROJECT, "--project",
                       help="The project the role is for (an admin's role covers every project).")
ROLE = typer.Option(..., "--role", case_sensitive=False, help="viewer: list and predict; annotator: + upload and "
                    "delete cases; trainer: + start and cancel jobs; admin: + models, users, audit, every project.")


def open_store(data: Path, database: str | None):
    """The server's store; refuses a folder that holds none (a typo must not create a new, empty store)."""
    from BackSplitLib.server.database import DB_NAME
    from BackSplitLib.server.store import FOLDER_ID_FILE, Store

    _warn_password_on_argv(database)
    if not data.is_dir() or not ((data / FOLDER_ID_FILE).is_file() or (data / DB_NAME).is_file()):
        raise BackSplitError(f"{data} is not a BackSplit server's data folder",
                             "give the --data (and --database) that 'backsplit serve' runs with")
    return Store(data, database)


def _say(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True)


def _accounts(data: Path, database: str | None):
    from BackSplitLib.server.accounts import Accounts

    return Accounts(open_store(data, database))


@users_app.command("add")
def add(name: str = typer.Argument(..., help="The user's name (letters, digits, . _ @ -)."), role: Role = ROLE,
        project: str = PROJECT, data: Path = DATA, database: str = DATABASE) -> None:
    """Add a user with a role; prints their new token once (stdout)."""
    accounts = _accounts(data, database)
    token = accounts.add(name, role.value, project)
    where = "in every project" if role == Role.admin else f"in project '{project}'"
    _say(f"added {name}: {role.value} {where}; their token is below, shown once (only its hash is stored)")
    typer.echo(token)


@users_app.command("grant")
def grant(name: str = typer.Argument(...), role: Role = ROLE, project: str = PROJECT, data: Path = DATA,
          database: str = DATABASE) -> None:
    """Give an existing user a role in a project (replaces their role there; admin: every project)."""
    _accounts(data, database).grant(name, role.value, project)
    _say(f"{name} is now {role.value} " + ("in every project" if role == Role.admin else f"in project '{project}'"))


@users_app.command("revoke")
def revoke(name: str = typer.Argument(...), data: Path = DATA, database: str = DATABASE) -> None:
    """Stop a user's token now, on every API process of this store ('users rotate' gives a new one)."""
    _accounts(data, database).revoke(name)
    _say(f"revoked {name}'s token: every request with it is refused from now on")


@users_app.command("rotate")
def rotate(name: str = typer.Argument(...), data: Path = DATA, database: str = DATABASE) -> None:
    """Give a user a new token (the old one stops working now); prints it once (stdout)."""
    token, was_revoked = _accounts(data, database).rotate(name)
    _say(f"new token for {name}" + (" (they were revoked; this token reinstates them)" if was_revoked else "")
         + ", shown once below; the old token no longer works")
    typer.echo(token)


@users_app.command("list")
def list_users(data: Path = DATA, database: str = DATABASE,
               as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")) -> None:
    """The users, their roles and token dates (never a token or its hash)."""
    rows = _accounts(data, database).list()
    if as_json:
        output.print_json(json.dumps(rows))
        return
    table = Table("user", "roles", "created", "token issued", "revoked")
    for row in rows:
        roles = "admin (every project)" if row["admin"] else \
            ", ".join(f"{project}: {role}" for project, role in sorted(row["projects"].items()))
        table.add_row(row["name"], roles or "none", _when(row["created"]), _when(row["token_created"]),
                      _when(row["revoked"]))
    output.print(table)
    _say(f"{len(rows)} user{'s' if len(rows) != 1 else ''}; the operator's token file / BACKSPLIT_TOKEN is the admin "
         "'operator' (not listed)")


@app.command("audit")
def audit(data: Path = DATA, database: str = DATABASE,
          user: str = typer.Option(None, "--user", help="Only this user ('unknown': refused without a valid token)."),
          project: str = typer.Option(None, "--project", help="Only this project."),
          action: str = typer.Option(None, "--action", help=f"Only this action ({', '.join(ACTIONS)})."),
          since: str = typer.Option(None, "--since", help="From this time (ISO 8601, UTC unless it says)."),
          until: str = typer.Option(None, "--until", help="Up to this time (ISO 8601, UTC unless it says)."),
          as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table.")) -> None:
    """The audit log: who did, or was refused, what, when, from where (oldest first)."""
    from BackSplitLib.server.audit import AuditLog

    if action is not None and action not in ACTIONS:
        raise BackSplitError(f"--action {action} is not one of {', '.join(ACTIONS)}")
    rows = AuditLog(open_store(data, database)).rows(user, project, action, _epoch(since, "--since"),
                                                     _epoch(until, "--until"))
    if as_json:
        for row in rows:
            output.print(json.dumps(row), highlight=False, soft_wrap=True)
    else:
        table = Table("time (UTC)", "user", "address", "action", "project", "object", "request", "outcome")
        for row in rows:
            # escape: ids, projects and unmatched paths were chosen by clients, never markup to render
            table.add_row(_when(row["time"]), *(escape(row[k] or "") for k in (
                "user", "address", "action", "project", "object", "request")), str(row["outcome"]))
        output.print(table)
    _say(f"{len(rows)} audit row{'s' if len(rows) != 1 else ''}")


def _when(epoch: float | None) -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _epoch(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BackSplitError(f"{option} {text!r} is not a date and time",
                             "use ISO 8601, e.g. 2026-12-04T09:30") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
