"""When BackSplit's auxiliary terms join the loss, and with what share of their weight (issue 20).

The auxiliary terms wait for the lesion and then earn their weight. A BackSplit run trains with the binary loss
of its collapsed lesion probability until a training batch's hard lesion Dice reaches
:data:`AUXILIARY_START_DICE` (the lesion channel has started). From then on the auxiliary terms' share of
``TrainConfig.auxiliary_weight`` moves with the lesion: it grows by 1/ramp (ramp = :data:`AUXILIARY_RAMP_SHARE`
of the budget) after each batch that holds lesion voxels and finds them (hard Dice >= AUXILIARY_START_DICE),
falls by :data:`AUXILIARY_BACK_OFF`/ramp after each batch that holds lesion voxels and misses them, and holds
after a batch without lesion voxels. So the auxiliary terms never keep pushing while the lesion is being lost:
a run whose lesion goes silent is back on the binary loss within ramp/AUXILIARY_BACK_OFF iterations.

A BackSplit model trained from scratch also starts as the binary model of the same seed (its head is that
model's, the background channel copied into every auxiliary channel, as ``networks.adapt_head`` does for a
fine-tune), so until the switch the run *is* the binary run and its lesion channel starts exactly when binary's
does. The trainer (``training.Trainer.observe_lesion``) keeps the switch iteration and the share in its state.
"""

from __future__ import annotations

import torch

AUXILIARY_START_DICE = 0.1
AUXILIARY_RAMP_SHARE = 0.1
AUXILIARY_BACK_OFF = 2.0


def batch_lesion_dice(logits: torch.Tensor, labels: torch.Tensor, target_value: int) -> float | None:
    """The batch's hard lesion Dice (collapsed lesion probability >= 0.5, i.e. the target logit at least the
    log-sum-exp of the others); None when the batch holds no lesion voxel."""
    with torch.no_grad():
        logits = logits.detach().float()
        others = torch.cat([logits[:, :target_value], logits[:, target_value + 1:]], 1)
        predicted = logits[:, target_value] >= torch.logsumexp(others, 1)
        truth = labels[:, 0] == target_value
        true_voxels = int(truth.sum())
        if true_voxels == 0:
            return None
        return 2 * int((predicted & truth).sum()) / (int(predicted.sum()) + true_voxels)


def lesion_found_in_batch(logits: torch.Tensor, labels: torch.Tensor, target_value: int) -> bool | None:
    """True when the batch's hard lesion Dice reaches :data:`AUXILIARY_START_DICE`, False when it holds lesion
    voxels and misses them, None when it holds none."""
    dice = batch_lesion_dice(logits, labels, target_value)
    return None if dice is None else dice >= AUXILIARY_START_DICE


def share_step(found: bool | None) -> float:
    """A batch's vote, in ramp steps: +1 when it found the lesion, -AUXILIARY_BACK_OFF when it missed it, 0 when
    it held none."""
    return 0.0 if found is None else (1.0 if found else -AUXILIARY_BACK_OFF)


def next_share(share: float, step: float, iterations: int) -> float:
    """The auxiliary terms' share after a batch whose vote is ``step``, for a budget of ``iterations``."""
    ramp = max(1, round(AUXILIARY_RAMP_SHARE * iterations))
    return min(1.0, max(0.0, share + step / ramp))
