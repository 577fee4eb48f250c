"""Issue 9, low: the data folder is private (root 0700, files written with umask 077), a token file that
group or others can read is refused with the fix in the message, and BACKSPLIT_TOKEN wins over the file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import httpx
import pytest

from server_harness import ServerProcess, case_form

ENV_TOKEN = "env-token-" + "x" * 30


@pytest.fixture(scope="module")
def env_server(tmp_path_factory):
    """A server whose data folder existed with mode 0755, with a token in the environment and another one
    in its token file."""
    root = tmp_path_factory.mktemp("perm")
    data = root / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    token_file = root / "token"
    token_file.write_text("file-token-" + "y" * 30 + "\n")
    token_file.chmod(0o600)
    srv = ServerProcess(data, token_file, workers=0, env={"BACKSPLIT_TOKEN": ENV_TOKEN}).start()
    yield srv
    srv.stop()


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_folder_root_becomes_private(env_server):
    assert _mode(env_server.data) == 0o700


def test_files_the_server_writes_are_private(env_server, phantom_cases):
    files, data = case_form(phantom_cases[0])
    response = httpx.post(f"{env_server.url}/cases", files=files, data=data,
                          headers={"Authorization": f"Bearer {ENV_TOKEN}"}, timeout=60)
    assert response.status_code == 201, response.text
    folder = env_server.data / "cases" / response.json()["id"]
    assert _mode(folder) & 0o077 == 0
    assert all(_mode(p) & 0o077 == 0 for p in folder.iterdir())


def test_the_environment_token_wins_over_the_token_file(env_server):
    headers = {"Authorization": f"Bearer {ENV_TOKEN}"}
    assert httpx.get(f"{env_server.url}/cases", headers=headers).status_code == 200
    assert httpx.get(f"{env_server.url}/cases",
                     headers={"Authorization": f"Bearer {env_server.token}"}).status_code == 401
    assert ENV_TOKEN not in env_server.log()  # never printed


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_load_or_create_token_refuses_any_group_or_other_bit(tmp_path, mode):
    from BackSplitLib.errors import BackSplitError
    from BackSplitLib.server.serve import load_or_create_token

    token_file = tmp_path / "token"
    token_file.write_text("t" * 40 + "\n")
    token_file.chmod(mode)
    with pytest.raises(BackSplitError, match="chmod 600"):
        load_or_create_token(token_file)


def test_backsplit_serve_refuses_a_readable_token_file_with_the_fix(tmp_path):
    mode = 0o644
    token_file = tmp_path / "token"
    token_file.write_text("t" * 40 + "\n")
    token_file.chmod(mode)
    env = {k: v for k, v in os.environ.items() if k != "BACKSPLIT_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "BackSplitLib", "serve", "--data", str(tmp_path / "data"),
                             "--port", "1", "--token-file", str(token_file), "--workers", "0"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    assert f"chmod 600 {token_file}" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
