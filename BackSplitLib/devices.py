"""Where torch runs: 'auto' picks CUDA when available. Shared by training and inference (neither imports the other)."""

from __future__ import annotations

import torch

from BackSplitLib.errors import DatasetError


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU. A clear error when CUDA is asked for but absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DatasetError("CUDA was requested but this PyTorch has no usable GPU",
                           "use --device cpu or install a CUDA build of torch (TORCH_INDEX_URL)")
    return torch.device(device)
