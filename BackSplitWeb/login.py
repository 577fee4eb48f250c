"""The server token: where the app may take it from, and how a typed one is checked.

``BACKSPLIT_TOKEN`` from the environment is used only when the app listens on a loopback address (one
clinician on their own machine); an app reachable from the network asks every browser for the token and
checks it against the BackSplit server before showing anything. The token lives only in this process's
memory: it is passed to the server as a trigger argument, never written to trame's state, a cookie, local
storage or the URL.
"""

from __future__ import annotations

from collections.abc import Mapping

from BackSplitLib.client import BackSplitClient, BackSplitClientError
from BackSplitLib.errors import BackSplitError
from BackSplitLib.vocabulary import TOKEN_ENV

from BackSplitWeb.security import is_loopback


def startup_token(listen_host: str, environ: Mapping[str, str]) -> str | None:
    """The environment's token when listening on loopback; None otherwise (the page asks for it)."""
    token = environ.get(TOKEN_ENV) or None
    return token if token and is_loopback(listen_host) else None


def check_token(server_url: str, token: str | None, timeout: float = 10.0) -> None:
    """Ask the server for something that needs the token; BackSplitError when it refuses or is unreachable."""
    try:
        BackSplitClient(server_url, token=token or None, timeout=timeout).list_models()
    except BackSplitClientError as e:
        if e.status in (401, 403):
            raise BackSplitError("the server refused this token", "type the token `backsplit serve` uses") from None
        raise BackSplitError(f"the BackSplit server at {server_url} did not answer ({e})",
                             "check that `backsplit serve` runs and the URL") from None
