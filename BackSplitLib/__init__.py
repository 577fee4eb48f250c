"""BackSplit: small-lesion segmentation with the background split into auxiliary classes.

The package is importable without torch: ``schema``, ``io``, ``errors`` and ``client`` are torch-free so
that the Slicer module can use them inside a Slicer that has no PyTorch. Everything that trains or
predicts lives in modules that import torch and MONAI on their own.

Method: Saluja et al., "BackSplit: The Importance of Sub-dividing the Background in Biomedical Lesion
Segmentation", arXiv:2511.19394.
"""

__version__ = "0.1.0"

from BackSplitLib.errors import BackSplitError  # noqa: E402  (re-exported, torch-free)

__all__ = ["__version__", "BackSplitError"]
