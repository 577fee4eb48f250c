"""A real `backsplit serve`, a real `backsplit web` and Debian's Chromium driven by Playwright, on loopback.

Chromium comes from Debian (`apt-get install -y chromium`; `.ci/run` installs it when missing): Playwright's
own browser download cannot work on these machines. A missing Chromium fails the tests with that command,
it does not skip them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_harness import ServerProcess, free_port  # noqa: E402

CHROMIUM = os.environ.get("BACKSPLIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WEB_MAX_UPLOAD = "8M"  # the phantom case is 4.1 MiB; the oversized upload is 9 MiB
READY_TIMEOUT_S = 120


class WebProcess:
    """`backsplit web` in a subprocess; ``url`` is the line it prints when ready (with the launch secret)."""

    def __init__(self, server_url: str, work: Path, env: dict | None = None, host: str = "127.0.0.1"):
        self.port = free_port()
        self.host = host
        self.lines: list[str] = []
        self.url = ""
        merged = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        env = {k: v for k, v in merged.items() if v is not None}  # None: remove from the environment
        self.process = subprocess.Popen(
            [sys.executable, "-m", "BackSplitLib", "web", "--host", host, "--port", str(self.port),
             "--server", server_url, "--max-upload", WEB_MAX_UPLOAD, "--work-dir", str(work)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, encoding="utf-8")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if re.fullmatch(r"http://\S+/\?secret=\S+", line.strip()):
                self.url = line.strip()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while not self.url:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("backsplit web did not start:\n" + "\n".join(self.lines[-30:]))
            time.sleep(0.1)
        return self.url

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}; install it with: apt-get install -y chromium "
                    "(as root; `.ci/run` does this itself)")
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


@pytest.fixture(scope="module")
def backsplit_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-server")
    server = ServerProcess(root / "data", root / "token", max_upload="64M").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web_app(backsplit_server, tmp_path_factory):
    """`backsplit web` without BACKSPLIT_TOKEN in its environment: the page asks for the token."""
    web = WebProcess(backsplit_server.url, tmp_path_factory.mktemp("web-work"), env={"BACKSPLIT_TOKEN": None})
    web.wait_ready()
    yield web
    web.stop()


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
