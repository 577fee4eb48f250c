"""Theorem 1 on a model small enough to compute the expected Fisher information exactly.

The exact matrices enumerate every label: ``I = mean_v sum_y P(y | v) s_y s_y^T`` with the score ``s_y``
from autograd, for the split label (C classes) and the coarsened binary label (target or not).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from BackSplitLib.fisher import (
    FisherError, binary_logit_fisher, compare_blocks, compare_fisher, head_fisher, split_logit_fisher,
)

TARGET = 2


def _model(classes: int = 4, features: int = 3, voxels: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, features, generator=g, dtype=torch.float64)
    b = torch.randn(classes, generator=g, dtype=torch.float64)
    h = torch.randn(voxels, features, generator=g, dtype=torch.float64)
    return w, b, h


def _exact_fisher(w, b, h, target: int, coarsened: bool) -> torch.Tensor:
    """Expected Fisher of all head parameters (W row by row with each row's bias), labels enumerated."""
    theta = torch.cat([w, b[:, None]], 1).reshape(-1).clone().requires_grad_(True)
    c, f = w.shape
    total = torch.zeros(theta.numel(), theta.numel(), dtype=torch.float64)
    for v in range(len(h)):
        params = theta.reshape(c, f + 1)
        logp = torch.log_softmax(params[:, :f] @ h[v] + params[:, f], 0)
        if coarsened:
            q = logp[target].exp()
            outcomes = [(logp[target], q), (torch.log1p(-q), 1 - q)]
        else:
            outcomes = [(logp[y], logp[y].exp()) for y in range(c)]
        for log_prob, prob in outcomes:
            (score,) = torch.autograd.grad(log_prob, theta, retain_graph=True)
            total += prob.detach() * torch.outer(score, score)
    return total / len(h)


def test_split_fisher_dominates_binary_fisher_in_loewner_order():
    w, b, h = _model()
    split = _exact_fisher(w, b, h, TARGET, coarsened=False)
    binary = _exact_fisher(w, b, h, TARGET, coarsened=True)
    assert torch.linalg.eigvalsh(split - binary).min() >= -1e-8


def test_split_labels_carry_strictly_more_information_with_auxiliary_classes():
    w, b, h = _model(classes=4)
    split = _exact_fisher(w, b, h, TARGET, coarsened=False)
    binary = _exact_fisher(w, b, h, TARGET, coarsened=True)
    assert torch.trace(split) > 1.05 * torch.trace(binary)
    assert torch.linalg.matrix_rank(split) > torch.linalg.matrix_rank(binary)


def test_with_two_classes_split_and_binary_labels_are_the_same():
    w, b, h = _model(classes=2)
    split = _exact_fisher(w, b, h, 1, coarsened=False)
    binary = _exact_fisher(w, b, h, 1, coarsened=True)
    torch.testing.assert_close(split, binary)


def test_closed_form_head_fisher_matches_the_enumerated_one():
    w, b, h = _model()
    logits = h @ w.T + b
    rows = list(range(w.shape[0]))
    torch.testing.assert_close(head_fisher(h, split_logit_fisher(logits), rows),
                               _exact_fisher(w, b, h, TARGET, coarsened=False))
    torch.testing.assert_close(head_fisher(h, binary_logit_fisher(logits, TARGET), rows),
                               _exact_fisher(w, b, h, TARGET, coarsened=True))


def test_binary_fisher_stays_exact_for_a_confident_voxel():
    logits = torch.tensor([[0.0, -40.0, 40.0, -3.0]], dtype=torch.float64)
    fisher = binary_logit_fisher(logits, TARGET)
    assert torch.isfinite(fisher).all()
    assert torch.linalg.eigvalsh(split_logit_fisher(logits)[0] - fisher[0]).min() >= -1e-12


def test_target_row_block_is_equal_and_shared_blocks_gain():
    w, b, h = _model(classes=5, features=4, voxels=40)
    blocks = compare_fisher(h, w, b, TARGET)
    row = blocks["target_row"]
    assert row.trace_split == pytest.approx(row.trace_binary, rel=1e-10)
    for name in ("head", "features"):
        assert blocks[name].min_eig_difference >= -1e-8
        assert blocks[name].trace_ratio > 1.0


def test_few_voxels_leave_directions_only_split_labels_identify():
    # Binary labels give one direction per voxel in logit space, split labels C - 1.
    w, b, h = _model(classes=5, features=4, voxels=3)
    head = compare_fisher(h, w, b, TARGET)["head"]
    assert head.rank_binary <= 3 < head.rank_split
    assert head.min_eig_split > 0
    assert head.min_eig_binary == pytest.approx(0.0, abs=1e-10)


def test_compare_blocks_reports_a_violation_as_a_negative_eigenvalue():
    a = torch.diag(torch.tensor([1.0, 2.0], dtype=torch.float64))
    result = compare_blocks("x", a, 2 * a)
    assert result.min_eig_difference == pytest.approx(-2.0)
    assert np.isclose(result.trace_ratio, 0.5)


def test_features_of_the_wrong_width_are_refused():
    w, b, h = _model()
    with pytest.raises(FisherError, match="features must be"):
        compare_fisher(h[:, :2], w, b, TARGET)
