"""The BackSplit training loss: multi-class soft Dice + cross-entropy with partial supervision.

A case that does not label some classes (``cases_without_auxiliary``, ``case_labels``) is trained with the
marginal loss of Shi et al. 2021 ("Marginal loss and exclusion loss for partially supervised multi-organ
segmentation"): for that case the probabilities of the classes it does not label are summed into its
background before Dice and cross-entropy, so the network is never told that an unlabelled organ is
background. ``partial="naive"`` keeps the alternative for comparison: unlabelled classes are treated as
background (the label map is used as is).

``auxiliary_weight`` w mixes the split loss with the binary loss of the collapsed lesion probability:
``w * split + (1 - w) * collapsed``. Cross-entropy factorises as collapsed CE + CE of the auxiliary class given
"not lesion", and the split Dice is the lesion's Dice plus the mean auxiliary Dice, so the mix is the binary
loss plus ``w`` times the auxiliary classes' own terms: the lesion's gradient is the binary model's, the
auxiliary classes add ``w`` of their supervision. Training uses ``vocabulary.DEFAULT_AUXILIARY_WEIGHT``
(0.25): with w = 1 the lesion head stalled for hundreds of iterations on some seeds (docs/RESULTS.md).

The loss is MONAI's ``DiceCELoss`` (softmax, one-hot target, ``smooth_nr = smooth_dr = 1e-5``, cross-entropy
averaged over voxels) computed by hand, because ``DiceCELoss`` can neither merge a per-sample set of
channels into the background nor leave ignore voxels out, and it materialises one-hot and product tensors
of the full ``[B, C, X, Y, Z]`` size, in the forward pass and again in autograd's backward. Issue 6's cost
target (a BackSplit training step within 5 % of a binary one) leaves little room for class-sized work, so
the loss is one ``autograd.Function`` with its gradient written out: the only class-sized tensors are the
softmax and the gradient itself; per-class sums come from a scatter of per-voxel values by label.
With every class labelled and no ignore voxels it equals
``DiceCELoss(to_onehot_y=True, softmax=True, include_background=..., batch=...)``; the tests check the
value against MONAI and an independent numpy computation, and the gradient with ``gradcheck``.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import LabelError
from .vocabulary import PARTIAL_LABEL_MODES as PARTIAL_MODES


class BackSplitLoss(nn.Module):
    """Soft Dice + cross-entropy over ``num_classes`` classes, with ignore voxels and partial labels.

    ``forward(logits [B, C, X, Y, Z], label [B, 1, X, Y, Z] class values, labelled [B, C] bool or None)``.
    ``labelled[b, c]`` says whether sample ``b`` labels class ``c`` (background and target are always
    treated as labelled; ``None`` means every sample labels every class). Voxels equal to ``ignore_value``
    count in neither term. With ``target_value`` the Dice term is the target's Dice loss plus the mean
    Dice loss of the other classes (so a binary model's loss is unchanged and auxiliary classes add
    signal without diluting the lesion's); without it, the plain mean over classes. Dice follows nnU-Net's defaults: ``include_background=False`` and batch Dice
    (each class's overlap summed over the samples that label it, which is stable for small lesions that
    many patches lack); a class no sample labels is left out of the Dice mean. Pass ``labelled`` on the
    CPU: whether any sample is partial is then known without a device synchronisation.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_value: int | None = None,
        partial: str = "marginal",
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        include_background: bool = False,
        batch_dice: bool = True,
        smooth: float = 1e-5,
        target_value: int | None = None,
        auxiliary_weight: float = 1.0,
        plain_dice_mean: bool = False,
    ):
        super().__init__()
        if partial not in PARTIAL_MODES:
            raise LabelError(f"unknown partial-label mode '{partial}'", f"choose one of {', '.join(PARTIAL_MODES)}")
        if num_classes < 2:
            raise LabelError(f"the loss needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.partial = partial
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.smooth = float(smooth)
        if target_value is not None and not 0 < target_value < num_classes:
            raise LabelError(f"target value {target_value} is not a foreground class of {num_classes} classes")
        self.target_value = target_value
        if not 0.0 <= auxiliary_weight <= 1.0:
            raise LabelError(f"auxiliary_weight must be between 0 and 1, got {auxiliary_weight}")
        if auxiliary_weight != 1.0 and target_value is None:
            raise LabelError("auxiliary_weight needs target_value (which class is the lesion)")
        self.auxiliary_weight = float(auxiliary_weight)
        # the plain class mean of the Dice losses even when the target is known (TrainConfig.dice = "mean")
        self.plain_dice_mean = plain_dice_mean

    def forward(self, logits: torch.Tensor, label: torch.Tensor, labelled: torch.Tensor | None = None) -> torch.Tensor:
        # Autocast off: voxel counts and sums over a patch overflow half precision (65504).
        with torch.autocast(logits.device.type, enabled=False):
            if self.auxiliary_weight == 0.0 and self.num_classes > 2:  # the binary loss alone (training's warm-up)
                return self._binary(logits, label)
            full = self._loss(logits, label, labelled)
            if self.auxiliary_weight == 1.0 or self.num_classes == 2:
                return full
            # Multi-class CE = binary CE on the collapsed lesion probability + CE of the auxiliary class
            # given "not lesion"; the marginal loss with every auxiliary class unlabelled is exactly the
            # collapsed (binary) part, so this mix scales only the auxiliary part by the weight.
            return self.auxiliary_weight * full + (1.0 - self.auxiliary_weight) * self._binary(logits, label)

    def _binary(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The binary loss of the collapsed lesion probability (every auxiliary class merged into background)."""
        collapsed = torch.zeros(logits.shape[0], self.num_classes, dtype=torch.bool)
        collapsed[:, [0, self.target_value]] = True
        return self._loss(logits, label, collapsed, force_marginal=True)

    def _loss(self, logits: torch.Tensor, label: torch.Tensor, labelled: torch.Tensor | None,
              force_marginal: bool = False) -> torch.Tensor:
        b, c = logits.shape[:2]
        if c != self.num_classes:
            raise LabelError(f"the loss expects {self.num_classes} class channels, the logits have {c}")
        if label.shape[0] != b or label.shape[1] != 1 or label.shape[2:] != logits.shape[2:]:
            raise LabelError(
                f"label shape {tuple(label.shape)} does not match logits {tuple(logits.shape)} (one channel)"
            )
        # Float32 whatever the network's dtype: log-probabilities of rare classes underflow in half precision.
        if logits.dtype not in (torch.float32, torch.float64):
            logits = logits.float()
        z = logits.reshape(b, c, -1)
        y = label.reshape(b, -1).long()
        if self.ignore_value is not None:
            valid = y != self.ignore_value
            y = torch.where(valid, y, 0)
        else:
            valid = torch.ones_like(y, dtype=torch.bool)
        scored, merge, rows = self._class_sets(labelled, b, c, logits.device, force_marginal)
        if rows is not None:
            y = torch.where(scored.gather(1, y) > 0, y, 0)  # a value of an unlabelled class counts as background
        return _MarginalDiceCE.apply(z, y, valid.to(z.dtype), scored.to(z.dtype), merge, rows, self._dice,
                                     self.lambda_ce, self.ignore_value is not None)

    def _class_sets(
        self, labelled: torch.Tensor | None, b: int, c: int, device: torch.device, force_marginal: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, list[int] | None]:
        """Per sample: the classes it is scored on (``[B, C]`` bool), the classes merged into its background
        (``[B, C]`` bool, background included), and the indices of the samples that merge anything (``None``
        when none do, or in naive mode: then every sample is scored on every class)."""
        scored = torch.ones(b, c, dtype=torch.bool, device=device)
        merge = torch.zeros(b, c, dtype=torch.bool, device=device)
        merge[:, 0] = True
        if labelled is None or (self.partial == "naive" and not force_marginal):
            return scored, merge, None
        if tuple(labelled.shape) != (b, c):
            raise LabelError(f"'labelled' must have shape [batch, classes] = {[b, c]}, got {list(labelled.shape)}")
        labelled = labelled.to(torch.bool).clone()
        labelled[:, 0] = True  # background is always scored (as the merged background)
        rows = [int(i) for i in (~labelled).any(dim=1).nonzero().flatten()]
        if not rows:
            return scored, merge, None
        labelled = labelled.to(device)
        return labelled, merge | ~labelled, rows

    def _dice(self, intersection: torch.Tensor, pred_sum: torch.Tensor, truth_sum: torch.Tensor,
              scored: torch.Tensor) -> torch.Tensor:
        """Weighted soft Dice loss from ``[B, C]`` sums over voxels (small tensors: autograd is cheap here)."""
        if not self.include_background:
            intersection, pred_sum, truth_sum, scored = (t[:, 1:] for t in (intersection, pred_sum, truth_sum, scored))
        if self.batch_dice:
            intersection, pred_sum, truth_sum = ((t * scored).sum(0) for t in (intersection, pred_sum, truth_sum))
            scored = (scored.sum(0) > 0).to(scored.dtype)
        score = (2 * intersection + self.smooth) / (pred_sum + truth_sum + self.smooth)
        losses = (1 - score) * scored
        if self.target_value is None or self.plain_dice_mean:
            return self.lambda_dice * losses.sum() / scored.sum().clamp_min(1.0)
        # Target Dice plus the mean auxiliary Dice: a plain mean over K classes would give the lesion
        # 1/K of the Dice term, so adding auxiliary classes would weaken the lesion's own signal.
        t = self.target_value - (0 if self.include_background else 1)
        is_target = torch.zeros_like(scored)
        is_target[..., t] = 1
        target_term = (losses * is_target).sum() / (scored * is_target).sum().clamp_min(1.0)
        others = scored * (1 - is_target)
        return self.lambda_dice * (target_term + (losses * others).sum() / others.sum().clamp_min(1.0))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, ignore_value={self.ignore_value}, partial={self.partial!r}, "
                f"target_value={self.target_value}, "
                f"include_background={self.include_background}, batch_dice={self.batch_dice}")


class _MarginalDiceCE(torch.autograd.Function):
    """Marginal Dice + cross-entropy on logits ``z [B, C, N]`` with its gradient written out.

    Per voxel, the true probability is ``q = sum of p_j over S`` (``S`` = the voxel's class, or for a
    background voxel of a partially labelled sample the background plus its unlabelled classes). With the
    softmax Jacobian ``dp_c/dz_j = p_c (delta_cj - p_j)``, any loss built from ``log q``, ``q`` and the
    per-class sums of ``p`` has ``dL/dz_j = [j in S] p_j g + p_j (beta_j - q g - sum_c beta_c p_c)``, where
    ``g = dL/dq`` and ``beta_c`` is the gradient with respect to class ``c``'s predicted-mass sum. ``p_j g``
    is evaluated as ``-lambda_ce/n + dI q`` for a single class; for a merged background it is
    ``(-lambda_ce/(n q) + dI) p_j`` with ``q`` clamped at the smallest normal float.
    """

    @staticmethod
    def forward(ctx, z, y, valid, scored, merge, rows, dice_fn, lambda_ce, has_ignore):  # type: ignore[override]
        b, c, _ = z.shape
        logp = torch.log_softmax(z, 1)
        true_logp = logp.gather(1, y.unsqueeze(1)).squeeze(1)
        p = logp.exp_()  # in place: the log-probabilities are not needed any more
        tiny = torch.finfo(z.dtype).tiny
        for s in rows or ():  # per partially labelled sample, on views (advanced indexing would copy)
            # Merged background probability by one matrix-vector product. Clamped at the smallest normal
            # float: only a voxel whose merged background is below 1e-38 (a loss of ~87 there) is affected.
            merged_p = (merge[s].to(p.dtype) @ p[s]).clamp_min_(tiny)
            true_logp[s] = torch.where(y[s] == 0, merged_p.log_(), true_logp[s])
        true_p = true_logp.exp()
        n_valid = valid.sum().clamp_min(1.0)
        ce = -(true_logp * valid).sum() / n_valid
        # Without ignore voxels ``valid`` is all ones: a plain sum, and no masking pass in backward.
        pred_sum = torch.bmm(p, valid.unsqueeze(-1)).squeeze(-1) if has_ignore else p.sum(-1)
        intersection = torch.zeros(b, c, dtype=z.dtype, device=z.device).scatter_add_(1, y, true_p * valid)
        truth_sum = torch.zeros(b, c, dtype=z.dtype, device=z.device).scatter_add_(1, y, valid)
        with torch.enable_grad():
            inter_ = intersection.detach().requires_grad_(True)
            pred_ = pred_sum.detach().requires_grad_(True)
            # The merged background's predicted mass is the sum over the classes merged into it.
            merged_pred = torch.cat([(pred_ * merge.to(pred_.dtype)).sum(1, keepdim=True), pred_[:, 1:]], 1)
            dice = dice_fn(inter_, merged_pred, truth_sum, scored)
            d_inter, d_pred = torch.autograd.grad(dice, (inter_, pred_))
        ctx.save_for_backward(p, y, valid, true_p, d_inter, d_pred, merge, 1.0 / n_valid)
        ctx.rows = rows or []
        ctx.lambda_ce = lambda_ce
        ctx.has_ignore = has_ignore
        return lambda_ce * ce + dice.detach()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        p, y, valid, true_p, d_inter, beta, merge, ce_scale = ctx.saved_tensors
        # The gradient is linear in these three small tensors: scaling them saves a pass over [B, C, N].
        ce_w = -ctx.lambda_ce * ce_scale * grad_out
        d_inter, beta = d_inter * grad_out, beta * grad_out
        # g q for each voxel: the cross-entropy term and the Dice intersection term.
        gq = ce_w + d_inter.gather(1, y) * true_p
        dot = torch.bmm(beta.unsqueeze(1), p).squeeze(1)
        grad = beta.unsqueeze(-1) - (gq + dot).unsqueeze(1)
        direct = gq * valid
        for s in ctx.rows:
            # A merged background voxel's g p_j for every merged class j: (ce_w / q + dI) p_j.
            bg = y[s] == 0
            direct[s].masked_fill_(bg, 0.0)
            g_merged = (ce_w / true_p[s] + d_inter[s, 0]).masked_fill_(~bg, 0.0)
            grad[s].addcmul_(merge[s].to(grad.dtype).unsqueeze(-1), g_merged.unsqueeze(0))
        grad.mul_(p)
        if ctx.has_ignore:
            grad.mul_(valid.unsqueeze(1))
        grad.scatter_add_(1, y.unsqueeze(1), direct.unsqueeze(1))
        return grad, None, None, None, None, None, None, None, None
