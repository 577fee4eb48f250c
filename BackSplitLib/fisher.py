"""Empirical expected Fisher information under split labels vs coarsened binary labels (Theorem 1, measured).

A softmax segmentation model gives each voxel class probabilities ``p = softmax(z)``. Trained with split
labels, the voxel's label ``y`` is one of the C classes; trained binary, it only sees the coarsened label
``y' = [y == target]`` whose probability is ``q = p_target`` (background and every auxiliary class summed).
Because ``y'`` is a deterministic function of ``y``, the data-processing inequality for Fisher information
gives ``I_split >= I_binary`` in the Loewner order for *any* parameter block: whatever the binary labels
tell about the parameters, the split labels tell too, and usually more.

Per voxel, in logit space (``z``), the two expected Fisher matrices are closed-form:

- split: ``F_split = diag(p) - p p^T`` (the multinomial covariance, rank C - 1);
- binary: ``F_binary = q (1 - q) (e_t - r)(e_t - r)^T`` with ``r`` the non-target probabilities
  renormalised to sum to 1 (rank 1). This is ``grad q grad q^T / (q (1 - q))`` written without dividing
  by ``1 - q``, so it stays exact for confident voxels.

A parameter block with logit Jacobian ``J`` has Fisher ``J^T F J``, averaged over voxels (the expectation
is over the model's own label distribution at each voxel of the batch: the *expected* Fisher, so it
needs no labels). The blocks measured here, all built from the 1x1x1 head ``z = W h + b``:

- ``target_row``: the target's head row ``(w_t, b_t)``. Split and binary Fisher are *equal* here: the
  target row's score is ``([y = t] - p_t) h``, which only depends on ``y'``. The inequality is tight.
- ``head``: every head row except the background's (the softmax is invariant to adding one vector to
  every row, so one row is fixed to make the block identifiable).
- ``features``: the Fisher of the head's input features ``h`` (``W^T F W``): the information that reaches
  the body's last layers, which every body parameter's Fisher is a congruence of, voxel by voxel.

For each block :func:`compare_fisher` reports the trace, the numerical rank, the smallest eigenvalue on
the subspace the split labels identify (the range of ``I_split``; zero for ``I_binary`` means binary
labels leave a direction unidentified that split labels identify) and the smallest eigenvalue of
``I_split - I_binary`` (non-negative up to round-off, by the theorem).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from BackSplitLib.errors import BackSplitError

#: Eigenvalues below this share of the largest count as zero (numerical rank, identifiable subspace).
RANK_TOLERANCE = 1e-9
DEFAULT_MAX_VOXELS = 20000


class FisherError(BackSplitError):
    """The Fisher information cannot be measured on this model or batch."""


# ------------------------------------------------------------------------------ logit space, per voxel
def split_logit_fisher(logits: torch.Tensor) -> torch.Tensor:
    """``[N, C, C]`` expected Fisher of the logits under the C-class label: ``diag(p) - p p^T``."""
    p = torch.softmax(logits.double(), dim=1)
    return torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)


def binary_logit_fisher(logits: torch.Tensor, target: int) -> torch.Tensor:
    """``[N, C, C]`` expected Fisher of the logits under the coarsened label ``[y == target]``."""
    z = logits.double()
    n, c = z.shape
    if not 0 <= target < c:
        raise FisherError(f"target class {target} is not one of the model's {c} output channels")
    q = torch.softmax(z, dim=1)[:, target]
    # r: the non-target distribution, from the logits so a confident voxel (q -> 1) stays exact.
    others = z.clone()
    others[:, target] = float("-inf")
    r = torch.softmax(others, dim=1)
    u = -r
    u[:, target] = 1.0
    return (q * (1 - q))[:, None, None] * u.unsqueeze(2) * u.unsqueeze(1)


# ------------------------------------------------------------------------------ parameter blocks
def head_fisher(features: torch.Tensor, logit_fisher: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """Mean over voxels of the Fisher of head rows ``rows`` (weights and bias) for ``z = W h + b``.

    ``features`` is ``[N, F]``, ``logit_fisher`` ``[N, C, C]``; the result is ``[R (F + 1), R (F + 1)]``
    ordered row by row, each row's weights then its bias. ``dz_c / d(row c) = [h, 1]``, so the block is
    ``mean_v F_v[rows, rows] (x) h~ h~^T``.
    """
    rows = list(rows)
    h = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
    f = logit_fisher[:, rows][:, :, rows]
    block = torch.einsum("vcd,vi,vj->cidj", f, h, h) / max(1, len(h))
    size = len(rows) * h.shape[1]
    return block.reshape(size, size)


def feature_fisher(weight: torch.Tensor, logit_fisher: torch.Tensor) -> torch.Tensor:
    """``[F, F]`` mean Fisher of the head's input features: ``W^T mean_v(F_v) W`` (``W`` is ``[C, F]``)."""
    w = weight.double().reshape(weight.shape[0], -1)
    return w.T @ logit_fisher.mean(0) @ w


