"""The module's parameter node: what the panel remembers in the scene.

Each field is bound to the widget in ``Resources/UI/BackSplit.ui`` whose ``SlicerParameterName`` property has
the field's name. The server token is deliberately *not* a field: parameter nodes are saved with the scene,
and a token must not end up in a shared .mrb.
"""

from __future__ import annotations

import pathlib
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

BACKENDS = ("Local", "Remote")


@parameterNodeWrapper
class BackSplitParameterNode:
    """Inputs, backend choice and training settings of the BackSplit panel."""

    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
    outputSegmentation: vtkMRMLSegmentationNode
    backend: Annotated[str, Choice(list(BACKENDS)), Default("Local")]
    serverUrl: Annotated[str, Default("http://127.0.0.1:8000")]
    localDataFolder: pathlib.Path
    iterations: Annotated[int, WithinRange(1, 100000), Default(300)]
    predictAuxiliary: Annotated[bool, Default(False)]


class BackSplitLogic(ScriptedLoadableModuleLogic):
    """Only the parameter node; the real logic is Qt-free in ``case``, ``roles`` and ``backends``."""

    def getParameterNode(self) -> BackSplitParameterNode:
        return BackSplitParameterNode(super().getParameterNode())
