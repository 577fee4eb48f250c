"""BackSplitLoss: MONAI's Dice+CE when fully labelled, the marginal loss (Shi et al. 2021) for partially
labelled samples, checked against an independent numpy computation from the definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from BackSplitLib.errors import LabelError
from BackSplitLib.losses import BackSplitLoss

C = 5  # background, three auxiliary classes, lesion
IGNORE = C
SHAPE = (6, 5, 4)


def batch(seed: int = 0, b: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random logits, a label map, and which classes each sample labels: sample 0 labels everything,
    sample 1 lacks classes 1 and 2, sample 2 labels only background and lesion; some voxels are ignore."""
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(b, C, *SHAPE, generator=g, dtype=torch.float64)
    labelled = torch.ones(b, C, dtype=torch.bool)
    labelled[1, 1:3] = False
    labelled[2, 1:4] = False
    label = torch.empty(b, 1, *SHAPE, dtype=torch.long)
    for s in range(b):
        classes = labelled[s].nonzero().flatten()
        label[s, 0] = classes[torch.randint(len(classes), SHAPE, generator=g)]
    label[torch.rand(label.shape, generator=g) < 0.2] = IGNORE
    return logits, label, labelled


def numpy_marginal_loss(logits, label, labelled, include_background=False, batch_dice=True, smooth=1e-5,
                        target=None) -> float:
    """The marginal Dice+CE written from its definition, one sample and one class at a time."""
    logits, label, labelled = logits.numpy().astype(np.float64), label.numpy()[:, 0], labelled.numpy()
    b, c = logits.shape[:2]
    e = np.exp(logits - logits.max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    ce_terms = []
    inter, pred, truth, scored = (np.zeros((b, c)) for _ in range(4))
    for s in range(b):
        keep = labelled[s].copy()
        keep[0] = True
        merged = prob[s].copy()
        merged[0] = prob[s, 0] + sum(prob[s, k] for k in range(c) if not keep[k])
        valid = label[s] != IGNORE
        for k in range(c):
            if not keep[k]:
                continue
            truth_k = (label[s] == k) & valid
            inter[s, k] = (merged[k] * truth_k).sum()
            pred[s, k] = (merged[k] * valid).sum()
            truth[s, k] = truth_k.sum()
            scored[s, k] = 1
        ce_terms.extend(-np.log(merged[label[s][valid], np.nonzero(valid)[0], np.nonzero(valid)[1],
                                       np.nonzero(valid)[2]]))
    first = 0 if include_background else 1
    dice_terms, target_terms = [], []
    for k in range(first, c):
        terms = target_terms if k == target else dice_terms
        if batch_dice:
            rows = scored[:, k] == 1
            if rows.any():
                i, p, t = inter[rows, k].sum(), pred[rows, k].sum(), truth[rows, k].sum()
                terms.append(1 - (2 * i + smooth) / (p + t + smooth))
        else:
            for s in range(b):
                if scored[s, k]:
                    terms.append(1 - (2 * inter[s, k] + smooth) / (pred[s, k] + truth[s, k] + smooth))
    if target is None:
        return float(np.mean(ce_terms) + np.mean(dice_terms))
    # Target Dice plus the mean Dice of the other classes.
    return float(np.mean(ce_terms) + np.mean(target_terms) + (np.mean(dice_terms) if dice_terms else 0.0))


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_marginal_loss_matches_numpy_definition(include_background, batch_dice):
    logits, label, labelled = batch()
    loss = BackSplitLoss(C, ignore_value=IGNORE, include_background=include_background, batch_dice=batch_dice)
    expected = numpy_marginal_loss(logits, label, labelled, include_background, batch_dice)
    assert loss(logits, label, labelled).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_fully_labelled_loss_is_monai_dice_ce(include_background, batch_dice):
    logits, label, _ = batch()
    label = label.clamp_max(C - 1)
    ours = BackSplitLoss(C, include_background=include_background, batch_dice=batch_dice)(logits, label)
    monai = DiceCELoss(to_onehot_y=True, softmax=True, include_background=include_background, batch=batch_dice)
    assert ours.item() == pytest.approx(monai(logits, label).item(), rel=1e-6)


def test_marginal_equals_naive_when_every_class_is_labelled():
    logits, label, labelled = batch()
    labelled[:] = True
    marginal = BackSplitLoss(C, IGNORE, partial="marginal")(logits, label, labelled)
    naive = BackSplitLoss(C, IGNORE, partial="naive")(logits, label, labelled)
    assert marginal.item() == naive.item()
    assert marginal.item() == BackSplitLoss(C, IGNORE)(logits, label, None).item()


def test_naive_treats_unlabelled_classes_as_background():
    logits, label, labelled = batch()
    naive = BackSplitLoss(C, IGNORE, partial="naive")(logits, label, labelled).item()
    all_labelled = numpy_marginal_loss(logits, label, torch.ones_like(labelled))
    assert naive == pytest.approx(all_labelled, rel=1e-5)
    assert naive != pytest.approx(BackSplitLoss(C, IGNORE)(logits, label, labelled).item(), rel=1e-3)


def test_ignore_voxels_do_not_change_the_loss_or_get_gradients():
    logits, label, labelled = batch()
    ignored = (label == IGNORE).expand_as(logits)
    changed = torch.where(ignored, torch.randn_like(logits) * 10, logits).requires_grad_(True)
    loss_fn = BackSplitLoss(C, IGNORE)
    loss = loss_fn(changed, label, labelled)
    assert loss.item() == pytest.approx(loss_fn(logits, label, labelled).item(), rel=1e-12)
    loss.backward()
    assert changed.grad[ignored].abs().max() == 0


def test_gradients_flow_to_every_scored_voxel():
    logits, label, labelled = batch()
    logits = logits.float().requires_grad_(True)
    loss = BackSplitLoss(C, IGNORE)(logits, label, labelled)
    loss.backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    valid = (label != IGNORE).expand_as(grad)
    assert (grad[valid].abs() > 0).float().mean() > 0.99


def test_loss_runs_in_float32_under_autocast():
    logits, label, labelled = batch()
    logits = logits.float()
    expected = BackSplitLoss(C, IGNORE)(logits, label, labelled)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = BackSplitLoss(C, IGNORE)(logits.bfloat16(), label, labelled)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=2e-2)