# ------------------------------------------------------------------------------ comparing two matrices
@dataclass
class BlockComparison:
    """Split vs binary Fisher of one parameter block (see the module docstring)."""

    block: str
    dimension: int
    trace_split: float
    trace_binary: float
    rank_split: int
    rank_binary: int
    min_eig_split: float  # on the range of I_split
    min_eig_binary: float  # on the range of I_split
    min_eig_difference: float  # of I_split - I_binary, whole block

    @property
    def trace_ratio(self) -> float:
        return self.trace_split / self.trace_binary if self.trace_binary > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "trace_ratio": self.trace_ratio}


def _rank(eigenvalues: np.ndarray, scale: float) -> int:
    return int(np.count_nonzero(eigenvalues > RANK_TOLERANCE * max(scale, 1e-300)))


def compare_blocks(name: str, split: torch.Tensor, binary: torch.Tensor) -> BlockComparison:
    """Trace, rank and smallest eigenvalues of two Fisher matrices of the same block."""
    s = _symmetric(split)
    b = _symmetric(binary)
    eig_s, vec_s = np.linalg.eigh(s)
    eig_b = np.linalg.eigvalsh(b)
    scale = float(max(eig_s.max(initial=0.0), eig_b.max(initial=0.0)))
    nonzero = eig_s > RANK_TOLERANCE * max(scale, 1e-300)
    identified = vec_s[:, nonzero]
    min_s = float(eig_s[nonzero].min()) if nonzero.any() else 0.0
    min_b = float(np.linalg.eigvalsh(identified.T @ b @ identified).min()) if nonzero.any() else 0.0
    return BlockComparison(
        block=name, dimension=int(s.shape[0]), trace_split=float(np.trace(s)), trace_binary=float(np.trace(b)),
        rank_split=_rank(eig_s, scale), rank_binary=_rank(eig_b, scale), min_eig_split=min_s,
        min_eig_binary=min_b, min_eig_difference=float(np.linalg.eigvalsh(s - b).min()),
    )


def _symmetric(matrix: torch.Tensor) -> np.ndarray:
    m = matrix.detach().double().cpu().numpy()
    return (m + m.T) / 2


def compare_fisher(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, target: int,
                   background: int = 0) -> dict[str, BlockComparison]:
    """Split vs binary Fisher of the ``target_row``, ``head`` and ``features`` blocks on a batch of voxels.

    ``features`` is ``[N, F]`` (the head's input at N voxels), ``weight`` ``[C, F]`` (or the 1x1x1 conv's
    ``[C, F, 1, 1, 1]``), ``bias`` ``[C]``.
    """
    w = weight.detach().double().reshape(weight.shape[0], -1)
    if features.ndim != 2 or features.shape[1] != w.shape[1]:
        raise FisherError(f"features must be [voxels, {w.shape[1]}], got {list(features.shape)}")
    if w.shape[0] < 2:
        raise FisherError("the head needs at least two classes")
    h = features.detach().double()
    logits = h @ w.T + bias.detach().double()
    f_split, f_binary = split_logit_fisher(logits), binary_logit_fisher(logits, target)
    rows = [c for c in range(w.shape[0]) if c != background]
    return {
        "target_row": compare_blocks("target_row", head_fisher(h, f_split, [target]),
                                     head_fisher(h, f_binary, [target])),
        "head": compare_blocks("head", head_fisher(h, f_split, rows), head_fisher(h, f_binary, rows)),
        "features": compare_blocks("features", feature_fisher(w, f_split), feature_fisher(w, f_binary)),
    }


