"""``backsplit bench``: the paper's experiments on any dataset (quality) and what BackSplit costs (cost).

``quality`` trains and evaluates through the engine (``training.train``, ``inference.Predictor``,
``metrics.evaluate_folder``); ``variants`` derives the datasets the experiments need (partial,
fewer, noisy or automatic auxiliary labels); ``stats`` turns per-seed numbers into mean +- std and paired
differences; ``learning_curve`` gathers ``--train-cases``' per-n results; ``figures`` draws one PNG per
experiment; ``cost`` times inference, training and the data
pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a benchmark with ``threads`` torch CPU threads (None: torch's choice), restoring the count after."""
    import torch  # lazily: the package is imported by the CLI before anything needs torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
