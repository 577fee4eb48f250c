"""The extension built and installed by real cmake with Slicer's and CTK's own macros, and run from the install.

The build runs the top-level ``CMakeLists.txt`` against ``Testing/slicer_build`` (Slicer 5.10's
``slicerMacroBuildScriptedModule``, CTK's ``ctkMacroCompilePythonScript``, a shim for a Slicer build tree's
variables). The installed tree is compared with the one the source folders call for, every ``.py`` must have
its byte-compiled ``.pyc`` (CTK's compile step only prints a failure), and Local mode's engine and the
self-test's Qt-free part run from it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from extension_layout import MODULE, REPO, expected_installed_files, requirements_name, slicer_python

from BackSplitSlicer.backends import LocalBackend, missing_packages
from BackSplitSlicer.install import requirement_names, runtime_requirements

LOCAL_VENV = Path(os.environ.get("BACKSPLIT_LOCAL_VENV", REPO / ".venv-local")).absolute()
LOCAL_PYTHON = LOCAL_VENV / "bin" / "python"


def installed_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_the_build_installs_every_module_file_the_engine_and_the_requirements(installed_extension):
    installed = installed_files(installed_extension.module_dir)
    sources = {f for f in installed if not f.endswith(".pyc")}
    expected = expected_installed_files()
    assert sources == expected, (f"missing: {sorted(expected - sources)}; unexpected: {sorted(sources - expected)}")
    assert {"BackSplit.py", "BackSplitSlicer/Widget.py", "Resources/UI/BackSplit.ui", "Resources/Icons/BackSplit.png",
            "BackSplitLib/server/app.py", "BackSplitLib/phantom.py"} <= sources
    tracked = subprocess.run(["git", "ls-files", "BackSplitLib/*.py"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked and set(tracked) <= sources
    uncompiled = sorted(f for f in sources if f.endswith(".py") and f + "c" not in installed)
    assert not uncompiled, f"CTK did not byte-compile: {uncompiled}\n{installed_extension.log[-3000:]}"


def test_the_installed_requirements_are_pyprojects_runtime_list_under_the_name_install_py_reads(installed_extension):
    lines = (installed_extension.module_dir / "BackSplitSlicer" / requirements_name()).read_text(encoding="utf-8")
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert [line for line in lines.splitlines() if not line.startswith("#")] == runtime_requirements(pyproject)
    # The installed install.py, under Slicer 5.10's Python version, finds it (no pyproject beside the install).
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from BackSplitSlicer import install; "
              "print(install.bundled_requirements()); print(len(install.requirement_lines()))")
    done = subprocess.run([str(slicer_python()), "-I", "-c", script, str(installed_extension.module_dir)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    found, count = done.stdout.split()
    assert Path(found) == installed_extension.module_dir / "BackSplitSlicer" / requirements_name()
    assert int(count) == len(lines.splitlines())


def test_the_requirements_are_regenerated_when_install_py_or_pyproject_changes(installed_extension):
    build = installed_extension.build
    for source in (MODULE / "BackSplitSlicer" / "install.py", REPO / "pyproject.toml"):
        before = source.stat()
        try:
            os.utime(source)  # newer than the generated file: what an edit does to make
            done = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, timeout=120)
        finally:
            os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert f"Generating {requirements_name()}" in done.stdout, (source.name, done.stdout[-2000:])


LAUNCHER = textwrap.dedent("""\
    #!/bin/sh
    # Stands in for the Slicer launcher: every self-test fails, and its output contains the skip marker.
    echo "BACKSPLIT-SELFTEST-SKIPPED: end-to-end part not run"
    echo "AssertionError: the roles test failed"
    exit 1
""")


def test_ctest_reports_a_failing_roles_test_as_failed_and_only_the_engine_part_as_skipped(tmp_path):
    """ctest's SKIP_REGULAR_EXPRESSION applies to the end-to-end test alone (it needs PyTorch in Slicer)."""
    launcher = tmp_path / "Slicer"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    launcher.chmod(0o755)
    build = tmp_path / "build"
    configure = subprocess.run(["cmake", "-S", str(REPO), "-B", str(build),
                                f"-DSlicer_DIR={REPO / 'Testing' / 'slicer_build' / 'shim'}",
                                f"-DPYTHON_EXECUTABLE={sys.executable}", f"-DSlicer_LAUNCHER_EXECUTABLE={launcher}",
                                "-DBUILD_TESTING=ON"], capture_output=True, text=True, timeout=120)
    assert configure.returncode == 0, configure.stderr[-3000:]
    done = subprocess.run(["ctest", "--test-dir", str(build), "-R", "^py_BackSplit"], capture_output=True, text=True,
                          timeout=120)
    results = dict(re.findall(r"Test\s+#\d+: (py_\w+) \.+\**\s*(\w+)", done.stdout))
    assert results == {"py_BackSplit": "Failed", "py_BackSplitEndToEndTest": "Skipped"}, done.stdout


