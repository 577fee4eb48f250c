"""A hostile client against `backsplit web` (issue 19): raw WebSockets speaking wslink, raw HTTP.

Two real app processes on loopback: one that asks every page for the server token (nobody signs in
here), one started with BACKSPLIT_TOKEN (signed in from the start, so uploads are open). What is checked is
what the issue's probes did: a wrong secret that held the app, trame state and lifecycle messages that
granted or re-ran things, the page at another spelling of its path, files whose headers lie, and the
token in the process's environment.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import zlib
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import aiohttp
import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import WebProcess
from server_harness import free_port, wait_for
from wslink_client import WslinkClient

TOKEN = "hostile-test-token-4f1d9"  # the signed-in app's token (its server URL has no server)
VOLUME_SHAPE = (8, 16, 16)  # (z, y, x)
BOMB_SIZES = (1024, 1024, 384)  # 384 MiB of uint8 zeros: ~380 KiB as gzip
BOMB_MEMORY_LIMIT = 100 << 20  # the app's peak memory may grow this much at most while refusing it
@pytest.fixture(scope="module")
def apps(backsplit_server, tmp_path_factory):
    """Both apps, started together (each takes seconds to load VTK): the one that asks for the token talks
    to a real server; nothing listens at the other's server URL (it never needs it here)."""
    asking = WebProcess(backsplit_server.url, tmp_path_factory.mktemp("asking-work"), env={"BACKSPLIT_TOKEN": None})
    work = tmp_path_factory.mktemp("token-work")
    with_token = WebProcess(f"http://127.0.0.1:{free_port()}", work, env={"BACKSPLIT_TOKEN": TOKEN})
    with_token.work = work
    try:
        asking.wait_ready()
        with_token.wait_ready()
        yield {"asking": asking, "token": with_token}
    finally:
        asking.stop()
        with_token.stop()


@pytest.fixture(scope="module")
def asking(apps):
    return apps["asking"]


@pytest.fixture(scope="module")
def signed_in(apps):
    return apps["token"]


def secret_of(app: WebProcess) -> str:
    return parse_qs(urlparse(app.url).query)["secret"][0]


def run(coroutine):
    return asyncio.run(coroutine)


@asynccontextmanager
async def page(app: WebProcess):
    """A WebSocket that said hello with the launch secret, as trame's page does; yields (client, ticket)."""
    async with WslinkClient(app.port, app.origin) as client:
        answer = await client.hello(secret_of(app))
        assert "result" in answer, answer
        ticket = await _ticket(client)
        yield client, ticket


async def _ticket(client: WslinkClient) -> str:
    for _ in range(50):
        ticket = (await client.state()).get("bs_ticket")
        if ticket:
            return ticket
        await asyncio.sleep(0.1)
    raise AssertionError("the app gave the page no ticket")


