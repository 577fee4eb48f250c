"""ctest ``py_BackSplitEndToEndTest``: the self-test's end-to-end part on its own (see BackSplit/CMakeLists.txt).

It is the only BackSplit ctest with a SKIP_REGULAR_EXPRESSION: when Slicer's Python lacks the local engine's
packages it prints the skip marker and ctest reports a skip; the roles test (``py_BackSplit``) never can.
"""

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class BackSplitEndToEndTest(ScriptedLoadableModuleTest):
    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_end_to_end_with_a_local_server()

    def test_end_to_end_with_a_local_server(self) -> None:
        from BackSplit import run_end_to_end_self_test

        run_end_to_end_self_test(self)
