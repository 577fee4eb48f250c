"""A miniature of ``backsplit bench cost`` on tiny sizes: every measurement runs and is saved (the
numbers themselves are never asserted: they depend on the machine)."""

from __future__ import annotations

import json

from BackSplitLib.bench.cost import CostSettings, cost_rows, run_cost
from BackSplitLib.cli import main


def test_miniature_cost_bench_measures_and_saves_everything(tmp_path):
    settings = CostSettings(archs=("unet",), shape=(24, 40, 48), patch_size=(16, 16, 16), repeats=1,
                            train_iterations=3, warmup_iterations=1, scale_shape=(24, 48, 48), threads=1)
    results = run_cost(tmp_path, settings, log=lambda m: None)
    saved = json.loads((tmp_path / "cost.json").read_text())
    inference = saved["inference"][0]
    assert inference["parameter_ratio"] > 1 and inference["forward_calls"] > 0
    assert inference["binary_peak_rss_gib"] > 0 and inference["backsplit_peak_rss_gib"] > 0
    assert saved["training"][0]["iterations_timed"] == 2
    assert saved["data_pipeline"]["data_pipeline_ratio"] > 0
    assert saved["scale"]["shape_zyx"] == [24, 48, 48] and saved["scale"]["scale_peak_gib"] > 0
    assert len(cost_rows(results)) == 7
    assert "| inference time ratio, unet |" in (tmp_path / "cost.md").read_text()


def test_bench_group_offers_quality_and_cost(capsys):
    assert main(["bench", "--help"]) == 0
    text = capsys.readouterr().out
    assert "quality" in text and "cost" in text
