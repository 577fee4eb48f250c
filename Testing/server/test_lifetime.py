"""No orphans: a server started with a parent pipe exits with its parent (worker included), and a dead
server's data-folder lock is taken over while a live one's is refused with its pid.

The parent here is a real process that is SIGKILLed, as when Slicer crashes. Windows paths of
``BackSplitLib.server.lifetime`` are reviewed, not run, on this Linux machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from server_harness import free_port

from BackSplitLib.errors import BackSplitError
from BackSplitLib.server.lifetime import EXIT_ON_STDIN_EOF_ENV, lock_data_folder, pid_alive

PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    data, port, token_file = sys.argv[1:4]
    server = subprocess.Popen([sys.executable, "-m", "BackSplitLib", "serve", "--data", data, "--port", port,
                               "--token-file", token_file], stdin=subprocess.PIPE,
                              env={**os.environ, "%s": "1"})
    print(server.pid, flush=True)
    time.sleep(600)
""" % EXIT_ON_STDIN_EOF_ENV)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s")
        time.sleep(0.2)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def worker_pids(server_pid: int) -> list[int]:
    """Children of ``server_pid`` (from /proc: the field after the state is the parent's pid)."""
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(fields[1]) == server_pid:
            children.append(int(entry))
    return children


def test_the_server_and_its_worker_exit_when_their_parent_dies_and_the_lock_is_taken_over(tmp_path):
    data, port = tmp_path / "data", free_port()
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(data), str(port), str(tmp_path / "token")],
                              stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}"), 90, "the server did not answer")
        wait_for(lambda: worker_pids(server_pid), 30, "the server started no worker")
        workers = worker_pids(server_pid)
        # While it runs, its lock is refused with its pid.
        with pytest.raises(BackSplitError, match=f"pid {server_pid}"):
            lock_data_folder(data)

        parent.send_signal(signal.SIGKILL)  # a crash: no clean-up code runs in the parent
        parent.wait()
        wait_for(lambda: not pid_alive(server_pid) or _zombie(server_pid), 60, "the server outlived its parent")
        wait_for(lambda: not any(pid_alive(w) and not _zombie(w) for w in workers), 60,
                 "the worker outlived the server")
    finally:
        for pid in [server_pid, *worker_pids(server_pid)]:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    handles = []

    def take_lock() -> bool:
        try:
            handles.append(lock_data_folder(data))
            return True
        except BackSplitError:
            return False

    wait_for(take_lock, 30, "the dead server's lock was not released")  # the OS drops it with the last fd
    assert (data / "server.lock").read_text(encoding="utf-8", errors="replace") == str(os.getpid())
    handles[0].close()


def _zombie(pid: int) -> bool:
    """A dead child not yet reaped by its (dead) parent's reaper still has a pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False
