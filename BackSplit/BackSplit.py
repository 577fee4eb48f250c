"""BackSplit: small-lesion segmentation with the background split into auxiliary classes.

A thin shell, as in KitwareMedical/SlicerNNUnet: module metadata, the widget from ``BackSplitSlicer.Widget``,
and the self-test. The logic lives in the Qt-free package ``BackSplitSlicer`` beside this file.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleTest,
                                           ScriptedLoadableModuleWidget)


def _ensure_engine_importable() -> None:
    """The built extension carries BackSplitLib next to this file; a source checkout has it one level up."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(folder, "BackSplitLib")) and folder not in sys.path:
            sys.path.append(folder)
            break


_ensure_engine_importable()

from BackSplitLib.vocabulary import AUXILIARY_EVIDENCE  # noqa: E402  (needs the path set above)


class BackSplit(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BackSplit"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["BackSplit developers"]
        self.parent.helpText = """
Segment small lesions with a network that learns the lesion <i>and</i> the structures around it
(the background split into auxiliary classes).<br>
<b>How to use:</b>
<ol>
<li><b>Inputs</b>: pick the volume and the segmentation.</li>
<li><b>Segment roles</b>: the lesion segment(s) are <i>Target</i>, surrounding structures <i>Auxiliary</i>
(defaults come from the names; roles are saved with the segmentation).</li>
<li><b>Auxiliary structures</b>: add CT tissue classes or import an organ map (e.g. TotalSegmentator), or
paint more in the Segment Editor.</li>
<li><b>Backend</b>: <i>Local</i> runs the engine on this computer (PyTorch and MONAI are installed on request);
<i>Remote</i> uses a BackSplit server (URL and token).</li>
<li><b>Add case</b>, then <b>Fine-tune</b> (progress, loss and validation Dice are shown; Cancel stops),
then <b>Predict</b>: the "BackSplit lesion" segment appears over the volume.</li>
</ol>
""" + f"<p><b>Is painting auxiliary structures worth it?</b> {AUXILIARY_EVIDENCE}</p>"
        self.parent.acknowledgementText = """
BackSplit implements the method of Saluja et al., "BackSplit: The Importance of Sub-dividing the Background
in Biomedical Lesion Segmentation", arXiv:2511.19394. Built on 3D Slicer, MONAI, PyTorch and SimpleITK.
"""


class BackSplitWidget(ScriptedLoadableModuleWidget):
    # None until setup() succeeds: a setup that failed (a missing file, an import error) is reported by Slicer,
    # and enter/exit/cleanup must not add an AttributeError on top of it.
    widget = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from BackSplitSlicer.Widget import Widget

        self.widget = Widget(self.resourcePath("UI/BackSplit.ui"))
        self.layout.addWidget(self.widget)

    def cleanup(self) -> None:
        if self.widget is not None:
            self.widget.cleanup()

    def enter(self) -> None:
        if self.widget is not None:
            self.widget.controller.enter()  # never touches the backend or a running job

    def exit(self) -> None:
        if self.widget is not None:
            self.widget.controller.leave()

    def onReload(self) -> None:
        """Reload the BackSplitSlicer submodules too (Slicer's Reload only re-imports this file)."""
        for name in [n for n in sys.modules if n == "BackSplitSlicer" or n.startswith("BackSplitSlicer.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)


class BackSplitTest(ScriptedLoadableModuleTest):
    """The self-test, from the installed layout: roles, export and import on a phantom scene; then, when
    Slicer's Python can run the local engine, phantom -> local server -> fine-tune -> predict -> segment.

    ctest runs the two parts as two tests (``BackSplit/CMakeLists.txt``): ``py_BackSplit`` finds only the
    ``test_`` method here, and ``Testing/Python/BackSplitEndToEndTest.py`` runs :func:`run_end_to_end_self_test`,
    which prints SELFTEST_SKIP_MARKER (a ctest skip) when the engine's packages are missing. The module's
    self-test button (``runTest``) runs both."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_roles_export_and_import()
        self.setUp()
        run_end_to_end_self_test(self)

    def test_roles_export_and_import(self) -> None:
        from BackSplitSlicer.selftest import check_roles_export_and_import

        self.delayDisplay(check_roles_export_and_import(slicer.mrmlScene))


def run_end_to_end_self_test(test: ScriptedLoadableModuleTest) -> None:
    """The self-test's end-to-end part, or the skip marker when Slicer's Python cannot run the local engine."""
    from BackSplitSlicer.backends import LocalBackend, missing_packages
    from BackSplitSlicer.panel_state import LOCAL_MODE_NOTE, local_mode_supported
    from BackSplitSlicer.selftest import SELFTEST_SKIP_MARKER, phantom_scene, run_end_to_end

    version = ".".join(map(str, sys.version_info[:2]))
    missing = missing_packages() if local_mode_supported() else [LOCAL_MODE_NOTE.format(version=version)]
    if missing:
        print(f"{SELFTEST_SKIP_MARKER}: end-to-end part not run; missing: {', '.join(missing)}")
        test.delayDisplay(f"End-to-end part SKIPPED: Slicer's Python lacks {', '.join(missing)}")
        return
    volume, segmentation = phantom_scene()

    def wait(seconds: float) -> None:
        slicer.app.processEvents()  # keeps the application responsive while the server trains
        time.sleep(seconds)

    backend = LocalBackend(tempfile.mkdtemp(prefix="BackSplit-selftest-"))
    backend.start()
    try:
        backend.wait_ready(120, wait)
        result = run_end_to_end(volume, segmentation, backend, wait=wait)
    finally:
        backend.close()
    test.assertEqual(result.job.state, "succeeded")
    test.assertIn("BackSplit lesion", result.segments)
    test.delayDisplay(f"End to end passed ({result.lesion_voxels} lesion voxels predicted)")
