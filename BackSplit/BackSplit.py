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
"""
        self.parent.acknowledgementText = """
BackSplit implements the method of Saluja et al., "BackSplit: The Importance of Sub-dividing the Background
in Biomedical Lesion Segmentation", arXiv:2511.19394. Built on 3D Slicer, MONAI, PyTorch and SimpleITK.
"""


class BackSplitWidget(ScriptedLoadableModuleWidget):
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from BackSplitSlicer.Widget import Widget

        self.widget = Widget(self.resourcePath("UI/BackSplit.ui"))
        self.layout.addWidget(self.widget)

    def cleanup(self) -> None:
        self.widget.cleanup()

    def enter(self) -> None:
        self.widget.initializeParameterNode()


class BackSplitTest(ScriptedLoadableModuleTest):
    """The end-to-end flow of the pytest suite, inside a real Slicer: phantom scene -> a local server ->
    fine-tune a few iterations -> predict -> the lesion segment in the scene."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_roles_export_and_import()
        self.test_end_to_end_with_a_local_server()

    def test_roles_export_and_import(self) -> None:
        from BackSplitSlicer.case import export_case
        from BackSplitSlicer.roles import segment_roles
        from BackSplitSlicer.selftest import phantom_scene

        volume, segmentation = phantom_scene()
        roles = segment_roles(segmentation)
        self.assertEqual(roles["lesion"], "target")
        case = export_case(volume, segmentation)
        self.assertEqual(case.label.shape, slicer.util.arrayFromVolume(volume).shape)
        self.assertGreater(int((case.label == case.schema.target_value).sum()), 0)
        self.delayDisplay("Roles, export and import passed")

    def test_end_to_end_with_a_local_server(self) -> None:
        from BackSplitSlicer.backends import LocalBackend, missing_packages
        from BackSplitSlicer.selftest import phantom_scene, run_end_to_end

        missing = missing_packages()
        if missing:
            self.delayDisplay(f"Skipping the end-to-end test: Slicer's Python lacks {', '.join(missing)}")
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
        self.assertEqual(result.job.state, "succeeded")
        self.assertIn("BackSplit lesion", result.segments)
        self.delayDisplay(f"End to end passed ({result.lesion_voxels} lesion voxels predicted)")
