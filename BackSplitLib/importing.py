"""``backsplit import-model``: wrap a model trained elsewhere into a run folder.

Accepted weights: a BackSplit state dict (``body.*`` / ``head.*``), or a plain MONAI network of one of
the three architectures, trained with the same parameters as :func:`networks.default_params` (or
compatible ones):

- ``SegResNet``: its final block is norm, activation, 1x1x1 conv, exactly our body's end plus the head;
  keys are renamed.
- ``DynUNet``: its ``output_block`` is the 1x1x1 head; keys are renamed.
- ``UNet``: its last block is sized by the class count, so the whole UNet becomes the body (its logits
  are the features) and the head starts as the identity. Predictions are unchanged, and fine-tuning can
  still add auxiliary classes exactly (they start as copies of the background logit).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from BackSplitLib import runs as runfiles
from BackSplitLib.errors import RunError
from BackSplitLib.networks import build_network, default_params
from BackSplitLib.schema import LabelSchema


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from .safetensors or a torch file (loaded with ``weights_only=True``: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunError(f"{path} is not a readable weights file ({type(e).__name__}: {str(e)[:120]})",
                       "pass a state dict saved with torch.save(model.state_dict()) or safetensors") from None
    for wrapper in ("state_dict", "model", "network", "net"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def to_backsplit_layout(state: dict[str, torch.Tensor], arch: str, num_classes: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Rename a plain MONAI state dict to BackSplit's body/head layout; returns it and param overrides."""
    if any(k.startswith("head.") for k in state):
        return state, {}
    if arch == "segresnet":
        out = {}
        for key, value in state.items():
            if key.startswith("conv_final.0."):
                out["body.1.0." + key.removeprefix("conv_final.0.")] = value
            elif key.startswith("conv_final.2.conv."):
                out["head." + key.removeprefix("conv_final.2.conv.")] = value
            else:
                out["body.0." + key] = value
        return out, {}
    if arch == "dynunet":
        out = {}
        for key, value in state.items():
            if key.startswith("output_block.conv.conv."):
                out["head." + key.removeprefix("output_block.conv.conv.")] = value
            elif not key.startswith(("output_block.", "deep_supervision_heads.")):
                out["body." + key] = value
        return out, {}
    # Plain UNet: the last up-block's output width is the class count (one channel per schema class).
    out = {"body.0." + k: v for k, v in state.items()}
    out["head.weight"] = torch.eye(num_classes).reshape(num_classes, num_classes, 1, 1, 1)
    out["head.bias"] = torch.zeros(num_classes)
    return out, {"feature_channels": num_classes, "feature_activation": False}


def import_state_dict(weights: Path, arch: str, schema_path: Path, out: Path, spacing, patch_size,
                      ct_window=None) -> Path:
    """Build the run folder ``out`` (model.json + model.safetensors) for foreign weights."""
    schema = LabelSchema.load(schema_path)
    out = Path(out)
    if (out / runfiles.MODEL_JSON).exists():
        raise RunError(f"{out} already holds a run", "choose another --out")
    state, overrides = to_backsplit_layout(read_state_dict(weights), arch, schema.num_classes)
    params = {**default_params(arch, patch_size, spacing), **overrides}
    model = build_network(arch, 1, schema.num_classes, **params)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected or model.head.out_channels != state["head.weight"].shape[0]:
        raise RunError(
            f"{weights} does not fit a {arch} with {schema.num_classes} classes and default parameters "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors"
            + (f", e.g. {(missing or unexpected)[0]}" if missing or unexpected else "") + ")",
            "check --arch and that the schema lists one class per output channel",
        )
    normalization = ({"scheme": "CT", "clip": list(ct_window[:2]), "mean": ct_window[2], "std": ct_window[3]}
                     if ct_window else {"scheme": "zscore"})
    out.mkdir(parents=True, exist_ok=True)
    runfiles.save_weights(model, out / runfiles.BEST_WEIGHTS)
    runfiles.write_model_json(out, {
        "schema": schema.to_dict(),
        "arch": {"name": arch, "params": params},
        "preprocessing": {"orientation": "RAS", "spacing": list(spacing), "normalization": normalization,
                          "patch_size": list(patch_size)},
        "training": {"imported_from": str(weights)},
        "history": [],
        "best_val_dice": None,
    })
    return out
