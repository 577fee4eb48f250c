"""Networks: every architecture is a class-independent body plus a 1x1x1 head, and head adaptation by
class name preserves the lesion probability exactly."""

from __future__ import annotations

import json

import pytest
import torch

from BackSplitLib.errors import LabelError, RunError
from BackSplitLib.networks import (
    ARCHITECTURES,
    adapt_head,
    build_network,
    default_params,
    dynunet_kernels_strides,
    dynunet_params,
    init_head_prior,
    patch_divisor,
    patch_divisors,
)
from BackSplitLib.schema import LabelSchema

PATCH = (16, 16, 16)

# Small versions of each architecture so the tests run in seconds on two CPU cores.
SMALL = {
    "unet": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
    "dynunet": dynunet_params(PATCH, (1.0, 1.0, 1.0), base_filters=8, max_filters=32),
    "segresnet": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
}

BINARY = LabelSchema.from_names("lesion")
SPLIT = LabelSchema.from_names("lesion", ["liver", "kidney", "spleen", "fat"])


def small(arch: str, num_classes: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(arch, 1, num_classes, **SMALL[arch]).eval()


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomise_head(model: torch.nn.Module) -> None:
    """A trained head is far from its initialisation; random biases make the equivalence tests honest."""
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)
        model.head.bias.normal_(0, 1.0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_gives_class_logits_at_input_resolution(arch):
    model = small(arch, 3)
    out = model(torch.randn(2, 1, *PATCH))
    assert out.shape == (2, 3, *PATCH)
    assert model.body(torch.randn(1, 1, *PATCH)).shape == (1, model.feature_channels, *PATCH)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_binary_and_backsplit_differ_only_in_the_head(arch):
    binary, split = small(arch, 2), small(arch, 6)
    assert n_params(split) - n_params(binary) == (6 - 2) * (binary.feature_channels + 1)
    body_shapes = {k: v.shape for k, v in binary.body.state_dict().items()}
    assert body_shapes == {k: v.shape for k, v in split.body.state_dict().items()}
    assert isinstance(split.head, torch.nn.Conv3d) and split.head.kernel_size == (1, 1, 1)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_default_params_are_json_and_rebuild_the_same_network(arch):
    params = json.loads(json.dumps(default_params(arch, PATCH)))
    rebuilt = build_network(arch, 1, 2, **params)
    assert n_params(rebuilt) == n_params(build_network(arch, 1, 2, **default_params(arch, PATCH)))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_adapting_a_binary_head_keeps_the_lesion_probability(arch):
    model = small(arch, 2)
    randomise_head(model)
    x = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        before = torch.softmax(model(x), 1)[:, BINARY.target_value]
        adapt_head(model, BINARY, SPLIT)
        probs = torch.softmax(model(x), 1)
    after = probs[:, SPLIT.target_value] / probs.sum(1)
    assert model.head.out_channels == SPLIT.num_classes
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    non_lesion = sum(probs[:, SPLIT.labels[n]] for n in ["background", *SPLIT.auxiliary_names])
    torch.testing.assert_close(non_lesion, 1 - before, atol=1e-5, rtol=0)


def test_new_auxiliary_channels_start_as_copies_of_background():
    model = small("unet", 2)
    randomise_head(model)
    old_w, old_b = model.head.weight.clone(), model.head.bias.clone()
    adapt_head(model, BINARY, SPLIT)
    for name in ["background", *SPLIT.auxiliary_names]:
        i = SPLIT.labels[name]
        assert torch.equal(model.head.weight[i], old_w[0])
        torch.testing.assert_close(model.head.bias[i], old_b[0] - torch.log(torch.tensor(5.0)))
    assert torch.equal(model.head.weight[SPLIT.target_value], old_w[1])
    assert torch.equal(model.head.bias[SPLIT.target_value], old_b[1])


def test_adapting_to_a_bigger_split_keeps_existing_classes_exactly():
    base = LabelSchema({"background": 0, "liver": 1, "lesion": 2, "kidney": 3}, "lesion")
    bigger = LabelSchema({"background": 0, "kidney": 1, "spleen": 2, "liver": 3, "lesion": 4}, "lesion")
    model = small("unet", base.num_classes)
    randomise_head(model)
    old_w, old_b = model.head.weight.clone(), model.head.bias.clone()
    x = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        old_probs = torch.softmax(model(x), 1)
        adapt_head(model, base, bigger)
        new_probs = torch.softmax(model(x), 1)
    for name in ("liver", "kidney", "lesion"):
        assert torch.equal(model.head.weight[bigger.labels[name]], old_w[base.labels[name]])
        assert torch.equal(model.head.bias[bigger.labels[name]], old_b[base.labels[name]])
        new, old = new_probs[:, bigger.labels[name]], old_probs[:, base.labels[name]]
        torch.testing.assert_close(new, old, atol=1e-5, rtol=0)
    torch.testing.assert_close(new_probs[:, 0] + new_probs[:, 2], old_probs[:, 0], atol=1e-5, rtol=0)


def test_adapt_head_refuses_to_drop_a_class():
    model = small("unet", SPLIT.num_classes)
    fewer = LabelSchema.from_names("lesion", ["liver"])
    with pytest.raises(LabelError, match="kidney"):
        adapt_head(model, SPLIT, fewer)


def test_adapt_head_refuses_a_different_target():
    with pytest.raises(LabelError, match="target"):
        adapt_head(small("unet", 2), BINARY, LabelSchema.from_names("tumour", ["liver"]))


def test_adapt_head_checks_the_model_matches_its_schema():
    with pytest.raises(RunError, match="output channels"):
        adapt_head(small("unet", 3), BINARY, SPLIT)


def test_unknown_architecture_and_parameters_are_refused():
    with pytest.raises(RunError, match="unknown architecture"):
        build_network("vnet")
    with pytest.raises(RunError, match="unknown parameters"):
        build_network("unet", channels_typo=[8, 16])


def test_patch_divisor_follows_the_strides():
    assert patch_divisor("unet", SMALL["unet"]) == 4
    assert patch_divisor("segresnet", SMALL["segresnet"]) == 4
    assert patch_divisor("unet") == 8
    assert patch_divisors("dynunet", dynunet_params((32, 128, 128), (3.0, 0.8, 0.8))) == (8, 32, 32)


def test_dynunet_does_not_pool_thick_slices_early():
    kernels, strides = dynunet_kernels_strides((32, 128, 128), (3.0, 0.8, 0.8))
    assert strides[0] == [1, 1, 1] and kernels[-1] == [3, 3, 3]
    assert strides[1] == [1, 2, 2] and kernels[0] == [1, 3, 3]
    assert len(kernels) == len(strides)
    for axis, size in enumerate((32, 128, 128)):
        pooled = size
        for s in strides:
            pooled //= s[axis]
        assert pooled >= 4


def test_the_head_prior_starts_binary_and_backsplit_at_the_same_lesion_probability():
    x = torch.randn(1, 1, *PATCH)
    lesion = {}
    for schema in (BINARY, SPLIT):
        model = init_head_prior(small("unet", schema.num_classes), schema, 0.01)
        with torch.no_grad():
            probabilities = torch.softmax(model(x), dim=1)
        lesion[schema.num_classes] = probabilities[:, schema.target_value]
        others = probabilities[:, [i for i in range(schema.num_classes) if i != schema.target_value]]
        # near-zero weights: on average exactly the prior, every voxel close to it whatever the features
        assert float(others.mean()) == pytest.approx(0.99 / (schema.num_classes - 1), rel=0.05)
    for p in lesion.values():
        assert float(p.mean()) == pytest.approx(0.01, rel=0.05)
        assert float((p - 0.01).abs().max()) < 0.005
    with pytest.raises(RunError, match="between 0 and 1"):
        init_head_prior(small("unet", 2), BINARY, 1.0)
