"""A miniature of ``backsplit bench quality --profile robustness`` (issue 20): two families, one seed, two
tiny budgets; the report says when each arm's lesion channel started and counts the stalls."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from BackSplitLib.bench.profiles import get_profile
from BackSplitLib.bench.robustness import RobustnessBench, summarise_cell


def test_the_profile_covers_every_family_at_two_budgets_with_five_seeds():
    from BackSplitLib.phantom_families import FAMILIES

    profile = get_profile("robustness")
    assert set(profile.families) == set(FAMILIES) and profile.budgets == (300, 1000)
    assert profile.seeds == (0, 1, 2, 3, 4) and profile.experiments == (1,)


def test_counts_never_started_behind_and_later_per_seed():
    def arm(start, dice):
        return {"started_at": start, "dice": dice}

    cell = summarise_cell({"0": {"binary": arm(40, 0.6), "backsplit": arm(80, 0.62)},
                           "1": {"binary": arm(40, 0.6), "backsplit": arm(None, 0.0)},
                           "2": {"binary": arm(60, 0.6), "backsplit": arm(40, 0.5)}})
    assert cell["backsplit_never_started"] == ["1"] and cell["backsplit_behind"] == ["1", "2"]
    assert cell["backsplit_started_later"] == ["0", "1"] and cell["binary_never_started"] == []


def test_a_lesion_that_went_silent_again_counts_as_relapsed():
    from BackSplitLib.bench.robustness import reached, relapsed

    history = [{"iteration": 25, "val_dice": 0.0, "val_lesion_voxels": 0},
               {"iteration": 50, "val_dice": 0.0, "val_lesion_voxels": 10},
               {"iteration": 75, "val_dice": 0.0, "val_lesion_voxels": 0},
               {"iteration": 100, "val_dice": 0.38, "val_lesion_voxels": 900}]
    assert relapsed(history) and not relapsed(history[:2]) and not relapsed(history[3:])
    assert reached(history, 0.1) == 100 and reached(history[:3], 0.1) is None


def test_miniature_robustness_bench_is_resumable_and_shares_one_out(tmp_path):
    import torch

    tiny = replace(get_profile("robustness"), seeds=(0,), budgets=(2, 3), cases=3, test_cases=1, validations=1,
                   family_shapes={"ct": (24, 32, 32), "liver": (24, 32, 32)}, patch_size=(16, 16, 16))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lines = []
        first = RobustnessBench(tmp_path, tiny, ("liver",), device="cpu", log=lines.append).run()
        assert any(line.startswith("train ") for line in lines)
        partial = json.loads((tmp_path / "robustness-liver.json").read_text())
        assert sorted(partial["cells"]) == ["liver/2", "liver/3"]
        lines.clear()
        both = RobustnessBench(tmp_path, replace(tiny, families=("ct", "liver")), device="cpu", log=lines.append).run()
    finally:
        torch.set_num_threads(threads)
    # the liver runs of the first invocation are reused, only ct trains
    assert sum(line.startswith("train ") for line in lines) == 4  # ct: 2 budgets x 2 arms
    assert sorted(both["cells"]) == ["ct/2", "ct/3", "liver/2", "liver/3"]
    assert both["cells"]["liver/2"]["per_seed"] == first["cells"]["liver/2"]["per_seed"]
    report = (tmp_path / "robustness.md").read_text()
    assert "BackSplit never started" in report and "| liver | 3 |" in report and "relapsed" in report
    entry = both["cells"]["ct/3"]["per_seed"]["0"]
    assert set(entry) == {"binary", "backsplit"} and "started_at" in entry["backsplit"]
    assert both["totals"]["runs_per_arm"] == 4
