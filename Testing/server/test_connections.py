"""Issue 9, connection limits: idle and half-sent connections are closed after --header-timeout, stalled
bodies after --body-timeout, so 300 idle sockets against a server with 256 open files (soft = hard) do
not stop it; the soft open-file limit is raised to the hard one at start; on loopback the Host header
must name a loopback host."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from BackSplitLib.bench.hostile import closed_by_server
from server_harness import case_form, wait_for

IDLE_SOCKETS = 300


def test_300_idle_sockets_are_closed_and_the_server_keeps_serving(strict_server, phantom_cases):
    sockets = []
    try:
        for i in range(IDLE_SOCKETS):
            sock = socket.create_connection(("127.0.0.1", strict_server.port), timeout=5)
            if i % 3 == 1:
                sock.sendall(b"POST /cases HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # a head that never ends
            sockets.append(sock)
        # Header timeout 1 s; the server accepts the backlog as descriptors free up.
        wait_for(lambda: all(closed_by_server(s) for s in sockets), timeout=60, every=0.5,
                 what="the server to close every idle socket")
        assert httpx.get(f"{strict_server.url}/health", timeout=10).status_code == 200
        with strict_server.http() as http:
            files, data = case_form(phantom_cases[0])
            created = http.post("/cases", files=files, data=data)
            assert created.status_code == 201, created.text
            http.delete(f"/cases/{created.json()['id']}")
    finally:
        for sock in sockets:
            sock.close()


def test_a_head_trickled_a_byte_at_a_time_is_cut_at_the_deadline(strict_server):
    sock = socket.create_connection(("127.0.0.1", strict_server.port), timeout=5)
    start = time.monotonic()
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(40):  # one header byte every 0.2 s for up to 8 s
            time.sleep(0.2)
            try:
                sock.sendall(b"X")
            except OSError:
                break
            if closed_by_server(sock):
                break
            sock.setblocking(True)
        elapsed = time.monotonic() - start
    finally:
        sock.close()
    assert elapsed < 5, f"the trickling connection was still open after {elapsed:.1f} s (header timeout 1 s)"


def test_a_stalled_body_is_dropped_and_nothing_is_left_in_staging(strict_server):
    sock = socket.create_connection(("127.0.0.1", strict_server.port), timeout=10)
    try:
        sock.sendall(b"POST /cases HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + strict_server.token.encode()
                     + b"\r\nContent-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n"
                     + b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.nii.gz\"\r\n\r\n" + b"\0" * 50)
        start = time.monotonic()
        sock.settimeout(15)
        received = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - start
    finally:
        sock.close()
    assert elapsed < 10, f"a body stalled for {elapsed:.1f} s was not dropped (body timeout 2 s)"
    wait_for(lambda: not list((strict_server.data / "tmp").iterdir()), timeout=10, what="staging to be cleaned")


@pytest.mark.parametrize("host, status", [("localhost", 200), ("127.0.0.1", 200), ("[::1]", 200),
                                          ("127.0.0.2", 200), ("attacker.example", 403), ("192.168.1.5", 403),
                                          ("localhost.attacker.example", 403)])
def test_a_loopback_server_answers_only_requests_addressed_to_loopback(strict_server, host, status):
    response = httpx.get(f"{strict_server.url}/health", headers={"Host": f"{host}:{strict_server.port}"})
    assert response.status_code == status
    if status == 403:
        assert "loopback" in response.json()["detail"]


def test_the_soft_open_file_limit_is_raised_to_the_hard_one():
    code = ("import resource\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
            "from BackSplitLib.server.connections import raise_open_file_limit\n"
            "print(*raise_open_file_limit(), hard)\n")
    soft, hard, expected = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                   check=True).stdout.split())
    assert soft == hard == expected
