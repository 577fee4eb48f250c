"""Segmentation networks as a class-independent body plus a 1x1x1 convolution head.

BackSplit's promise is "no extra cost": a binary model and a BackSplit model with any number of
auxiliary classes must differ only in the last 1x1x1 convolution. Every architecture here is therefore
built as ``body`` (input -> a feature map at full input resolution with ``feature_channels`` channels)
plus ``head`` (``nn.Conv3d(feature_channels, num_classes, 1)``). ``adapt_head`` changes the classes of a
trained model by name, so that fine-tuning a binary model starts from exactly its predictions.

Architectures (the three the BackSplit paper used), built from MONAI blocks:

- ``unet``: MONAI ``UNet`` with ``out_channels`` set to the first level's width, so its last up-block
  (a full-resolution transposed conv and residual unit) is class-independent; its output is linear
  (MONAI ends the top block "conv only"), so the body adds a norm + activation before the head and the
  head sees non-linear features like every other layer's input.
- ``dynunet``: MONAI ``DynUNet`` (nnU-Net's network), kernels and strides from the patch size and spacing
  the way nnU-Net / MONAI's DynUNet tutorial derive them; its own 1x1x1 output block is replaced by our
  head (the last decoder block already ends in norm + activation). Deep supervision off.
- ``segresnet``: MONAI ``SegResNet`` without its final block; the body ends in the same norm + activation
  that ``SegResNet``'s final block applies, and the head is that block's 1x1x1 convolution, so the model
  is exactly a ``SegResNet``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets import DynUNet, SegResNet, UNet
from torch import nn

from .errors import DatasetError, LabelError, RunError
from .schema import BACKGROUND, LabelSchema
from .vocabulary import ARCHITECTURES

#: Patch size and spacing assumed when ``dynunet`` parameters are asked for without them.
DEFAULT_PATCH_SIZE = (64, 64, 64)
DEFAULT_SPACING = (1.0, 1.0, 1.0)

#: nnU-Net's limits: at most this many poolings per axis, feature maps no smaller than 4 voxels.
_MAX_POOLINGS = 5
_MIN_POOLED_SIZE = 4


class SegmentationNetwork(nn.Module):
    """A class-independent ``body`` followed by a 1x1x1 convolution ``head``.

    ``body`` maps an input ``[B, in_channels, X, Y, Z]`` to features ``[B, feature_channels, X, Y, Z]``;
    ``head`` maps them to class logits. ``arch`` and ``params`` record how the body was built (the
    JSON-serialisable dictionary stored in model.json), so a run folder can rebuild it.
    """

    def __init__(self, body: nn.Module, feature_channels: int, num_classes: int,
                 arch: str = "", params: Mapping[str, Any] | None = None):
        super().__init__()
        self.body = body
        self.head = nn.Conv3d(feature_channels, num_classes, kernel_size=1)
        self.feature_channels = feature_channels
        self.arch = arch
        self.params = dict(params or {})

    @property
    def num_classes(self) -> int:
        return self.head.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


# ---------------------------------------------------------------------------------------- parameters
def dynunet_kernels_strides(
    patch_size: Sequence[int], spacing: Sequence[float]
) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net's kernel sizes and strides for a patch size and voxel spacing (MONAI DynUNet tutorial).

    An axis is pooled while its spacing is at most twice the finest current spacing and its size stays at
    least ``2 * 4`` voxels; an axis much coarser than the finest gets 1-voxel kernels until pooling the
    others has made the spacing comparable (so thick-slice CT is not blurred across slices early).
    Returns ``(kernel_size, strides)`` with the first stride ``[1, 1, 1]`` as DynUNet expects.
    """
    if len(patch_size) != 3 or len(spacing) != 3:
        raise RunError(f"patch size and spacing must have 3 values, got {list(patch_size)} and {list(spacing)}")
    if any(float(s) <= 0 for s in spacing):
        raise RunError(f"voxel spacing must be positive, got {list(spacing)}")
    sizes = [float(s) for s in patch_size]
    spacings = [float(s) for s in spacing]
    kernels: list[list[int]] = []
    strides: list[list[int]] = []
    poolings = [0, 0, 0]
    while True:
        ratios = [sp / min(spacings) for sp in spacings]
        stride = [
            2 if ratio <= 2 and size >= 2 * _MIN_POOLED_SIZE and size % 2 == 0 and n < _MAX_POOLINGS else 1
            for ratio, size, n in zip(ratios, sizes, poolings)
        ]
        kernel = [3 if ratio <= 2 else 1 for ratio in ratios]
        if all(s == 1 for s in stride):
            break
        sizes = [size / s for size, s in zip(sizes, stride)]
        spacings = [sp * s for sp, s in zip(spacings, stride)]
        poolings = [n + (s == 2) for n, s in zip(poolings, stride)]
        kernels.append(kernel)
        strides.append(stride)
    strides.insert(0, [1, 1, 1])
    kernels.append([3, 3, 3])
    return kernels, strides


