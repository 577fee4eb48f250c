"""What a connected page may ask of the app over its WebSocket, before and after sign-in.

A page that presented the launch secret is an authenticated wslink client, and wslink then dispatches any
RPC it names: trame's own (``trame.state.update`` writes any state key, ``trame.trigger`` calls any
trigger, ``trame.lifecycle.update(name)`` calls the controller's ``on_<name>`` callbacks, so
``"server_ready"`` re-runs start-up), trame-rca's view events, and wslink's ``application.exit``. The
secret proves only that the page came from this launch's URL; whether it may touch the scene is decided
by the server token, checked in Python (:attr:`BackSplitWeb.app.WebApp.signed_in`), never by trame state.

:class:`RpcPolicy` is that decision for every RPC, as an allow-list; :func:`install` puts it in front of
every method wslink's handler dispatches, so an RPC this file does not name is refused.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable

log = logging.getLogger("backsplit.web")

# Anytime: reading state, error reports, the views' sizes and codec negotiation (they render nothing the
# page may not see: before sign-in the scene is empty).
ALWAYS = frozenset({"trame.state.get", "trame.force.push", "trame.error.client", "trame.rca.drop",
                    "trame.rca.size", "trame.rca.reset", "trame.rca.video.codecs", "trame.rca.video.negotiate"})
# Only once signed in: interaction with the views (paint, scroll) and content pushed to other clients.
SIGNED_IN = frozenset({"trame.rca.event", "trame.rca.push"})
STATE_UPDATE, TRIGGER, LIFECYCLE = "trame.state.update", "trame.trigger", "trame.lifecycle.update"
# The lifecycle events trame's client itself sends (its page mounted, unmounted, unloaded).
PAGE_LIFECYCLE = frozenset({"client_connected", "client_unmounted", "client_exited"})
# The one trigger a page that has not signed in may call.
SIGN_IN_TRIGGER = "backsplit_login"
# State keys the app owns (sign-in, ticket, panel, messages): the page only shows them.
APP_KEY_PREFIX = "bs_"


class RpcPolicy:
    """Which RPCs (and which of their arguments) a page may use; ``signed_in`` asks the app."""

    def __init__(self, signed_in: Callable[[], bool]):
        self.signed_in = signed_in

    def filter(self, method: str, args: list) -> list | None:
        """The arguments to dispatch ``method`` with, or None when it is refused."""
        if method in ALWAYS:
            return args
        if method in SIGNED_IN:
            return args if self.signed_in() else None
        if method == LIFECYCLE:
            return args if args and args[0] in PAGE_LIFECYCLE else None
        if method == TRIGGER:
            name = args[0] if args else None
            return args if name == SIGN_IN_TRIGGER or (self.signed_in() and isinstance(name, str)) else None
        if method == STATE_UPDATE:
            return [self._writable(args[0] if args else [])]
        return None  # application.exit, application.exit.later, anything added later

    def _writable(self, changes) -> list:
        """The page's state changes the app accepts: none before sign-in, never the app's own keys."""
        if not self.signed_in() or not isinstance(changes, list):
            return []
        return [change for change in changes if isinstance(change, dict) and isinstance(change.get("key"), str)
                and not change["key"].startswith(APP_KEY_PREFIX)]


def install(handler, policy: RpcPolicy) -> None:
    """Guard every RPC of a wslink ``WslinkHandler`` (its ``functionMap``: uri -> (object, function))."""
    function_map = getattr(handler, "functionMap", None)
    if not isinstance(function_map, dict) or not function_map:
        raise RuntimeError("wslink's handler has no RPC table to guard; the web app refuses to start without it")
    for uri, (owner, function) in list(function_map.items()):
        function_map[uri] = (owner, _guarded(uri, function, policy))


def _guarded(uri: str, function, policy: RpcPolicy):
    def refuse():
        log.warning("refused RPC %s from the page", uri)
        return None

    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def guarded_async(owner, *args, **kwargs):
            allowed = policy.filter(uri, list(args))
            return refuse() if allowed is None or kwargs else await function(owner, *allowed)

        return guarded_async

    @functools.wraps(function)
    def guarded(owner, *args, **kwargs):
        allowed = policy.filter(uri, list(args))
        return refuse() if allowed is None or kwargs else function(owner, *allowed)

    return guarded
