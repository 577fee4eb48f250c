"""Make the README's screenshot of the browser app: a real run, not a drawing.

``python -m BackSplitWeb.screenshot --out Resources/Figures/backsplit-web.png`` (or ``make screenshot``) starts a
`backsplit serve` on loopback, uploads a few phantom cases and trains a model there, starts `backsplit web`
against it, opens a stored case in Debian's Chromium (Playwright), predicts, and saves the page. It needs
the test extra (Playwright) and ``apt-get install -y chromium``; it takes a few minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def _start_server(folder: Path, token: str) -> tuple[subprocess.Popen, str]:
    from BackSplitLib.client import BackSplitClient, BackSplitClientError

    port = _free_port()
    token_file = folder / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    process = subprocess.Popen([sys.executable, "-m", "BackSplitLib", "serve", "--data", str(folder / "server"),
                                "--port", str(port), "--token-file", str(token_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return bool(BackSplitClient(url, token).health())
        except BackSplitClientError:
            return False

    _wait(healthy, 120, "the BackSplit server")
    return process, url


def _train(url: str, token: str, folder: Path, cases: int, iterations: int) -> None:
    import SimpleITK as sitk

    from BackSplitLib.client import BackSplitClient
    from BackSplitLib.phantom import PHANTOM_SCHEMA, make_phantom

    client = BackSplitClient(url, token, timeout=600)
    for seed in range(cases):
        image, label = make_phantom(100 + seed)
        sitk.WriteImage(image, str(folder / f"phantom{seed}_0000.nii.gz"))
        sitk.WriteImage(label, str(folder / f"phantom{seed}.nii.gz"))
        client.upload_case(folder / f"phantom{seed}_0000.nii.gz", folder / f"phantom{seed}.nii.gz", PHANTOM_SCHEMA)
    job = client.create_job(kind="train", iterations=iterations)
    final = client.wait(job["id"], on_event=lambda _e, d: print(f"\rtraining {d['iteration']}/{iterations}",
                                                                end="", flush=True))
    print()
    if final["state"] != "succeeded":
        raise SystemExit(f"training failed: {final.get('error')}")


def _start_web(url: str, token: str, folder: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "BACKSPLIT_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "BackSplitLib", "web", "--port", str(port), "--server", url,
                                "--work-dir", str(folder / "web")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    found: list[str] = []

    def read() -> None:
        for line in process.stdout:
            if re.fullmatch(r"http://\S+/\?secret=\S+", line.strip()):
                found.append(line.strip())

    threading.Thread(target=read, daemon=True).start()
    return process, _wait(lambda: found and found[0], 180, "backsplit web")


def _shoot(page_url: str, out: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.goto(page_url)
        page.locator("#bs-panel").wait_for(timeout=120_000)
        page.locator("#bs-server-info", has_text="Connected").wait_for(timeout=120_000)
        page.click("#bs-cases")
        page.locator(".v-overlay--active .v-list-item", has_text="(").first.click()  # a case, once listed
        try:
            page.locator("#bs-message-line", has_text="opened case").wait_for(timeout=180_000)
        except Exception:
            raise SystemExit(f"the case did not open: {page.locator('#bs-error').inner_text()}") from None
        # The case's own segments are hidden (its fat is yellow too), so the yellow in the views is the prediction.
        page.locator("button:has(.mdi-cursor-default)").last.click()
        rows = page.locator(".v-list-item:has(.mdi-delete-outline)")
        for index in range(rows.count()):
            rows.nth(index).locator(".mdi-eye-outline").first.click()
        _wait(lambda: page.locator(".v-list-item .mdi-eye-off-outline").count() == rows.count(), 60,
              "the case's segments to be hidden")
        page.locator("#bs-predict:not([disabled])").wait_for(timeout=120_000)
        page.click("#bs-predict")
        page.locator("#bs-status", has_text="Prediction done").wait_for(timeout=300_000)
        page.wait_for_timeout(3000)  # let the views stream their last frame before the picture
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("Resources/Figures/backsplit-web.png"))
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    import secrets

    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="backsplit-screenshot-") as tmp:
        folder = Path(tmp)
        server, url = _start_server(folder, token)
        web = None
        try:
            _train(url, token, folder, args.cases, args.iterations)
            web, page_url = _start_web(url, token, folder)
            _shoot(page_url, args.out, args.chromium)
            print(f"wrote {args.out}")
        finally:
            for process in (web, server):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=60)


if __name__ == "__main__":
    main()