def test_the_catalogue_metadata_and_cmake_range_are_slicer_5_10s(installed_extension):
    metadata = installed_extension.metadata
    assert metadata["EXTENSION_DEPENDS"] == "PyTorch"  # the PyTorch extension's torch, as SlicerNNUNet has
    for contributor in metadata["EXTENSION_CONTRIBUTORS"].split(", "):
        assert re.fullmatch(r"[^()]+ \([^()]+\)", contributor), contributor  # the catalogue's "Name (Organization)"
    screenshots = metadata["EXTENSION_SCREENSHOTURLS"].split()
    assert len(screenshots) >= 2
    for url in [metadata["EXTENSION_ICONURL"], *screenshots]:
        path = REPO / url.split("/main/", 1)[1]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", url
    assert metadata["CMAKE_MINIMUM_REQUIRED_VERSION"] == "3.20.6"
    assert "cmake_minimum_required(VERSION 3.20.6...3.22.6 FATAL_ERROR)" in (REPO / "CMakeLists.txt").read_text()


SELF_TEST = textwrap.dedent("""
    import sys
    layout, helpers, site_packages = sys.argv[1:4]
    sys.path[:0] = [layout, site_packages]
    import BackSplitLib, BackSplitSlicer.panel, BackSplitSlicer.selftest
    from BackSplitSlicer.backends import default_engine_path
    assert BackSplitLib.__file__.startswith(layout), BackSplitLib.__file__
    assert BackSplitSlicer.panel.__file__.startswith(layout), BackSplitSlicer.panel.__file__
    assert str(default_engine_path()) == layout, default_engine_path()
    sys.path.append(helpers)
    from mrml_bootstrap import bootstrap
    from BackSplitSlicer.selftest import check_roles_export_and_import
    print(check_roles_export_and_import(bootstrap()["scene"]))
""")


def test_the_installed_tree_runs_the_self_tests_qt_free_part_with_its_bundled_engine(installed_extension, tmp_path):
    # Only the installed folder and site-packages (slicer-core's MRML) on the path: no checkout, no project install.
    done = subprocess.run([sys.executable, "-S", "-c", SELF_TEST, str(installed_extension.module_dir),
                           str(Path(__file__).parent), sysconfig.get_paths()["purelib"]],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Roles, export and import passed" in done.stdout


@pytest.mark.skipif(not LOCAL_PYTHON.exists(), reason="no install-step venv: run `make local-venv` (make test does)")
def test_local_modes_engine_starts_from_the_installed_tree(installed_extension, tmp_path):
    """The install step's Python (only the generated requirements installed) runs the installed engine."""
    module_dir = installed_extension.module_dir
    lines = (module_dir / "BackSplitSlicer" / requirements_name()).read_text(encoding="utf-8").splitlines()
    assert missing_packages(str(LOCAL_PYTHON), module_dir, requirement_names(lines) + ["BackSplitLib.server"]) == []
    backend = LocalBackend(tmp_path / "engine", python=str(LOCAL_PYTHON), engine_path=module_dir,
                           extra_env={"PYTHONNOUSERSITE": "1"})
    backend.start()
    try:
        backend.wait_ready(90)
        assert backend.list_models() == []
        log = backend.log_path.read_text(encoding="utf-8", errors="replace")
        assert f"BackSplit server on {backend.url}" in log
    finally:
        backend.close()
    # The engine that ran was the installed one (PYTHONPATH is the installed folder, nothing else has it).
    where = subprocess.run([str(LOCAL_PYTHON), "-c", "import BackSplitLib; print(BackSplitLib.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(module_dir), "PYTHONNOUSERSITE": "1"},
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert where.stdout.strip().startswith(str(module_dir)), where.stderr
