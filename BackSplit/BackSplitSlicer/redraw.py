"""What a face redraws when the panel's state changes, decided without Qt.

The controller publishes a whole :class:`PanelState` after every change (a job's progress changes it every
second). Redrawing every widget from it resets what the user is doing: an open model dropdown closes, the
install log scrolls back to the top, the cursor jumps in a field being typed in. These rules say what to
touch; ``Widget.py`` applies them, and tests drive them with states from a real controller.
"""

from __future__ import annotations

from typing import Any

KEEP, APPEND, REPLACE = "keep", "append", "replace"


class Drawn:
    """What a face last drew, part by part: a part is redrawn only when its data changed."""

    def __init__(self) -> None:
        self._shown: dict[str, Any] = {}

    def changed(self, part: str, value: Any) -> bool:
        """True (and remembered) when ``value`` differs from what ``part`` shows; False when it is the same."""
        if part in self._shown and self._shown[part] == value:
            return False
        self._shown[part] = value
        return True

    def grow(self, part: str, text: str) -> tuple[str, str]:
        """:func:`log_update` from what ``part`` shows to ``text`` (then remembered as shown)."""
        update = log_update(self._shown.get(part, ""), text)
        self._shown[part] = text
        return update


def log_update(shown: str, log: str) -> tuple[str, str]:
    """How a log view goes from ``shown`` to ``log``: (KEEP, ""), (APPEND, new lines) when the log only grew
    by whole lines (the view keeps its scroll position), else (REPLACE, log)."""
    if log == shown:
        return KEEP, ""
    if shown and log.startswith(shown + "\n"):
        return APPEND, log[len(shown) + 1:]
    return REPLACE, log


def edits(shown: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The fields whose shown value differs from the state's: only these are written (writing a field the
    user is typing in moves the cursor to its end)."""
    return {name: value for name, value in wanted.items() if shown.get(name) != value}
