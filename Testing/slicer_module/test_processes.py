"""Every child process of Slicer's Python hides its console window on Windows (CREATE_NO_WINDOW).

On this Linux machine the flag cannot be applied (POSIX ``Popen`` refuses creationflags), so the test records
what each launcher hands to ``subprocess.Popen`` with the Windows rule switched on, and starts the process
without it: the engine, the package check, pip and the torch probe all really run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from BackSplitSlicer import processes
from BackSplitSlicer.backends import LocalBackend, missing_packages
from BackSplitSlicer.install import PipInstall, torch_build

PACKAGE = Path(processes.__file__).resolve().parent


@pytest.fixture
def windows_popen(monkeypatch):
    """subprocess.Popen that records creationflags, with the module's platform rule set to Windows."""
    flags: list[tuple[str, int]] = []
    real = subprocess.Popen

    class Recording(real):
        def __init__(self, args, *rest, creationflags=0, **options):
            flags.append((" ".join(map(str, args))[:80], creationflags))
            super().__init__(args, *rest, **options)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    monkeypatch.setattr(processes, "WINDOWS", True)
    return flags


def test_every_launcher_hides_the_console_on_windows(windows_popen, tmp_path):
    backend = LocalBackend(tmp_path / "engine", python=sys.executable)
    backend.command = lambda: [sys.executable, "-c", "pass"]
    backend.start()
    backend.process.wait(30)
    assert missing_packages(sys.executable, requirements=["numpy"]) == []
    requirements = tmp_path / "r.txt"
    requirements.write_text("pip\n", encoding="utf-8")  # present everywhere: offline pip succeeds
    (tmp_path / "wheels").mkdir()
    # A Python without torch (Slicer 5.10's version, from pyenv, when here) keeps the torch probe short.
    python = str(next(iter(sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python"))), sys.executable))
    install = PipInstall(python, wheel_folder=str(tmp_path / "wheels"), requirements=requirements)
    assert install.wait(120) == 0, install.log()  # pip, then the torch probe
    assert torch_build(sys.executable + "-missing") is None
    assert len(windows_popen) >= 4
    assert all(flag == processes.CREATE_NO_WINDOW for _, flag in windows_popen), windows_popen


def test_the_flag_is_windows_own_and_absent_elsewhere(monkeypatch):
    assert processes.CREATE_NO_WINDOW == getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)
    monkeypatch.setattr(processes, "WINDOWS", False)
    assert processes.console_flags() == 0


def test_no_module_starts_a_process_around_the_helpers():
    """Only processes.py calls subprocess.Popen / subprocess.run (so no launcher can forget the flag)."""
    offenders = []
    for path in [*PACKAGE.glob("*.py"), PACKAGE.parent / "BackSplit.py"]:
        if path.name == "processes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            called = node.func if isinstance(node, ast.Call) else None
            if (isinstance(called, ast.Attribute) and isinstance(called.value, ast.Name)
                    and called.value.id == "subprocess"):
                offenders.append(f"{path.name}:{node.lineno} subprocess.{called.attr}")
    assert not offenders, offenders
