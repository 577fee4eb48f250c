"""``backsplit demo --quick`` end to end: both arms, the summary, and the figure of the fixed rule."""

from __future__ import annotations

import json

from BackSplitLib.dataset import Dataset
from BackSplitLib.demo import figure_case, run_demo


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
