"""Where ``BackSplitSlicer`` (the Slicer module's Qt-free logic) comes from.

The web app binds the same panel controller as the Slicer module, so it imports the module's own package
from the repository's ``BackSplit/`` folder (Slicer puts that folder on ``sys.path`` the same way). The
web app therefore runs from a checkout installed with ``pip install -e ".[web]"``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from BackSplitLib.errors import BackSplitError

MODULE_DIR = Path(__file__).resolve().parents[1] / "BackSplit"


def ensure_slicer_module_on_path() -> None:
    if (MODULE_DIR / "BackSplitSlicer").is_dir():
        if str(MODULE_DIR) not in sys.path:
            sys.path.insert(0, str(MODULE_DIR))
        return
    try:
        import BackSplitSlicer  # noqa: F401
    except ImportError:
        raise BackSplitError("the BackSplit Slicer module's logic (BackSplitSlicer) is not found",
                             'run the web app from a checkout: pip install -e ".[web]"') from None
