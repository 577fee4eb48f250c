# What a Slicer 5.10 build tree's SlicerConfig.cmake and UseSlicer.cmake give an extension, reduced to what a
# scripted module uses (see ../README.md). Values a real build tree would hold are passed on the command line:
#   -DSlicer_DIR=<this folder> -DPYTHON_EXECUTABLE=... -DSlicer_LAUNCHER_EXECUTABLE=...
set(Slicer_FOUND TRUE)
set(Slicer_VERSION_MAJOR 5)
set(Slicer_VERSION_MINOR 10)
set(_fixtures "${CMAKE_CURRENT_LIST_DIR}/..")

# CMake/SlicerDirectories.cmake: Slicer_LIB_DIR is lib/Slicer-X.Y; extensions install relative to their prefix.
set(Slicer_LIB_DIR "lib/Slicer-${Slicer_VERSION_MAJOR}.${Slicer_VERSION_MINOR}")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_LIB_DIR}/qt-scripted-modules")
set(Slicer_QTLOADABLEMODULES_LIB_DIR "${Slicer_LIB_DIR}/qt-loadable-modules")
set(Slicer_CLIMODULES_LIB_DIR "${Slicer_LIB_DIR}/cli-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")
set(Slicer_USE_PYTHONQT ON)
set(Slicer_ExternalData_DATA_MANAGEMENT_TARGET "BackSplitData")
set(Slicer_PYTHON_MODULE_TEST_TEMPLATES_DIR "${_fixtures}/Slicer/Base/QTCore/Testing/Python")
set(CTK_CMAKE_DIR "${_fixtures}/CTK/CMake")
if(NOT DEFINED PYTHON_EXECUTABLE)
  message(FATAL_ERROR "the shim needs -DPYTHON_EXECUTABLE (Slicer's build tree defines it)")
endif()
if(NOT DEFINED Slicer_LAUNCHER_EXECUTABLE)
  set(Slicer_LAUNCHER_EXECUTABLE "${PYTHON_EXECUTABLE}")
endif()

set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/ExtensionMetadata.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/ExtensionCPack.cmake")
