"""A miniature of ``backsplit bench quality``: every experiment, one seed, a few iterations, tiny phantom."""

from __future__ import annotations

import json

import numpy as np
import pytest

from BackSplitLib.bench.profiles import BenchError, Profile, get_profile, parse_recipe
from BackSplitLib.bench.quality import QualityBench
from BackSplitLib.bench.stats import paired, summarise, verdict
from BackSplitLib.bench.variants import partial_variant, perturb_auxiliary, subset_variant
from BackSplitLib.dataset import Dataset
from BackSplitLib.phantom import PHANTOM_SCHEMA

TINY = Profile(name="tiny", experiments=(1, 2, 3, 4, 5, 6), seeds=(0,), iterations=2, patch_size=(32, 32, 16),
               finetune_iterations=(0, 2), partial_fractions=(0.5, 1.0), auxiliary_counts=(0, 1, 99),
               leave_one_out=False, noise=(("shift", 1),), tissue_classes=True, fisher_voxels=500, val_every=2)


@pytest.fixture(scope="module")
def tiny_bench(phantom_dataset, tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("bench") / "quality"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread avoids waiting on a busy machine's second core
    try:
        return out, QualityBench(phantom_dataset, out, TINY, device="cpu", log=lambda m: None).run()
    finally:
        torch.set_num_threads(threads)


def test_miniature_quality_bench_writes_results_report_and_one_figure_per_experiment(tiny_bench):
    out, results = tiny_bench
    saved = json.loads((out / "results.json").read_text())
    assert sorted(saved["experiments"]) == ["1", "2", "3", "4", "5", "6"]
    for number, result in saved["experiments"].items():
        assert (out / result["figure"]).stat().st_size > 1000, number
    report = (out / "report.md").read_text()
    assert "## Experiment 1: BackSplit vs binary" in report and "| unet backsplit |" in report


def test_experiment_one_has_every_metric_and_paired_differences(tiny_bench):
    _, results = tiny_bench
    first = results["experiments"]["1"]
    assert set(first["conditions"]) == {"unet binary", "unet backsplit"}
    summary = first["conditions"]["unet backsplit"]["summary"]
    assert {"dice", "fp_per_case", "sensitivity", "hd95"} <= set(summary)
    assert {c["metric"] for c in first["comparisons"]} == {"dice", "fp_per_case", "sensitivity", "hd95"}


def test_finetuning_from_zero_iterations_is_the_binary_model(tiny_bench):
    _, results = tiny_bench
    conditions = results["experiments"]["2"]["conditions"]
    assert conditions["fine-tuned 0 it"]["per_seed"] == conditions["binary (reference)"]["per_seed"]


def test_finetuning_uses_the_one_recipe_and_is_compared_with_binary_continued_for_the_same_budget(tiny_bench):
    from BackSplitLib.training import FINETUNE_RECIPE

    out, results = tiny_bench
    second = results["experiments"]["2"]
    assert {("fine-tuned 2 it", "binary continued 2 it")} <= {(c["a"], c["b"]) for c in second["comparisons"]}
    for folder, mode in (("finetune", "backsplit"), ("continued", "binary")):
        training = json.loads((out / "runs" / folder / "2" / "seed0" / "model.json").read_text())["training"]
        assert training["mode"] == mode and training["base_run"] is not None
        assert training["learning_rate"] == FINETUNE_RECIPE["learning_rate"]
        assert training["warmup_iterations"] == FINETUNE_RECIPE["warmup_iterations"]


def test_fisher_experiment_respects_the_loewner_order_on_the_trained_model(tiny_bench):
    _, results = tiny_bench
    blocks = results["experiments"]["6"]["blocks"]
    for name in ("head", "features"):
        assert blocks[name]["min_eig_difference"]["mean"] >= -1e-8 * blocks[name]["trace_split"]["mean"]
    assert blocks["target_row"]["trace_ratio"]["mean"] == pytest.approx(1.0)


def test_a_rerun_reuses_finished_runs(tiny_bench, phantom_dataset):
    out, results = tiny_bench
    lines: list[str] = []
    profile = Profile(name="tiny", experiments=(1,), seeds=(0,), iterations=2, patch_size=(32, 32, 16), val_every=2)
    QualityBench(phantom_dataset, out, profile, device="cpu", log=lines.append).run()
    assert not any(line.startswith("train ") for line in lines)


def test_a_rerun_with_another_recipe_or_budget_is_refused_not_scored_with_the_old_runs(tiny_bench, phantom_dataset):
    out, _ = tiny_bench
    same = dict(name="tiny", experiments=(1,), seeds=(0,), patch_size=(32, 32, 16), val_every=2)
    for profile, changed in ((Profile(**same, iterations=2, recipe={"head_prior": 0.01}), "head_prior"),
                             (Profile(**same, iterations=3), "iterations")):
        with pytest.raises(BenchError, match=f"trained with {changed}"):
            QualityBench(phantom_dataset, out, profile, device="cpu", log=lambda m: None).run()


def test_partial_variant_strips_auxiliary_labels_of_unlisted_cases(phantom_dataset, tmp_path):
    source = Dataset.load(phantom_dataset)
    variant = Dataset.load(partial_variant(source, tmp_path / "p", 0.4, seed=0))
    without = variant.raw["cases_without_auxiliary"]
    assert len(without) == 3 and len(variant.training) == 5
    import SimpleITK as sitk

    for case in variant.training:
        values = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))))
        assert (values <= {0, PHANTOM_SCHEMA.target_value}) == (case.name in without)


