"""Shared fixtures: a tiny phantom dataset and tiny trained runs, made once per test session.

Everything runs on the CPU with real files, real MONAI networks and real SimpleITK I/O; sizes and
iteration counts are small so the whole suite stays within minutes on two cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests keep torch on the CPU
TINY_SHAPE = (24, 40, 48)


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory) -> Path:
    """5 training cases and 2 test cases of a tiny phantom (z, y, x) = (24, 40, 48)."""
    from BackSplitLib.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("phantom") / "Dataset001_Phantom"
    return write_phantom_dataset(root, cases=5, test_cases=2, seed=7, shape=TINY_SHAPE)


def _train(dataset: Path, out: Path, mode: str, iterations: int = 6) -> Path:
    from BackSplitLib.training import TrainConfig, train

    config = TrainConfig(mode=mode, iterations=iterations, val_every=3, batch_size=2, seed=0,
                         patch_size=(32, 32, 16), device="cpu")
    return train(dataset, out, config)


@pytest.fixture(scope="session")
def backsplit_run(phantom_dataset, tmp_path_factory) -> Path:
    """A BackSplit run trained for a few iterations (a working run folder, not a good model)."""
    return _train(phantom_dataset, tmp_path_factory.mktemp("runs") / "backsplit", "backsplit")


@pytest.fixture(scope="session")
def binary_run(phantom_dataset, tmp_path_factory) -> Path:
    """A binary run trained for a few iterations."""
    return _train(phantom_dataset, tmp_path_factory.mktemp("runs") / "binary", "binary")
