"""Process lifetime on every OS: exit with the parent, one server per data folder, is a process alive.

A child started with a stdin pipe that only its parent holds reads EOF when that parent dies, however it
dies (crash, kill, Windows, where ``os.getppid()`` keeps the dead parent's id): the Slicer panel starts its
local engine that way (with ``BACKSPLIT_EXIT_ON_STDIN_EOF=1``), and the server starts its workers that way.
The data-folder lock is an OS lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows) that the OS
drops when its holder dies, so a dead server's lock is always taken over; the holder's pid is written in
the file for the message when a live server holds it. ``os.kill(pid, 0)`` and ``SIGKILL`` are POSIX only
(on Windows ``os.kill`` *terminates* the process): :func:`pid_alive` and :func:`force_kill` hide that.
The Windows branches are written from the Python documentation and reviewed, not run, here.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from BackSplitLib.errors import BackSplitError

EXIT_ON_STDIN_EOF_ENV = "BACKSPLIT_EXIT_ON_STDIN_EOF"
LOCK_FILE = "server.lock"
WINDOWS = sys.platform == "win32"


def watch_stdin_eof(on_eof: Callable[[], None]) -> threading.Thread:
    """Call ``on_eof`` (from a daemon thread) once stdin reaches end-of-file: the parent is gone."""

    def watch() -> None:
        stream = sys.stdin.buffer if sys.stdin is not None else None
        try:
            while stream is not None and stream.read(1 << 12):
                pass
        except (OSError, ValueError):
            pass
        on_eof()

    thread = threading.Thread(target=watch, name="backsplit-parent-watch", daemon=True)
    thread.start()
    return thread


def stop_self() -> None:
    """Ask this process to shut down gracefully (the handlers uvicorn or the worker installed run)."""
    signal.raise_signal(signal.SIGTERM)


def exit_with_parent_if_asked() -> bool:
    """When started with BACKSPLIT_EXIT_ON_STDIN_EOF=1, stop gracefully once the parent's pipe closes."""
    if os.environ.get(EXIT_ON_STDIN_EOF_ENV) != "1":
        return False
    watch_stdin_eof(stop_self)
    return True


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id exists (without signalling it on any OS)."""
    if not pid:
        return False
    if WINDOWS:
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, int(pid))  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        try:
            ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        finally:
            kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def force_kill(pid: int) -> None:
    """Kill now: SIGKILL on POSIX, TerminateProcess on Windows (what ``os.kill`` does there)."""
    try:
        os.kill(pid, signal.SIGTERM if WINDOWS else signal.SIGKILL)
    except (ProcessLookupError, OSError):
        pass


def lock_data_folder(data: Path):
    """One server per data folder (two would run the same queued job twice); returns the open lock file.

    The OS releases the lock when its holder dies, so a crashed server's lock is taken over.
    """
    path = Path(data) / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 (kept open: the lock lives as long as the server)
    try:
        if WINDOWS:
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise BackSplitError(f"another backsplit server (pid {holder or 'unknown'}) is already using {data}",
                             "stop it first, or give this one another --data folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