def test_subset_variant_renumbers_by_name_and_keeps_the_target(phantom_dataset, tmp_path):
    source = Dataset.load(phantom_dataset)
    variant = Dataset.load(subset_variant(source, tmp_path / "s", ["liver", "fat"]))
    assert variant.schema.class_names == ["background", "fat", "liver", "lesion"]
    import SimpleITK as sitk

    before = sitk.GetArrayFromImage(sitk.ReadImage(str(source.training[0].label)))
    after = sitk.GetArrayFromImage(sitk.ReadImage(str(variant.training[0].label)))
    assert np.array_equal(after == variant.schema.target_value, before == source.schema.target_value)
    assert np.array_equal(after == variant.schema.labels["liver"], before == source.schema.labels["liver"])


@pytest.mark.parametrize("kind", ["erode", "dilate", "shift"])
def test_label_noise_never_moves_the_target(kind):
    label = np.zeros((8, 12, 12), dtype=np.int64)
    label[2:6, 3:9, 3:9] = PHANTOM_SCHEMA.labels["liver"]
    label[4, 5, 5] = PHANTOM_SCHEMA.target_value
    noisy = perturb_auxiliary(label, PHANTOM_SCHEMA, kind, 1, np.random.default_rng(0))
    assert np.array_equal(noisy == PHANTOM_SCHEMA.target_value, label == PHANTOM_SCHEMA.target_value)
    assert not np.array_equal(noisy, label)


def test_paired_differences_and_honest_verdicts():
    diff = paired({0: 0.5, 1: 0.6, 2: 0.55}, {0: 0.4, 1: 0.58, 2: 0.5})
    assert diff["mean_diff"] == pytest.approx(0.0566, abs=1e-3) and diff["n"] == 3
    assert "not significant" in verdict("a", "b", "dice", diff) or diff["p_value"] < 0.05
    assert summarise({0: 1.0, 1: None})["n"] == 1


def test_unknown_profile_is_refused_with_the_known_ones():
    with pytest.raises(BenchError, match="quick, full, effect"):
        get_profile("huge")


def test_the_effect_profile_and_an_ablation_recipe_for_both_arms(phantom_dataset, tmp_path):
    effect = get_profile("effect", family="mr", recipe=parse_recipe("head_prior=0.01,dice=mean"))
    assert len(effect.seeds) >= 5 and effect.test_cases >= 12 and effect.experiments == (1,)
    bench = QualityBench(phantom_dataset, tmp_path, effect, device="cpu")
    for mode in ("binary", "backsplit"):
        config = bench._config(mode, "unet", seed=0)
        assert (config.head_prior, config.dice, config.mode) == (0.01, "mean", mode)
    with pytest.raises(BenchError, match="cannot read recipe setting"):
        parse_recipe("no_such_field=1")
    assert parse_recipe('patch_size=[48,48,32],arch_params={"feature_channels":32,"dropout":0.1},dice=mean') == {
        "patch_size": [48, 48, 32], "arch_params": {"feature_channels": 32, "dropout": 0.1}, "dice": "mean"}


def test_the_fields_a_binary_rerun_may_differ_in_do_not_change_a_two_class_loss():
    import torch

    from BackSplitLib.bench.quality import _NO_EFFECT_ON_BINARY
    from BackSplitLib.losses import BackSplitLoss

    assert _NO_EFFECT_ON_BINARY == {"auxiliary_weight", "partial"}
    torch.manual_seed(0)
    logits, label = torch.randn(2, 2, 4, 4, 4), torch.randint(0, 2, (2, 1, 4, 4, 4))
    labelled = torch.tensor([[True, True], [True, True]])
    reference = BackSplitLoss(2, target_value=1)(logits, label, labelled)
    for settings in ({"auxiliary_weight": 0.25}, {"partial": "naive"}, {"auxiliary_weight": 0.0, "partial": "naive"}):
        assert torch.equal(BackSplitLoss(2, target_value=1, **settings)(logits, label, labelled), reference)


def test_a_finetune_recipe_ablation_reaches_both_finetuned_arms_and_nothing_else():
    from BackSplitLib.training import FINETUNE_RECIPE

    profile = get_profile("effect", finetune_recipe=parse_recipe("auxiliary_weight=1,learning_rate=0.003"))
    for mode in ("binary", "backsplit"):
        tuned = profile.train_config(mode, "unet", 0, "cpu", iterations=75, finetune=True)
        assert (tuned.auxiliary_weight, tuned.learning_rate, tuned.mode, tuned.iterations) == (1, 0.003, mode, 75)
        assert tuned.warmup_iterations == FINETUNE_RECIPE["warmup_iterations"]  # the rest of the one recipe
        scratch = profile.train_config(mode, "unet", 0, "cpu")
        assert (scratch.auxiliary_weight, scratch.learning_rate) != (1, 0.003)
    plain = get_profile("effect").train_config("backsplit", "unet", 0, "cpu", finetune=True)
    assert plain.learning_rate == FINETUNE_RECIPE["learning_rate"]
