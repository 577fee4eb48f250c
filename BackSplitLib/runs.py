"""A run folder's weights and training state (torch, safetensors); the layout itself is ``run_folder.py``.

Weights are stored with safetensors, never pickled modules, so loading a run cannot execute code. The
layout names (``MODEL_JSON``, ``load_run``, ``RunInfo``, ...) are re-exported here so the engine imports one
module for a run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from BackSplitLib.errors import RunError
from BackSplitLib.run_folder import (  # noqa: F401 (re-exported: the engine's one import for a run)
    BEST_WEIGHTS, FORMAT_VERSION, LAST_STATE, LAST_WEIGHTS, LOG, MODEL_JSON, RunInfo, append_log, atomic_write,
    load_run, write_model_json,
)


def build_model(info: RunInfo, weights: str | None = "best", device: str | torch.device = "cpu") -> torch.nn.Module:
    """The run's network, with its best (or last) weights loaded when ``weights`` is not None."""
    from BackSplitLib.networks import build_network

    model = build_network(info.arch, in_channels=1, num_classes=info.schema.num_classes, **info.arch_params)
    if weights is not None:
        load_weights(model, info.weights_path(weights))
    return model.to(device)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    # load_model/save_model handle modules that share tensors (DynUNet's skip_layers alias its blocks).
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as e:  # safetensors raises several types for damaged files
        raise RunError(f"weights file {path} could not be read ({type(e).__name__}: {str(e)[:160]})") from None
    if missing or unexpected:
        raise RunError(f"weights in {path} do not fit the network described in model.json "
                       f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")


def save_weights(model: torch.nn.Module, path: Path) -> None:
    atomic_write(path, lambda tmp: save_model(model, tmp))


def save_state(state: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunError(f"training state {path} could not be read ({e}); start again without --resume") from None
