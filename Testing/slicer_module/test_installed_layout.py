"""The module from an installed extension's layout (files placed as BackSplit/CMakeLists.txt bundles them):
in a Python whose ``sys.path`` is only that folder and the site-packages (no checkout, no pip-installed
project), the logic imports, the self-test's Qt-free part passes, and the bundled engine is the one found.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

from extension_layout import install_layout

CHECK = textwrap.dedent("""
    import sys
    layout, helpers, site_packages = sys.argv[1:4]
    sys.path[:0] = [layout, site_packages]
    import BackSplitLib, BackSplitSlicer.panel, BackSplitSlicer.selftest
    from BackSplitSlicer.backends import ENGINE_MODULE, default_engine_path, missing_packages
    from BackSplitSlicer.install import bundled_requirements
    assert BackSplitLib.__file__.startswith(layout), BackSplitLib.__file__
    assert BackSplitSlicer.panel.__file__.startswith(layout), BackSplitSlicer.panel.__file__
    assert str(default_engine_path()) == layout, default_engine_path()
    assert str(bundled_requirements()).startswith(layout), bundled_requirements()
    assert missing_packages(sys.executable, requirements=["BackSplitLib.phantom"]) == []
    sys.path.append(helpers)
    from mrml_bootstrap import bootstrap
    from BackSplitSlicer.selftest import check_roles_export_and_import
    print(check_roles_export_and_import(bootstrap()["scene"]))
""")


def test_the_installed_layout_runs_the_self_tests_qt_free_part_with_its_bundled_engine(tmp_path):
    layout = install_layout(tmp_path / "lib" / "Slicer-5.10" / "qt-scripted-modules")
    assert (layout / "BackSplit.py").is_file() and (layout / "Resources" / "UI" / "BackSplit.ui").is_file()
    assert (layout / "BackSplitLib" / "server" / "app.py").is_file() and (layout / "BackSplitLib" / "phantom.py").is_file()
    site_packages = sysconfig.get_paths()["purelib"]
    done = subprocess.run([sys.executable, "-S", "-c", CHECK, str(layout), str(Path(__file__).parent), site_packages],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Roles, export and import passed" in done.stdout
