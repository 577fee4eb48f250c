"""Run folders: everything prediction and fine-tuning need, with no side information.

::

    RUN/model.json          format_version, schema, arch + params, preprocessing, training settings, history
    RUN/model.safetensors   best-validation weights (used by predict)
    RUN/last.safetensors    latest weights   } resume after a kill
    RUN/last_state.pt       optimizer, scheduler, RNG states, iteration (loads with weights_only=True)
    RUN/log.jsonl           one JSON line per logged iteration

Weights are stored with safetensors, never pickled modules, so loading a run cannot execute code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from BackSplitLib.atomic import atomic_file
from BackSplitLib.errors import RunError
from BackSplitLib.schema import LabelSchema

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
BEST_WEIGHTS = "model.safetensors"
LAST_WEIGHTS = "last.safetensors"
LAST_STATE = "last_state.pt"
LOG = "log.jsonl"


@dataclass
class RunInfo:
    """A loaded run folder's metadata."""

    path: Path
    meta: dict
    schema: LabelSchema

    @property
    def arch(self) -> str:
        return self.meta["arch"]["name"]

    @property
    def arch_params(self) -> dict:
        return dict(self.meta["arch"].get("params", {}))

    @property
    def preprocessing(self) -> dict:
        return self.meta["preprocessing"]

    def weights_path(self, which: str = "best") -> Path:
        path = self.path / (BEST_WEIGHTS if which == "best" else LAST_WEIGHTS)
        if not path.is_file():
            other = self.path / (LAST_WEIGHTS if which == "best" else BEST_WEIGHTS)
            if other.is_file():
                return other
            raise RunError(f"run {self.path} has no weights ({BEST_WEIGHTS})",
                           "the training did not finish a validation; resume it with --resume")
        return path


def load_run(run_dir: str | Path) -> RunInfo:
    """Read RUN/model.json; RunError when the folder is not a BackSplit run."""
    run_dir = Path(run_dir)
    meta_path = run_dir / MODEL_JSON
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist")
    if not meta_path.is_file():
        raise RunError(f"{run_dir} is not a BackSplit run folder (no {MODEL_JSON})",
                       "pass the folder written by 'backsplit train' or 'backsplit import-model'")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{meta_path} is damaged: {e.msg}") from None
    for key in ("format_version", "schema", "arch", "preprocessing"):
        if key not in meta:
            raise RunError(f"{meta_path} lacks '{key}'; it was not written by BackSplit")
    if meta["format_version"] > FORMAT_VERSION:
        raise RunError(f"{run_dir} was written by a newer BackSplit (format {meta['format_version']})",
                       "upgrade backsplit")
    return RunInfo(run_dir, meta, LabelSchema.from_dict(meta["schema"], str(meta_path)))


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


def _atomic(path: Path, write) -> None:
    with atomic_file(path) as tmp:
        write(str(tmp))


def save_weights(model: torch.nn.Module, path: Path) -> None:
    _atomic(path, lambda tmp: save_model(model, tmp))


def save_state(state: dict, path: Path) -> None:
    _atomic(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunError(f"training state {path} could not be read ({e}); start again without --resume") from None


def write_model_json(run_dir: Path, meta: dict) -> None:
    meta = {"format_version": FORMAT_VERSION, **meta}
    _atomic(run_dir / MODEL_JSON, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))


def append_log(run_dir: Path, record: dict) -> None:
    with open(run_dir / LOG, "a") as f:
        f.write(json.dumps(record) + "\n")
