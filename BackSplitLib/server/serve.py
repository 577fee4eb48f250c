"""Starting the service: the API token, the loopback rule for --no-auth, and uvicorn."""

from __future__ import annotations

import ipaddress
import secrets
import stat
import sys
from pathlib import Path

from BackSplitLib.atomic import write_text_atomic
from BackSplitLib.errors import BackSplitError
from BackSplitLib.server.lifetime import exit_with_parent_if_asked, lock_data_folder
from BackSplitLib.vocabulary import DEFAULT_HOST, DEFAULT_PORT

TOKEN_FILE = "token"
TOKEN_BYTES = 32


def is_loopback(host: str) -> bool:
    """True for localhost / 127.x / ::1: the only hosts on which --no-auth is allowed."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """The token in ``path``, or a new random one written there with mode 0600. Returns (token, created)."""
    if path.is_file():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            print(f"warning: token file {path} is readable by other users (mode {mode:o}); "
                  f"run 'chmod 600 {path}'", file=sys.stderr)
        token = path.read_text().strip()
        if len(token) < 16:
            raise BackSplitError(f"token file {path} holds a token shorter than 16 characters",
                                 "delete the file to have a new token generated")
        return token, False
    token = secrets.token_urlsafe(TOKEN_BYTES)
    # atomic_file creates its temporary file with mode 0600 (mkstemp): the token is never world-readable.
    write_text_atomic(path, token + "\n")
    return token, True


def serve(data: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token_file: Path | None = None,
          no_auth: bool = False, max_upload: int = 1 << 30, workers: int | None = None,
          echo=print) -> None:
    """Create the data folder (database, token) on first start and run the API with uvicorn until stopped."""
    import uvicorn

    from BackSplitLib.server.app import create_app

    if no_auth and not is_loopback(host):
        raise BackSplitError(f"--no-auth is only allowed on a loopback host (127.0.0.1, ::1, localhost), not {host}",
                             "drop --no-auth and give clients the token")
    data = Path(data)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)  # cases are patient images
    lock = lock_data_folder(data)  # held until the process exits  # noqa: F841
    token = None
    if not no_auth:
        path = Path(token_file) if token_file else data / TOKEN_FILE
        token, created = load_or_create_token(path)
        if created:
            echo(f"API token (shown once; also in {path}, mode 0600): {token}")
        else:
            echo(f"API token: read from {path}")
    else:
        echo("warning: authentication is off (--no-auth); only this machine can connect")
    app = create_app(data, token, max_upload=max_upload, workers=workers)
    echo(f"BackSplit server on http://{host}:{port} (docs at /docs), data in {data}")
    if exit_with_parent_if_asked():
        echo("exits when its parent's stdin pipe closes (BACKSPLIT_EXIT_ON_STDIN_EOF=1)")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
