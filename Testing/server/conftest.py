"""Fixtures for the server tests: one shared real server and three phantom cases with different schemas."""

from __future__ import annotations

import os

import pytest
from server_harness import STRICT_DECODE_BUDGET, STRICT_MAX_IMAGE, STRICT_MAX_JOB_WORK, CaseFiles, ServerProcess, write_case

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # keep torch on the CPU in the server and its worker


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> ServerProcess:
    """One server with one training worker, shared by the tests of this folder."""
    root = tmp_path_factory.mktemp("server")
    srv = ServerProcess(root / "data", root / "token").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def strict_server(tmp_path_factory) -> ServerProcess:
    """An API-only server with small limits and short timeouts, started with 256 open files (soft = hard, so
    it cannot raise them): the front-door tests push it to its limits without slowing the shared one."""
    root = tmp_path_factory.mktemp("strict")
    srv = ServerProcess(root / "data", root / "token", workers=0, open_files=(256, 256), extra_args=(
        "--max-image-size", STRICT_MAX_IMAGE, "--max-iterations", "1000", "--header-timeout", "1",
        "--body-timeout", "2", "--decode-budget", STRICT_DECODE_BUDGET, "--max-job-work", STRICT_MAX_JOB_WORK)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def open_server(tmp_path_factory) -> ServerProcess:
    """An API-only loopback server without a token (--no-auth), as Slicer's Local mode and the bench run it."""
    root = tmp_path_factory.mktemp("open")
    srv = ServerProcess(root / "data", root / "token", workers=0, extra_args=("--no-auth",)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def phantom_cases(tmp_path_factory) -> list[CaseFiles]:
    """Three cases with different schemas: all classes; binary (NRRD); background, liver, lesion."""
    folder = tmp_path_factory.mktemp("cases")
    return [write_case(folder, 11), write_case(folder, 12, keep=[], ext=".nrrd"),
            write_case(folder, 13, keep=["liver"])]


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on loopback for this test session (skipped where PostgreSQL is missing)."""
    from postgres_harness import PostgresCluster, postgres_missing

    if (reason := postgres_missing()) is not None:
        pytest.skip(reason)
    cluster = PostgresCluster().init()
    try:
        yield cluster.start()
    finally:
        cluster.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str | None:
    """Each backend in turn: None (the data folder's SQLite file) or a fresh database on the test cluster."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").new_database()
