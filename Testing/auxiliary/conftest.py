"""Fixtures for the auxiliary-label tests: TotalSegmentator's own reference files, fetched once.

The TotalSegmentator 2.18.0 source distribution ships a small reference CT with its segmentations and the
class-name table (``totalsegmentator/map_to_binary.py``). ``pip download`` fetches the sdist into a cache
(``$BACKSPLIT_TEST_CACHE`` or ``~/.cache/backsplit-test``); only the few files the tests use are
extracted. The package is never installed or imported. Tests skip only when the registry is unreachable.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

TOTALSEG_VERSION = "2.18.0"
SDIST = f"totalsegmentator-{TOTALSEG_VERSION}.tar.gz"
MEMBERS = {
    "ct": "tests/reference_files/example_ct_sm.nii.gz",
    "seg": "tests/reference_files/example_seg.nii.gz",
    "seg_roi_subset": "tests/reference_files/example_seg_roi_subset.nii.gz",
    "mr": "tests/reference_files/example_mr_sm.nii.gz",
    "map_to_binary": "totalsegmentator/map_to_binary.py",
}
# pip's messages when the index cannot be reached (offline, DNS, proxy): the only reason to skip.
_UNREACHABLE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                "Max retries exceeded", "ConnectionError", "No matching distribution found", "ProxyError",
                "Could not fetch URL", "timed out")


@dataclass(frozen=True)
class TotalSegReference:
    """Paths of the extracted reference files."""

    ct: Path
    seg: Path
    seg_roi_subset: Path
    mr: Path
    map_to_binary: Path


def _cache_dir() -> Path:
    return Path(os.environ.get("BACKSPLIT_TEST_CACHE", Path.home() / ".cache" / "backsplit-test"))


@pytest.fixture(scope="session")
def totalseg_reference() -> TotalSegReference:
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / SDIST
    if not sdist.is_file():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"totalsegmentator=={TOTALSEG_VERSION}", "-d", str(cache)],
            capture_output=True, encoding="utf-8", errors="replace", timeout=300,
        )
        log = done.stdout + done.stderr
        if done.returncode != 0 or not sdist.is_file():
            if any(marker in log for marker in _UNREACHABLE):
                pytest.skip(f"the package registry cannot be reached to fetch {SDIST} "
                            f"(pip download failed: {log.strip().splitlines()[-1][:200]})")
            pytest.fail(f"pip download of {SDIST} failed:\n{log[-2000:]}")
    root = cache / f"totalsegmentator-{TOTALSEG_VERSION}"
    paths = {key: root / member for key, member in MEMBERS.items()}
    missing = [key for key, path in paths.items() if not path.is_file()]
    if missing:
        prefix = f"totalsegmentator-{TOTALSEG_VERSION}/"
        with tarfile.open(sdist) as archive:
            wanted = {prefix + MEMBERS[key] for key in missing}
            members = [m for m in archive.getmembers() if m.name in wanted]
            archive.extractall(cache, members=members, filter="data")
    return TotalSegReference(**paths)


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``backsplit ARGS`` in-process with only this command group loaded; returns (code, stdout, stderr)."""
    app_module = importlib.import_module("BackSplitLib.cli.app")  # the module; BackSplitLib.cli.app is also the Typer

    monkeypatch.setattr(app_module, "COMMAND_MODULES", ("auxiliary",))

    def run(*args) -> tuple[int, str, str]:
        code = app_module.main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
