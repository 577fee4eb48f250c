"""Fixtures for the Slicer module's logic against real MRML from the ``slicer-core`` wheel (no Qt, no app).

The Slicer application normally registers the segmentation converter rules and creates the module logics
that ``slicer.util`` looks up (``slicer.modules.volumes.logic()`` ...). Here a session fixture does that once
and every test gets an empty scene. The bootstrap stays in tests: inside Slicer the application does it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (test extra) is not installed")
if not hasattr(slicer, "vtkMRMLScene"):  # the unrelated PyPI package called 'slicer'
    pytest.skip("'slicer' is not slicer-core", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "BackSplit"
# Inside Slicer the module folder is on sys.path; do the same so `import BackSplitSlicer` works.
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from mrml_bootstrap import bootstrap  # noqa: E402


@pytest.fixture
def scene():
    """An empty MRML scene, set up like the Slicer application sets up its own."""
    state = bootstrap()
    yield state["scene"]
    state["scene"].Clear(0)


@pytest.fixture(scope="session")
def installed_extension(tmp_path_factory):
    """The extension configured, built and installed by real cmake with Slicer's and CTK's own macros (once)."""
    from extension_layout import build_extension

    return build_extension(tmp_path_factory.mktemp("extension"))