def dynunet_params(
    patch_size: Sequence[int] = DEFAULT_PATCH_SIZE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    base_filters: int = 32,
    max_filters: int = 320,
) -> dict:
    """DynUNet parameters for a patch size and spacing: nnU-Net's kernels, strides and filter widths
    (``base_filters`` doubling per level up to ``max_filters``; nnU-Net uses 32 and 320)."""
    kernels, strides = dynunet_kernels_strides(patch_size, spacing)
    return {
        "kernel_size": kernels,
        "strides": strides,
        "filters": [min(base_filters * 2**i, max_filters) for i in range(len(strides))],
        "norm_name": ["instance", {"affine": True}],
        "act_name": ["leakyrelu", {"inplace": True, "negative_slope": 0.01}],
        "res_block": False,
        "dropout": None,
    }


def default_params(
    arch: str, patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None
) -> dict:
    """Default, JSON-serialisable parameters of an architecture (stored in model.json).

    Only ``dynunet`` depends on ``patch_size`` and ``spacing`` (its depth and kernels follow them);
    the other architectures ignore them.
    """
    _check_arch(arch)
    if arch == "unet":
        return {
            "channels": [16, 32, 64, 128],
            "strides": [2, 2, 2],
            "num_res_units": 2,
            "norm": "instance",
            "act": "prelu",
            "dropout": 0.0,
            "feature_channels": None,
            "feature_activation": True,
        }
    if arch == "dynunet":
        return dynunet_params(patch_size or DEFAULT_PATCH_SIZE, spacing or DEFAULT_SPACING)
    return {
        "init_filters": 16,
        "blocks_down": [1, 2, 2, 4],
        "blocks_up": [1, 1, 1],
        "norm": ["group", {"num_groups": 8}],
        "act": ["relu", {"inplace": True}],
        "dropout_prob": None,
        "upsample_mode": "nontrainable",
    }


def patch_divisors(arch: str, params: Mapping[str, Any] | None = None) -> tuple[int, int, int]:
    """Per-axis numbers a patch size must be divisible by: the product of the strides along each axis."""
    _check_arch(arch)
    params = {**default_params(arch), **(params or {})}
    if arch == "unet":
        d = math.prod(int(s) for s in params["strides"])
        return (d, d, d)
    if arch == "dynunet":
        strides = [_triple(s) for s in params["strides"]]
        return tuple(math.prod(s[axis] for s in strides) for axis in range(3))  # type: ignore[return-value]
    d = 2 ** (len(params["blocks_down"]) - 1)
    return (d, d, d)


def patch_divisor(arch: str, params: Mapping[str, Any] | None = None) -> int:
    """One number every patch axis must be divisible by (the largest per-axis divisor: strides are
    powers of two, so a multiple of the largest is a multiple of all)."""
    return max(patch_divisors(arch, params))


MAX_PATCH_SIDE = 512


