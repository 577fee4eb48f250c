# The part of Slicer's UseSlicer.cmake that a scripted module needs: testing and the macros, from the fixtures.
include(CTest)
include(ExternalData)
list(APPEND CMAKE_MODULE_PATH "${_fixtures}/Slicer/CMake" "${CTK_CMAKE_DIR}")
include(ctkFunctionExtractOptimizedLibrary)  # CTKConfig.cmake includes it
include(ctkMacroCompilePythonScript)
include(SlicerMacroBuildScriptedModule)
include(SlicerMacroPythonTesting)
include(SlicerMacroConfigureGenericPythonModuleTests)
