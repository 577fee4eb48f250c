"""``backsplit bench quality``'s part-B options (issue 20) in miniature: the learning curve over nested training
sets, lesion-size bins, the auxiliary sources of the BackSplit arm and the 0 % control (one seed, 2 iterations,
the tiny phantom)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.bench.profiles import BenchError, Profile, get_profile
from BackSplitLib.bench.quality import QualityBench, prepare_dataset
from BackSplitLib.dataset import Dataset
from BackSplitLib.metrics import evaluate_folder

CURVE = Profile(name="tiny", experiments=(1,), seeds=(0,), iterations=2, patch_size=(32, 32, 16), val_every=2,
                train_cases=(3, 5), size_bins=(50, 500))
SOURCES = replace(CURVE, train_cases=(), auxiliary_sources=("ground-truth", "ct-tissues", "degraded"), control=True)


def _quiet_run(bench: QualityBench) -> dict:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return bench.run()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def curve(phantom_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("partb") / "curve"
    return out, _quiet_run(QualityBench(phantom_dataset, out, CURVE, device="cpu", log=lambda m: None))


@pytest.fixture(scope="module")
def sources(curve, phantom_dataset):
    """Every auxiliary source and the control at n = 5, in the learning curve's n5 folder (binary and
    ground-truth runs reused)."""
    out, _ = curve
    lines: list[str] = []
    results = _quiet_run(QualityBench(phantom_dataset, out / "n5", SOURCES, device="cpu", log=lines.append,
                                      train_subset=5))
    return out / "n5", results, lines


def _training_cases(run) -> list[str]:
    dataset = json.loads((run / "model.json").read_text())["training"]["dataset"]
    return [c.name for c in Dataset.load(dataset).training]


def test_each_n_trains_on_the_first_n_cases_in_its_own_folder_and_smaller_sets_nest(curve, phantom_dataset):
    out, _ = curve
    names = [c.name for c in Dataset.load(phantom_dataset).training]
    for n in (3, 5):
        for mode in ("binary", "backsplit"):
            run = out / f"n{n}" / "runs" / "unet" / mode / "seed0"
            assert _training_cases(run) == names[:n]
        assert (out / f"n{n}" / "report.md").is_file() and (out / f"n{n}" / "results.json").is_file()


def test_the_report_gives_the_paired_gap_per_n_and_draws_the_learning_curve(curve):
    out, results = curve
    saved = json.loads((out / "results.json").read_text())
    gap = next(g for g in saved["learning_curve"]["gaps"]
               if (g["a"], g["b"], g["metric"]) == ("unet backsplit", "unet binary", "dice"))
    assert set(gap["per_n"]) == {"3", "5"}
    for n in ("3", "5"):
        cell = saved["cells"][n]["experiments"]["1"]
        a = cell["conditions"]["unet backsplit"]["per_seed"]["0"]["dice"]
        b = cell["conditions"]["unet binary"]["per_seed"]["0"]["dice"]
        assert gap["per_n"][n]["mean_diff"] == pytest.approx(a - b)
    assert (out / saved["figure"]).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "| unet backsplit | unet binary | dice |" in report and "[n = 3](n3/report.md)" in report


def test_size_bins_count_every_test_lesion_once_per_bin_for_every_arm(curve, phantom_dataset):
    out, results = curve
    sizes = results["cells"]["5"]["experiments"]["1"]["size_bins"]
    assert sizes["bins"] == ["< 50", "50-500", ">= 500"]
    truth = evaluate_folder(out / "n5" / "predictions" / "unet" / "binary" / "seed0", phantom_dataset)
    assert sum(sizes["lesions"].values()) == sum(c["true_lesions"] for c in truth["cases"].values())
    compared = {(c["a"], c["b"], c["bin"], c["metric"]) for c in sizes["comparisons"]}
    assert ("unet backsplit", "unet binary", "< 50", "lesion_dice") in compared
    for c in sizes["comparisons"]:  # the tiny test set holds fewer than 10 lesions per bin: reported, not tested
        assert c["tested"] is (c["lesions"] >= 10) and (c["tested"] or c["p_value"] is None)
    assert "Lesion size (true volume in voxels" in (out / "n5" / "report.md").read_text()
    assert "| unet backsplit | unet binary | < 50 |" in (out / "report.md").read_text()


def test_every_auxiliary_source_and_the_control_are_arms_compared_with_binary_and_ground_truth(sources):
    out, results, lines = sources
    first = results["experiments"]["1"]
    assert set(first["conditions"]) == {"unet binary", "unet backsplit", "unet backsplit (ct-tissues)",
                                        "unet backsplit (degraded)", "unet control (0 %)"}
    pairs = {(c["a"], c["b"]) for c in first["comparisons"]}
    for source in ("ct-tissues", "degraded"):
        assert {(f"unet backsplit ({source})", "unet binary"), (f"unet backsplit ({source})", "unet backsplit")} <= pairs
    assert {("unet backsplit", "unet control (0 %)"), ("unet control (0 %)", "unet binary")} <= pairs
    assert not any(line.startswith(("train unet/binary/", "train unet/backsplit/")) for line in lines)  # reused
    control = json.loads((out / "runs" / "unet" / "control" / "seed0" / "model.json").read_text())["training"]
    assert (control["mode"], control["auxiliary_weight"]) == ("backsplit", 0.0)


def test_the_ct_tissue_arm_trains_with_tissue_classes_and_the_ground_truth_lesion(sources, phantom_dataset):
    out, _, _ = sources
    meta = json.loads((out / "runs" / "unet" / "backsplit-ct-tissues" / "seed0" / "model.json").read_text())
    assert set(meta["schema"]["labels"]) == {"background", "lung_air", "fat", "soft_tissue", "bone", "lesion"}
    assert _training_cases(out / "runs" / "unet" / "backsplit-ct-tissues" / "seed0") == \
        [c.name for c in Dataset.load(phantom_dataset).training][:5]


def test_the_degraded_arm_keeps_every_lesion_voxel_and_records_the_organ_errors(sources, phantom_dataset):
    out, _, _ = sources
    source, degraded = Dataset.load(phantom_dataset), Dataset.load(out / "datasets" / "degraded")
    assert len(degraded.raw["degraded"]["cases"]) == 5 and degraded.raw["degraded"]["mean_organ_dice"]
    changed = False
    for before, after in zip(source.training, degraded.training):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(before.label)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(after.label)))
        assert np.array_equal(a == source.schema.target_value, b == degraded.schema.target_value)
        changed |= not np.array_equal(a, b)
    assert changed


def test_part_b_options_that_cannot_run_are_refused_before_training(phantom_dataset, tmp_path):
    with pytest.raises(BenchError, match="unknown auxiliary source"):
        get_profile("effect", auxiliary_sources=("organs",))
    with pytest.raises(BenchError, match="size-bins"):
        get_profile("effect", size_bins=(500, 50))
    with pytest.raises(BenchError, match="has 5 training cases"):
        QualityBench(phantom_dataset, tmp_path, replace(CURVE, train_cases=(4, 8)), device="cpu").run()
    assert not (tmp_path / "n4").exists()


def test_the_phantom_holds_the_largest_training_set_and_is_not_reused_with_other_counts(tmp_path):
    profile = get_profile("effect", train_cases=(4, 32))
    assert profile.cases == 32 and get_profile("effect", train_cases=(4, 8)).cases == 16
    small = replace(profile, cases=2, test_cases=1, shape=(24, 40, 48))
    prepare_dataset(None, tmp_path, small)
    with pytest.raises(BenchError, match="written with 2 training and 1 test cases"):
        prepare_dataset(None, tmp_path, replace(small, test_cases=3))


def test_the_cli_names_the_allowed_auxiliary_sources_when_one_is_unknown(capsys, tmp_path):
    from BackSplitLib.cli import main

    code = main(["bench", "quality", "--out", str(tmp_path / "out"), "--auxiliary-source", "ground-truth,organs"])
    output = capsys.readouterr()
    assert code != 0
    assert "organs" in output.out + output.err and "ct-tissues" in output.out + output.err
    assert not (tmp_path / "out").exists()


def test_a_later_command_on_some_sizes_adds_to_the_curve_instead_of_replacing_it(curve, phantom_dataset):
    out, _ = curve
    lines: list[str] = []
    again = _quiet_run(QualityBench(phantom_dataset, out, replace(CURVE, train_cases=(3,)), device="cpu",
                                    log=lines.append))
    assert not any(line.startswith("train ") for line in lines)  # every run reused
    assert again["train_cases"] == [3, 5] and set(again["learning_curve"]["arms"]["unet binary"]) == {"3", "5"}
    assert "[n = 5](n5/report.md)" in (out / "report.md").read_text()


def test_the_validation_curves_of_every_run_are_drawn_and_plateaus_counted(curve):
    from BackSplitLib.bench.learning_curve import plateaued

    out, results = curve
    assert set(results["validation"]) == {"3", "5"}
    binary = results["validation"]["3"]["unet/binary"]
    assert binary["runs"] == 1 and binary["seeds"]["seed0"][0][0] == 2  # one validation, at iteration 2
    assert (binary["plateaued"], binary["too_few_validations"]) == (0, 1)
    assert (out / results["validation_figure"]).stat().st_size > 1000
    assert "0/1 (1 with < 5 validations)" in (out / "report.md").read_text()
    flat, rising = [{"val_dice": d} for d in (0.5, 0.7, 0.71, 0.7, 0.69, 0.7)], [{"val_dice": d / 10} for d in range(6)]
    assert (plateaued(flat), plateaued(rising), plateaued(flat[:3])) == (True, False, None)