def check_patch_size(patch_size: Sequence[int], arch: str, params: Mapping[str, Any] | None = None) -> None:
    """DatasetError unless every patch side is a multiple of the network's divisor along that axis and
    between it and MAX_PATCH_SIDE (dynunet's strides follow the patch when ``params`` is None)."""
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 3:
        raise DatasetError(f"a patch size has 3 sides, got {len(patch)}")
    divisors = patch_divisors(arch, params or default_params(arch, patch if min(patch) > 0 else None))
    for side, divisor in zip(patch, divisors):
        if not divisor <= side <= MAX_PATCH_SIDE or side % divisor:
            raise DatasetError(f"patch size {list(patch)} does not fit '{arch}': each side must be a multiple of "
                               f"{divisor} between {divisor} and {MAX_PATCH_SIDE}",
                               f"use e.g. {[max(divisor, min(MAX_PATCH_SIDE, round(s / divisor) * divisor)) for s in patch]}")


# ---------------------------------------------------------------------------------------- building
def build_network(arch: str, in_channels: int = 1, num_classes: int = 2, **params: Any) -> SegmentationNetwork:
    """Build ``arch`` as a class-independent body plus a 1x1x1 head with ``num_classes`` outputs.

    ``params`` override :func:`default_params` key by key (the dictionary stored in model.json).
    """
    _check_arch(arch)
    if num_classes < 2:
        raise LabelError(f"a segmentation network needs at least 2 classes (background and target), got {num_classes}")
    defaults = default_params(arch)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise RunError(f"unknown parameters {unknown} for architecture '{arch}' (known: {sorted(defaults)})")
    merged = {**defaults, **params}
    builders = {"unet": _unet_body, "dynunet": _dynunet_body, "segresnet": _segresnet_body}
    body, feature_channels = builders[arch](in_channels, merged)
    return SegmentationNetwork(body, feature_channels, num_classes, arch, merged)


def _unet_body(in_channels: int, p: Mapping[str, Any]) -> tuple[nn.Module, int]:
    # ``feature_channels`` / ``feature_activation`` exist for imported plain MONAI UNets, whose last block
    # already outputs class logits: the whole UNet becomes the body and the head starts as the identity.
    width = int(p.get("feature_channels") or p["channels"][0])
    unet = UNet(
        spatial_dims=3, in_channels=in_channels, out_channels=width,
        channels=[int(c) for c in p["channels"]], strides=[int(s) for s in p["strides"]],
        num_res_units=int(p["num_res_units"]), norm=_layer_arg(p["norm"]), act=_layer_arg(p["act"]),
        dropout=p["dropout"],
    )
    if not p.get("feature_activation", True):
        return nn.Sequential(unet), width
    # UNet's top block ends in a bare convolution; norm + activation make the head's input non-linear.
    return nn.Sequential(unet, _norm_act(p["norm"], p["act"], width)), width


def _dynunet_body(in_channels: int, p: Mapping[str, Any]) -> tuple[nn.Module, int]:
    strides = [_triple(s) for s in p["strides"]]
    net = DynUNet(
        spatial_dims=3, in_channels=in_channels, out_channels=1,
        kernel_size=[_triple(k) for k in p["kernel_size"]], strides=strides, upsample_kernel_size=strides[1:],
        filters=[int(f) for f in p["filters"]], dropout=p["dropout"], norm_name=_layer_arg(p["norm_name"]),
        act_name=_layer_arg(p["act_name"]), deep_supervision=False, res_block=bool(p["res_block"]),
    )
    net.output_block = nn.Identity()  # our head replaces DynUNet's 1x1x1 output convolution
    return net, int(p["filters"][0])


def _segresnet_body(in_channels: int, p: Mapping[str, Any]) -> tuple[nn.Module, int]:
    width = int(p["init_filters"])
    net = SegResNet(
        spatial_dims=3, init_filters=width, in_channels=in_channels, out_channels=1,
        dropout_prob=p["dropout_prob"], act=_layer_arg(p["act"]), norm=_layer_arg(p["norm"]),
        use_conv_final=False, blocks_down=tuple(p["blocks_down"]), blocks_up=tuple(p["blocks_up"]),
        upsample_mode=p["upsample_mode"],
    )
    net.conv_final = nn.Identity()  # unused with use_conv_final=False; drop its class-sized weights
    # SegResNet's final block is norm, activation, 1x1x1 conv: the first two stay in the body.
    return nn.Sequential(net, _norm_act(p["norm"], p["act"], width)), width


