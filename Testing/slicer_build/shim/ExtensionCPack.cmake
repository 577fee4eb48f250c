# Stands in for Slicer_EXTENSION_CPACK: packaging is the Slicer build farm's step; `cmake --install` is tested.
