"""What the Slicer application sets up for MRML, done for ``slicer-core``: converter rules, one scene, the
application and module logics, and the globals ``slicer.util`` expects. Test-only (inside Slicer the
application does it); a module of its own so subprocess tests (the installed layout) can use it too.
"""

from __future__ import annotations

from types import SimpleNamespace

import slicer

_STATE: dict = {}


def bootstrap() -> dict:
    """Converter rules, one scene, application + module logics, and the globals slicer.util expects."""
    if _STATE:
        return _STATE
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    volumes = slicer.vtkSlicerVolumesLogic()
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    for logic in (volumes, segmentations):
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
    slicer.mrmlScene = scene
    slicer.modules = SimpleNamespace(
        volumes=SimpleNamespace(logic=lambda: volumes),
        segmentations=SimpleNamespace(logic=lambda: segmentations),
    )
    _STATE.update(scene=scene, app_logic=app_logic, volumes=volumes, segmentations=segmentations)
    return _STATE