# ------------------------------------------------------------------------------ on a trained run
@torch.no_grad()
def head_inputs(model: torch.nn.Module, images: Sequence[torch.Tensor], patch_size: Sequence[int],
                max_voxels: int = DEFAULT_MAX_VOXELS, seed: int = 0) -> torch.Tensor:
    """``[N, F]`` head-input features at up to ``max_voxels`` voxels drawn uniformly from one patch per
    preprocessed image (``[1, X, Y, Z]``), cropped at the image centre (padded when smaller)."""
    if not hasattr(model, "body"):
        raise FisherError("the model has no body/head split (build it with BackSplitLib.networks)")
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for image in images:
        patch = _centre_patch(torch.as_tensor(image), patch_size).to(device)
        feats = model.body(patch[None])[0]  # [F, X, Y, Z]
        chunks.append(feats.reshape(feats.shape[0], -1).T.double().cpu())
    features = torch.cat(chunks)
    if len(features) > max_voxels:
        keep = np.random.default_rng(seed).choice(len(features), size=max_voxels, replace=False)
        features = features[torch.as_tensor(np.sort(keep))]
    return features


def _centre_patch(image: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """``[1, *patch_size]`` crop around the centre, zero-padded where the image is smaller."""
    out = torch.zeros((image.shape[0], *patch_size), dtype=image.dtype)
    src, dst = [], []
    for n, p in zip(image.shape[1:], patch_size):
        start = max(0, (n - p) // 2)
        length = min(n, p)
        offset = max(0, (p - n) // 2)
        src.append(slice(start, start + length))
        dst.append(slice(offset, offset + length))
    out[(slice(None), *dst)] = image[(slice(None), *src)]
    return out


def measure_run(run_dir: str | Path, image_paths: Sequence[str | Path], max_voxels: int = DEFAULT_MAX_VOXELS,
                seed: int = 0, device: str = "cpu") -> dict:
    """Split vs binary Fisher blocks of a trained run's head on a batch drawn from ``image_paths``.

    Returns ``{"blocks": {name: BlockComparison.to_dict()}, "voxels", "classes", "feature_channels",
    "spectrum": {"split": [...], "binary": [...]}}`` (the ``features`` block's eigenvalues, descending).
    """
    from BackSplitLib.inference import Predictor
    from BackSplitLib.io import read_image

    predictor = Predictor.from_run(run_dir, device=device)
    schema = predictor.schema
    if schema.num_classes < 3:
        raise FisherError(f"run {run_dir} is binary: split and binary labels are the same there",
                          "measure a BackSplit run (with auxiliary classes)")
    images = [predictor.preprocess(read_image(p, "image")).as_tensor() for p in image_paths]
    if not images:
        raise FisherError("no images to measure the Fisher information on")
    model = predictor.model
    features = head_inputs(model, images, predictor.info.preprocessing["patch_size"], max_voxels, seed)
    head = model.head
    blocks = compare_fisher(features, head.weight.cpu(), head.bias.cpu(), schema.target_value)
    w = head.weight.detach().double().cpu().reshape(head.weight.shape[0], -1)
    logits = features @ w.T + head.bias.detach().double().cpu()
    spectra = {
        kind: np.sort(np.linalg.eigvalsh(_symmetric(feature_fisher(w, fisher))))[::-1].clip(min=0).tolist()
        for kind, fisher in (("split", split_logit_fisher(logits)),
                             ("binary", binary_logit_fisher(logits, schema.target_value)))
    }
    return {"blocks": {k: v.to_dict() for k, v in blocks.items()}, "voxels": int(len(features)),
            "classes": schema.num_classes, "feature_channels": int(features.shape[1]), "spectrum": spectra}
