"""Has the lesion channel started? The trainer's check that a model does not silently learn nothing.

A segmentation model whose lesion channel has not started predicts no lesion voxel at all: its validation
lesion Dice is 0 and its loss still falls (the background, or the auxiliary classes, learn). Issue 20 found
BackSplit handing back such a model with only "best validation lesion Dice 0.000" to show for it. The
trainer feeds every validation to a :class:`LesionWatch`; the lesion has *started* at the first validation
that predicts a lesion voxel. If none has by :data:`START_BY_SHARE` of the budget, the watch returns a warning
(with a hint) once; at the end :meth:`LesionWatch.record` goes into model.json as ``lesion``, and the CLI, the
server's worker and the panel read it there. Standard library only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from BackSplitLib.vocabulary import LESION_NEVER_PREDICTED

#: By this share of the iteration budget a lesion channel should predict lesion voxels on validation: binary
#: models of every phantom family started by ~40 % of 400 iterations (issue 20), a share that later budgets
#: only shrink.
START_BY_SHARE = 0.5
HINT = ("train longer (--iterations), check that the training cases label the lesion, or compare with "
        "--mode binary; see docs/RESULTS.md, issue 20")


@dataclass
class LesionWatch:
    """Follows the validations of one run (``iterations`` is its budget)."""

    iterations: int
    started_at: int | None = None  # the first validation iteration with a predicted lesion voxel
    validated: bool = False  # some validation case holds lesion voxels (else nothing can be said)
    warned: bool = False
    last_predicted_voxels: int | None = None

    def observe(self, iteration: int, predicted_voxels: int, truth_voxels: int) -> str | None:
        """Record one validation; returns the warning to show when the lesion should have started and has
        not (once per run), else None."""
        self.last_predicted_voxels = int(predicted_voxels)
        if truth_voxels <= 0:
            return None
        self.validated = True
        if predicted_voxels > 0 and self.started_at is None:
            self.started_at = int(iteration)
        if self.started_at is None and not self.warned and iteration >= START_BY_SHARE * self.iterations:
            self.warned = True
            return (f"no lesion voxel predicted on validation after {iteration} of {self.iterations} iterations: "
                    f"the lesion channel has not started; {HINT}")
        return None

    @property
    def found(self) -> bool | None:
        """True once the lesion was predicted, False if validation never predicted it, None without
        validation cases that hold a lesion."""
        return None if not self.validated else self.started_at is not None

    def record(self) -> dict:
        """The ``lesion`` entry of model.json."""
        message = None
        if self.found is False:
            message = (f"{LESION_NEVER_PREDICTED}: no validation case had a predicted lesion voxel in "
                       f"{self.iterations} iterations")
        return {"found": self.found, "started_at": self.started_at, "message": message,
                "hint": HINT if message else None, **{k: v for k, v in asdict(self).items()
                                                     if k in ("validated", "warned")}}

    @classmethod
    def from_history(cls, iterations: int, history: list[dict]) -> LesionWatch:
        """The watch of a resumed run, rebuilt from its validation records."""
        watch = cls(iterations)
        for record in history:
            if "val_lesion_voxels" in record:
                watch.observe(int(record["iteration"]), int(record["val_lesion_voxels"]),
                              int(record.get("val_truth_voxels", 1)))
            if "warning" in record:
                watch.warned = True
        return watch


def lesion_found(meta: dict) -> bool:
    """False only when a run's model.json says its validation never predicted the lesion (older runs
    without the record: their best validation Dice decides, as before)."""
    record = meta.get("lesion")
    if isinstance(record, dict) and record.get("found") is False:
        return False
    best = meta.get("best_val_dice")
    return best is None or best > 0
