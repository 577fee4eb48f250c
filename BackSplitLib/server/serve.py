"""Starting the service: the API token, the loopback rule for --no-auth, the data folder's permissions, the
open-file limit, and uvicorn with the connection guards."""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import replace
from pathlib import Path

from BackSplitLib.atomic import write_text_atomic
from BackSplitLib.errors import BackSplitError
from BackSplitLib.server.connections import is_loopback
from BackSplitLib.server.database import check_url, make_url
from BackSplitLib.server.lifetime import exit_with_parent_if_asked, lock_data_folder
from BackSplitLib.server.limits import Limits
from BackSplitLib.vocabulary import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV

TOKEN_FILE = "token"
TOKEN_BYTES = 32
MIN_TOKEN_LENGTH = 16


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """The token in ``path``, or a new random one written there with mode 0600. Returns (token, created)."""
    if path.is_file():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise BackSplitError(f"token file {path} can be read or changed by other users (mode {mode:o})",
                                 f"run 'chmod 600 {path}' and start again")
        token = path.read_text().strip()
        if len(token) < MIN_TOKEN_LENGTH:
            raise BackSplitError(f"token file {path} holds a token shorter than {MIN_TOKEN_LENGTH} characters",
                                 "delete the file to have a new token generated")
        return token, False
    token = secrets.token_urlsafe(TOKEN_BYTES)
    # atomic_file creates its temporary file with mode 0600 (mkstemp): the token is never world-readable.
    write_text_atomic(path, token + "\n")
    return token, True


def token_from_environment() -> str | None:
    """The token in BACKSPLIT_TOKEN when set (it wins over the token file), checked for length."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise BackSplitError(f"{TOKEN_ENV} holds a token shorter than {MIN_TOKEN_LENGTH} characters",
                             "use a long random token, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token


def prepare_data_folder(data: Path) -> Path:
    """The data folder, private: mode 0700 on its root and umask 077 for everything written later (cases
    are patient images). Only the root is changed: a recursive chmod of a large store would take long."""
    os.umask(0o077)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(data.stat().st_mode) != 0o700:
        data.chmod(0o700)
    return data


def serve(data: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token_file: Path | None = None,
          no_auth: bool = False, max_upload: int = Limits.max_upload, workers: int | None = None,
          echo=print, limits: Limits | None = None, database: str | None = None) -> None:
    """Create the data folder (database, token) on first start and run the API with uvicorn until stopped.

    ``database``: a PostgreSQL URL for a department (several API processes and ``backsplit worker``
    machines share it and the data folder); default: SQLite in the data folder, one server per folder."""
    import uvicorn

    from BackSplitLib.server.app import create_app
    from BackSplitLib.server.connections import guarded_protocol, raise_open_file_limit

    limits = replace(limits or Limits(), max_upload=max_upload)
    if no_auth and not is_loopback(host):
        raise BackSplitError(f"--no-auth is only allowed on a loopback host (127.0.0.1, ::1, localhost), not {host}",
                             "drop --no-auth and give clients the token")
    data = prepare_data_folder(Path(data))
    if database is not None:
        check_url(database)
    if database is None or make_url(database).get_backend_name() == "sqlite":
        lock = lock_data_folder(data)  # held until the process exits  # noqa: F841
    # else several API processes share the folder by design; the database orders their writes.
    token = None
    if no_auth:
        echo("warning: authentication is off (--no-auth); only this machine can connect")
    elif (token := token_from_environment()) is not None:
        echo(f"API token: from the environment ({TOKEN_ENV})")
    else:
        path = Path(token_file) if token_file else data / TOKEN_FILE
        token, created = load_or_create_token(path)
        if created:
            echo(f"API token (shown once; also in {path}, mode 0600): {token}")
        else:
            echo(f"API token: read from {path}")
    raise_open_file_limit()
    app = create_app(data, token, max_upload=max_upload, workers=workers, limits=limits,
                     loopback_only=is_loopback(host), database=database)
    echo(f"BackSplit server on http://{host}:{port} (docs at /docs), data in {data}, jobs in "
         f"{app.state.backsplit.store.describe()}")
    if exit_with_parent_if_asked():
        echo("exits when its parent's stdin pipe closes (BACKSPLIT_EXIT_ON_STDIN_EOF=1)")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30,
                            http=guarded_protocol(limits.header_timeout, limits.body_timeout))
    uvicorn.Server(config).run()
