"""`backsplit worker`'s start-up: the shared folder's checks, the GPU list, and clear refusals."""

from __future__ import annotations

import pytest

from BackSplitLib.errors import BackSplitError
from BackSplitLib.server.store import Store
from BackSplitLib.server.worker_machine import check_shared_folder, parse_gpus


def test_gpu_lists_are_parsed_and_nonsense_is_refused():
    assert parse_gpus("0,1") == ["0", "1"] and parse_gpus(" 2 ") == ["2"] and parse_gpus("cpu") == []
    for bad in ("", "0,0", "gpu0", "-1"):
        with pytest.raises(BackSplitError, match="not a list of GPU numbers"):
            parse_gpus(bad)


def test_the_shared_folder_checks_pass_on_one_file_system_and_leave_nothing_behind(tmp_path):
    store = Store(tmp_path / "data")
    before = sorted(p.relative_to(store.root) for p in store.root.rglob("*"))
    check_shared_folder(store.root)
    assert sorted(p.relative_to(store.root) for p in store.root.rglob("*")) == before


def test_a_read_only_shared_folder_fails_the_check_with_the_step(tmp_path):
    import os

    store = Store(tmp_path / "data")
    if os.geteuid() == 0:  # root writes anywhere: make tmp/ a file instead, so creating a folder there fails
        (store.root / "tmp").rmdir()
        (store.root / "tmp").write_text("not a folder")
    else:
        (store.root / "tmp").chmod(0o500)
    with pytest.raises(BackSplitError, match="failed a start-up check: could not create a folder"):
        check_shared_folder(store.root)


def test_the_worker_command_refuses_a_folder_that_is_not_a_data_folder(tmp_path, capsys):
    from BackSplitLib.cli import main

    assert main(["worker", "--data", str(tmp_path), "--gpus", "cpu"]) == 2
    assert "is not a BackSplit data folder" in capsys.readouterr().err


def test_serve_refuses_a_database_url_it_cannot_use(tmp_path, capsys):
    from BackSplitLib.cli import main

    assert main(["serve", "--data", str(tmp_path / "d"), "--no-auth", "--database", "mysql://u@h/db"]) == 2
    err = capsys.readouterr().err
    assert "is not a SQLite or PostgreSQL URL" in err and "postgresql://" in err


def test_an_unreachable_postgresql_is_a_clear_error_not_a_traceback(tmp_path):
    from server_harness import free_port

    from BackSplitLib.server.database import StoreUnavailable

    with pytest.raises(StoreUnavailable, match="cannot be reached") as error:
        Store(tmp_path / "data", f"postgresql://nobody:secret@127.0.0.1:{free_port()}/none")
    assert "secret" not in str(error.value)  # the password never reaches a message