def _norm_act(norm: Any, act: Any, channels: int) -> nn.Sequential:
    return nn.Sequential(
        get_norm_layer(name=_layer_arg(norm), spatial_dims=3, channels=channels), get_act_layer(_layer_arg(act))
    )


def _layer_arg(value: Any) -> Any:
    """JSON stores MONAI's ``(name, {args})`` layer specs as lists; MONAI wants tuples."""
    if isinstance(value, list):
        return tuple(value)
    return value


def _triple(value: int | Sequence[int]) -> list[int]:
    return [int(value)] * 3 if isinstance(value, (int, float)) else [int(v) for v in value]


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise RunError(f"unknown architecture '{arch}'", f"choose one of {', '.join(ARCHITECTURES)}")


# ---------------------------------------------------------------------------------------- head adaptation
def adapt_head(model: SegmentationNetwork, schema_from: LabelSchema, schema_to: LabelSchema) -> SegmentationNetwork:
    """Give ``model`` the classes of ``schema_to``, matching output channels by class name (in place).

    Classes of both schemas keep their head weights and biases. Each new auxiliary class starts as a copy
    of the background channel; with K = background plus the new classes, those K channels' biases are
    lowered by log K, so their summed probability equals the old background probability and every other
    class's probability is unchanged: the adapted model's collapsed lesion probability equals the old
    model's. ``schema_to`` must name the same target and contain every class of ``schema_from`` (the
    engine unions schemas by name): dropping an auxiliary class would change the predictions.
    """
    head = model.head
    if head.out_channels != schema_from.num_classes:
        raise RunError(
            f"the model has {head.out_channels} output channels but its schema has {schema_from.num_classes} "
            f"classes ({schema_from.describe_classes()})"
        )
    if schema_to.target != schema_from.target:
        raise LabelError(
            f"the new schema's target '{schema_to.target}' differs from the model's target '{schema_from.target}'",
            "rename the lesion class so both use the same name",
        )
    missing = [n for n in schema_from.class_names if n not in schema_to.class_names]
    if missing:
        raise LabelError(
            f"classes {missing} of the base model are not in the new schema ({schema_to.describe_classes()})",
            "the new schema must contain every class of the base model; use LabelSchema.union",
        )
    new = [n for n in schema_to.class_names if n not in schema_from.class_names]
    shift = math.log(1 + len(new))
    old_index = {name: i for i, name in enumerate(schema_from.class_names)}
    background = old_index[BACKGROUND]
    new_head = nn.Conv3d(head.in_channels, schema_to.num_classes, kernel_size=1).to(
        device=head.weight.device, dtype=head.weight.dtype
    )
    with torch.no_grad():
        for i, name in enumerate(schema_to.class_names):
            src = old_index.get(name, background)
            new_head.weight[i].copy_(head.weight[src])
            new_head.bias[i].copy_(head.bias[src])
            if name == BACKGROUND or name in new:
                new_head.bias[i] -= shift
    new_head.weight.requires_grad_(head.weight.requires_grad)
    new_head.bias.requires_grad_(head.bias.requires_grad)
    model.head = new_head
    return model


def init_head_prior(model: SegmentationNetwork, schema: LabelSchema, target_prior: float) -> SegmentationNetwork:
    """Start every voxel at the class prior, the focal-loss (RetinaNet) initialisation (in place).

    The head's weights are drawn from N(0, 0.01) and its biases set so that the softmax gives the target
    ``target_prior`` and shares the rest equally among the other classes. A binary and a BackSplit head
    then start from the same collapsed lesion probability, whatever the number of auxiliary classes:
    neither arm begins with a handicap (with PyTorch's default initialisation the target starts near 1/K).
    """
    if not 0.0 < target_prior < 1.0:
        raise RunError(f"the head's target prior must be between 0 and 1, got {target_prior}")
    others = model.num_classes - 1
    with torch.no_grad():
        nn.init.normal_(model.head.weight, std=0.01)
        model.head.bias.fill_(math.log((1.0 - target_prior) / others))
        model.head.bias[schema.target_value] = math.log(target_prior)
    return model