def page_status(app: WebProcess, path: str) -> int:
    """Status of GET ``path`` sent exactly as written (no client-side normalisation of the path)."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    conn.request("GET", path, headers={"Host": f"127.0.0.1:{app.port}"})
    status = conn.getresponse().status
    conn.close()
    return status


def upload(app: WebProcess, ticket: str, data: bytes, name: str, kind: str) -> httpx.Response:
    return httpx.post(f"{app.origin}/backsplit/upload", params={"kind": kind, "name": name}, content=data,
                      headers={"Origin": app.origin, "X-BackSplit-Ticket": ticket,
                               "Content-Type": "application/octet-stream"}, timeout=120)


def peak_memory(app: WebProcess) -> int:
    """The app process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{app.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


# ------------------------------------------------------------------------------- files the tests send
def nrrd(sizes: tuple[int, ...], data: bytes, encoding: str = "raw", extra: str = "") -> bytes:
    header = (f"NRRD0004\ntype: unsigned char\ndimension: {len(sizes)}\nspace: left-posterior-superior\n"
              f"sizes: {' '.join(map(str, sizes))}\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
              f"kinds: domain domain domain\nencoding: {encoding}\nspace origin: (0,0,0)\n{extra}\n")
    return header.encode() + data


def gzip_of_zeros(size: int) -> bytes:
    """``size`` zero bytes as one gzip stream, compressed a MiB at a time."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    out = [packer.compress(zeros) for _ in range(size >> 20)]
    return b"".join(out) + packer.compress(bytes(size & ((1 << 20) - 1))) + packer.flush()


@pytest.fixture(scope="module")
def volume_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("hostile-volume") / "volume.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(np.prod(VOLUME_SHAPE), dtype=np.uint8).reshape(VOLUME_SHAPE)),
                    str(path))
    return path.read_bytes()


# ---------------------------------------------------------------------------- the secret and the slot
def test_a_wrong_secret_is_refused_closed_at_once_and_does_not_hold_the_app(asking):
    async def scenario():
        async with WslinkClient(asking.port, asking.origin) as client:
            answer = await client.hello("not-the-secret")
            assert answer["error"]["message"] == "Authentication failed"
            assert page_status(asking, f"/index.html?secret={secret_of(asking)}") == 200  # not 409 "in use"
            assert await client.closed_within(2.0), "the app kept a wrong-secret WebSocket open"

    run(scenario())


def test_a_websocket_that_says_nothing_does_not_hold_the_app(asking):
    async def scenario():
        async with WslinkClient(asking.port, asking.origin):
            assert page_status(asking, f"/index.html?secret={secret_of(asking)}") == 200

    run(scenario())


def test_a_websocket_that_never_says_hello_is_closed_after_the_hello_timeout(asking):
    from BackSplitWeb.security import HELLO_TIMEOUT_S

    async def scenario():
        async with WslinkClient(asking.port, asking.origin) as client:
            assert not await client.closed_within(HELLO_TIMEOUT_S / 2), "closed before the hello timeout"
            assert await client.closed_within(HELLO_TIMEOUT_S / 2 + 5.0), "an anonymous WebSocket stayed open"

    run(scenario())

def test_the_connection_that_presented_the_secret_holds_the_app(asking):
    async def scenario():
        async with page(asking):
            assert page_status(asking, f"/index.html?secret={secret_of(asking)}") == 409
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with WslinkClient(asking.port, asking.origin):
                    pass
            assert refused.value.status == 409

    run(scenario())


@pytest.mark.parametrize("path", ["/", "/index.html", "/index.html/", "//index.html", "/./index.html",
                                  "/index.html/.", "/%69ndex.html", "/x/../index.html", "/index.html?secret=",
                                  "/index.html?secret=wrong"])
def test_the_page_needs_the_secret_however_its_path_is_spelled(asking, path):
    assert page_status(asking, path) == 403


# ------------------------------------------------------------------------ what a page may ask over wslink
def test_trame_state_cannot_sign_a_page_in(asking, volume_bytes):
    async def scenario():
        async with page(asking) as (client, ticket):
            await client.call("trame.state.update", [[{"key": "bs_logged_in", "value": True}]])
            state = await client.state()
            assert state["bs_logged_in"] is False
            refused = upload(asking, ticket, volume_bytes, "volume.nii.gz", "volume")
            assert refused.status_code == 403 and "sign in" in refused.json()["detail"]
            facts = httpx.get(f"{asking.origin}/backsplit/state", headers={"X-BackSplit-Ticket": ticket})
            assert facts.status_code == 403
            # The app's triggers other than Sign in do nothing for a page that has not signed in.
            await client.call("trame.trigger", ["bs_list_cases", [], {}])
            await client.call("trame.trigger", ["bs_action", ["reconnect"], {}])
            state = await client.state()
            assert state["bs_error"] == "" and state["bs_panel"]["connection"] != "connected"

    run(scenario())


def test_a_page_cannot_rerun_start_up_or_stop_the_app(asking):
    announced = sum("is ready" in line for line in asking.lines)

    async def scenario():
        async with page(asking) as (client, _):
            for name in ("server_ready", "server_bind", "server_start", "server_exited"):
                await client.call("trame.lifecycle.update", [name])
            await client.call("application.exit", [])
            await client.call("application.exit.later", [0])
            assert (await client.state())["bs_logged_in"] is False  # still answering

    run(scenario())
    assert asking.process.poll() is None, "a page stopped the app"
    assert sum("is ready" in line for line in asking.lines) == announced, "start-up callbacks ran again"
    assert page_status(asking, f"/index.html?secret={secret_of(asking)}") == 200


def test_after_a_signed_in_page_closes_the_next_page_sees_nothing_before_signing_in(asking, backsplit_server,
                                                                                    volume_bytes):
    async def scenario():
        async with page(asking) as (client, ticket):
            await client.call("trame.trigger", ["backsplit_login", [backsplit_server.token], {}])
            assert (await client.state())["bs_logged_in"] is True
            assert upload(asking, ticket, volume_bytes, "patient_volume.nii.gz", "volume").status_code == 200
        async with page(asking) as (client, ticket):
            state = await client.state()
            assert state["bs_logged_in"] is False and state["bs_volume_name"] == ""
            assert "patient_volume" not in str(state)
            facts = httpx.get(f"{asking.origin}/backsplit/state", headers={"X-BackSplit-Ticket": ticket})
            assert facts.status_code == 403

    run(scenario())


# ------------------------------------------------------------------------------- the token and the files
def test_the_token_is_not_in_the_app_processs_environment(signed_in):
    environ = Path(f"/proc/{signed_in.process.pid}/environ").read_bytes()
    assert TOKEN.encode() not in environ


def test_a_volume_opens(signed_in, volume_bytes):
    async def scenario():
        async with page(signed_in) as (_, ticket):
            response = upload(signed_in, ticket, volume_bytes, "volume.nii.gz", "volume")
            assert response.status_code == 200, response.text

    run(scenario())


@pytest.mark.parametrize("kind", ["segmentation", "organ_map"])
def test_a_truncated_seg_nrrd_is_refused_and_the_app_lives(signed_in, kind):
    sizes = tuple(reversed(VOLUME_SHAPE))
    data = nrrd(sizes, bytes(100))  # declares 16 x 16 x 8 raw bytes, carries 100
    assert len(data) < 400

    async def scenario():
        async with page(signed_in) as (client, ticket):
            response = upload(signed_in, ticket, data, "lesion.seg.nrrd", kind)
            assert response.status_code == 415, response.text
            assert "truncated" in response.json()["detail"]
            assert "truncated" in (await client.state())["bs_error"]  # said on the page

    run(scenario())
    assert signed_in.process.poll() is None, "the upload killed the app"
    assert files_under(signed_in.work) == []


def test_a_small_seg_nrrd_declaring_a_huge_grid_is_refused_before_allocation(signed_in):
    data = nrrd(BOMB_SIZES, gzip_of_zeros(int(np.prod(BOMB_SIZES))), encoding="gzip")
    assert len(data) < 1 << 20
    before = peak_memory(signed_in)

    async def scenario():
        async with page(signed_in) as (_, ticket):
            response = upload(signed_in, ticket, data, "lesion.seg.nrrd", "segmentation")
            assert response.status_code == 413, response.text
            assert "1024x1024x384" in response.json()["detail"]

    run(scenario())
    assert signed_in.process.poll() is None
    assert peak_memory(signed_in) - before < BOMB_MEMORY_LIMIT
    assert files_under(signed_in.work) == []


@pytest.mark.parametrize("name", ["environ.seg.nrrd", "environ.mha"])
@pytest.mark.parametrize("kind", ["segmentation", "organ_map"])
def test_a_header_naming_another_file_is_refused_for_segmentations_too(signed_in, kind, name):
    meta = (b"ObjectType = Image\nNDims = 3\nDimSize = 16 16 8\nElementType = MET_UCHAR\nHeaderSize = 0\n"
            b"ElementDataFile = /proc/self/environ\n")
    detached = nrrd(tuple(reversed(VOLUME_SHAPE)), b"", extra="data file: /proc/self/environ\n")[:-1]
    # issue 19's own probe: a lower-case key says LOCAL, the one MetaIO reads names the file
    two_keys = meta.replace(b"ElementDataFile", b"elementdatafile = LOCAL\nElementDataFile")
    hostile = (meta, detached, two_keys)

    async def scenario():
        async with page(signed_in) as (_, ticket):
            for data in hostile:
                response = upload(signed_in, ticket, data, name, kind)
                assert response.status_code == 415, response.text
                assert "BACKSPLIT" not in response.text and "PATH=" not in response.text

    run(scenario())
    assert files_under(signed_in.work) == []


def test_a_seg_nrrd_that_passes_the_gate_opens(signed_in, tmp_path):
    labels = np.zeros(VOLUME_SHAPE, dtype=np.uint8)
    labels[2:5, 4:9, 4:9] = 1
    path = tmp_path / "lesion.seg.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(path), True)

    async def scenario():
        async with page(signed_in) as (_, ticket):
            response = upload(signed_in, ticket, path.read_bytes(), path.name, "segmentation")
            assert response.status_code == 200, response.text
            facts = httpx.get(f"{signed_in.origin}/backsplit/state", headers={"X-BackSplit-Ticket": ticket}).json()
            assert sum(s["voxels"] for s in facts["segments"]) == int(labels.sum())
            download = httpx.get(f"{signed_in.origin}/backsplit/download/segmentation", params={"ticket": ticket})
            assert download.status_code == 200 and download.content.startswith(b"NRRD")

    run(scenario())
    wait_for(lambda: files_under(signed_in.work) == [], timeout=10, what="the download's file to go")


def test_nothing_of_the_gzip_helper_is_wrong():
    assert gzip.decompress(gzip_of_zeros((1 << 20) + 5)) == bytes((1 << 20) + 5)