def test_bad_arguments_are_refused_with_clear_errors():
    logits, label, labelled = batch()
    with pytest.raises(LabelError, match="partial"):
        BackSplitLoss(C, partial="exclusive")
    with pytest.raises(LabelError, match="class channels"):
        BackSplitLoss(C + 1)(logits, label)
    with pytest.raises(LabelError, match="labelled"):
        BackSplitLoss(C, IGNORE)(logits, label, labelled[:, :2])


@pytest.mark.parametrize("partial", [True, False])
@pytest.mark.parametrize("ignore", [IGNORE, None])
def test_hand_written_gradient_matches_finite_differences(partial, ignore):
    logits, label, labelled = batch(b=3)
    logits = logits[:, :, :3, :2, :2].contiguous().requires_grad_(True)
    label = label[:, :, :3, :2, :2] if ignore is not None else label[:, :, :3, :2, :2].clamp_max(C - 1)
    loss_fn = BackSplitLoss(C, ignore, lambda_dice=1.3, lambda_ce=0.7)
    assert torch.autograd.gradcheck(lambda t: loss_fn(t, label, labelled if partial else None), (logits,))


def test_extreme_logits_give_a_finite_loss_and_gradient():
    logits, label, labelled = batch()
    logits = logits.float()
    logits[:, C - 1] += 300.0  # every voxel confidently lesion: merged backgrounds underflow in float32
    logits.requires_grad_(True)
    loss = BackSplitLoss(C, IGNORE)(logits, label, labelled)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("batch_dice", [True, False])
def test_target_dice_plus_mean_auxiliary_dice_matches_numpy_definition(batch_dice):
    logits, label, labelled = batch(seed=5)
    target = logits.shape[1] - 1
    loss = BackSplitLoss(logits.shape[1], ignore_value=IGNORE, target_value=target, batch_dice=batch_dice)
    expected = numpy_marginal_loss(logits, label, labelled, batch_dice=batch_dice, target=target)
    assert loss(logits.double(), label, labelled).item() == pytest.approx(expected, rel=1e-6)


def test_target_weighting_leaves_a_binary_loss_unchanged():
    torch.manual_seed(0)
    logits, label = torch.randn(2, 2, 6, 6, 6), torch.randint(0, 2, (2, 1, 6, 6, 6))
    assert BackSplitLoss(2, target_value=1)(logits, label).item() == pytest.approx(BackSplitLoss(2)(logits, label).item())


def test_auxiliary_weight_mixes_the_split_and_the_collapsed_loss():
    # weight 0: exactly the binary loss of the collapsed probabilities; 1: the full BackSplit loss.
    torch.manual_seed(1)
    c, target = 5, 4
    logits, label = torch.randn(2, c, 6, 6, 6, dtype=torch.float64), torch.randint(0, c, (2, 1, 6, 6, 6))
    full = BackSplitLoss(c, target_value=target)(logits, label).item()
    p = torch.softmax(logits, 1)
    binary_logits = torch.stack([torch.log1p(-p[:, target]), torch.log(p[:, target])], 1)
    binary = BackSplitLoss(2, target_value=1)(binary_logits, (label == target).long()).item()
    for weight in (0.0, 0.3, 1.0):
        mixed = BackSplitLoss(c, target_value=target, auxiliary_weight=weight)(logits, label).item()
        assert mixed == pytest.approx(weight * full + (1 - weight) * binary, rel=1e-6)


def test_every_dice_weighting_trains_with_the_default_auxiliary_weight():
    # dice = "mean" / "ce" with the default auxiliary weight (< 1) must build a loss (it raised before)
    from BackSplitLib.vocabulary import DEFAULT_AUXILIARY_WEIGHT

    torch.manual_seed(2)
    c, target = 4, 3
    logits, label = torch.randn(2, c, 4, 4, 4), torch.randint(0, c, (2, 1, 4, 4, 4))
    plain = BackSplitLoss(c)(logits, label).item()
    as_mean = BackSplitLoss(c, target_value=target, plain_dice_mean=True)(logits, label).item()
    assert as_mean == pytest.approx(plain)
    for settings in ({"plain_dice_mean": True}, {"lambda_dice": 0.0}):
        loss = BackSplitLoss(c, target_value=target, auxiliary_weight=DEFAULT_AUXILIARY_WEIGHT, **settings)
        assert torch.isfinite(loss(logits, label))
