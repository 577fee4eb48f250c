"""``backsplit demo --quick`` end to end: both arms, the summary, and the figure of the fixed rule."""

from __future__ import annotations

import json

from BackSplitLib.dataset import Dataset
from dataclasses import replace

from BackSplitLib.bench.profiles import PROFILES
from BackSplitLib.demo import PROFILE, demo_dataset, figure_case, run_demo


def test_quick_demo_writes_the_summary_and_the_figure_of_the_largest_dice_difference(tmp_path):
    summary = run_demo(tmp_path, quick=True, device="cpu")
    assert {"binary", "backsplit", "settings"} <= set(summary)
    assert json.loads((tmp_path / "summary.json").read_text())["settings"]["seed"] == 0
    assert (tmp_path / "demo.png").stat().st_size > 1000
    evaluations = {m: json.loads((tmp_path / f"evaluation_{m}.json").read_text()) for m in ("binary", "backsplit")}
    chosen = figure_case(Dataset.load(tmp_path / "dataset"), evaluations)
    gap = {n: abs(evaluations["backsplit"]["cases"][n]["dice"] - evaluations["binary"]["cases"][n]["dice"])
           for n in evaluations["binary"]["cases"]}
    assert gap[chosen] == max(gap.values())


def test_the_full_demo_is_one_seed_of_the_effect_benchmark():
    """Same phantom and the same configs as ``bench quality --profile effect --family ct`` (its seed 0)."""
    profile = PROFILES[PROFILE]
    assert (profile.cases, profile.test_cases, profile.iterations) == (16, 12, 300)
    assert profile.test_cases % 3 == 0  # test case j's lesion is in host j mod 3: every host equally often
    for mode in ("binary", "backsplit"):
        config = profile.train_config(mode, "unet", 0, "cpu")
        assert (config.iterations, config.patch_size, config.mode) == (300, (32, 32, 32), mode)


def test_a_demo_dataset_written_under_other_settings_is_replaced_not_reused(tmp_path):
    small = replace(PROFILES[PROFILE], cases=2, test_cases=1, shape=(24, 32, 32))
    data = demo_dataset(tmp_path, small, seed=0)
    (tmp_path / "predictions" / "binary").mkdir(parents=True)
    (tmp_path / "predictions" / "binary" / "stale.nii.gz").write_bytes(b"old")
    first = (data / "dataset.json").stat().st_mtime_ns
    assert demo_dataset(tmp_path, small, seed=0) == data  # same settings: reused as is
    assert (data / "dataset.json").stat().st_mtime_ns == first
    assert (tmp_path / "predictions" / "binary" / "stale.nii.gz").exists()

    demo_dataset(tmp_path, replace(small, test_cases=2), seed=0)
    assert len(Dataset.load(data).test) == 2
    assert not (tmp_path / "predictions").exists()  # predictions of the old test set are gone too
