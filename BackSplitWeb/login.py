"""The server token: where the app may take it from, and how a typed one is checked.

``BACKSPLIT_TOKEN`` from the environment is used only when the app listens on a loopback address (one
clinician on their own machine); an app reachable from the network asks every browser for the token and
checks it against the BackSplit server before showing anything. The token lives only in this process's
memory: it is passed to the server as a trigger argument, never written to trame's state, a cookie, local
storage or the URL.

The environment's copy is taken once at start-up and removed: from ``os.environ`` and from the block the
kernel shows as ``/proc/self/environ`` (``unsetenv`` leaves that block as it was at exec, so a file read of
``/proc/self/environ`` would still find the token; :func:`forget_environment_variable` overwrites it).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from BackSplitLib.client import BackSplitClient, BackSplitClientError
from BackSplitLib.errors import BackSplitError
from BackSplitLib.vocabulary import TOKEN_ENV

from BackSplitWeb.security import is_loopback


log = logging.getLogger("backsplit.web")


def startup_token(listen_host: str, environ: Mapping[str, str]) -> str | None:
    """The environment's token when listening on loopback; None otherwise (the page asks for it)."""
    token = environ.get(TOKEN_ENV) or None
    return token if token and is_loopback(listen_host) else None


def take_startup_token(listen_host: str, environ: MutableMapping[str, str] = os.environ) -> str | None:
    """:func:`startup_token`, then the variable is gone from ``environ`` (and, for the process's own
    environment, from ``/proc/self/environ``): the token stays only in the Python object that holds it."""
    token = startup_token(listen_host, environ)
    environ.pop(TOKEN_ENV, None)
    if environ is os.environ:
        forget_environment_variable(TOKEN_ENV)
    return token


def forget_environment_variable(name: str) -> bool:
    """Overwrite ``name=value`` in the environment block the process started with (what
    ``/proc/self/environ`` shows); Linux only. False when there was nothing to overwrite or it failed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # from field 3 (state) on; the name may hold spaces
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end: fields 50 and 51 (proc(5))
        block = ctypes.string_at(start, end - start)
    except (OSError, ValueError, IndexError):
        log.warning("could not read this process's environment block; %s may stay in /proc/self/environ", name)
        return False
    prefix, found, offset = name.encode() + b"=", False, 0
    for entry in block.split(b"\0"):
        if entry.startswith(prefix):
            ctypes.memset(start + offset, ord("X"), len(entry))  # same length: the block's layout stays
            found = True
        offset += len(entry) + 1
    return found


def check_token(server_url: str, token: str | None, timeout: float = 10.0) -> None:
    """Ask the server who the token is (``GET /me``: any user, whatever their projects; a server from before
    users has no /me and is asked for its models); BackSplitError when it refuses or is unreachable."""
    client = BackSplitClient(server_url, token=token or None, timeout=timeout)
    try:
        try:
            client.me()
        except BackSplitClientError as e:
            if e.status != 404:
                raise
            client.list_models()
    except BackSplitClientError as e:
        if e.status in (401, 403):
            raise BackSplitError("the server refused this token", "type the token `backsplit serve` uses") from None
        raise BackSplitError(f"the BackSplit server at {server_url} did not answer ({e})",
                             "check that `backsplit serve` runs and the URL") from None
