"""The Slicer module imports BackSplitLib.auxiliary inside a Slicer that may have no PyTorch."""

from __future__ import annotations

import subprocess
import sys


def test_auxiliary_imports_without_torch_or_monai():
    code = ("import sys, BackSplitLib.auxiliary; "
            "loaded = [m for m in ('torch', 'monai', 'totalsegmentator') if m in sys.modules]; "
            "assert not loaded, loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", timeout=60)
    assert done.returncode == 0, done.stderr
