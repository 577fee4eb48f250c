"""The trainer on a tiny phantom: resume equivalence, cancel, fine-tuning from a binary run, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from safetensors.torch import load_file

from BackSplitLib.dataset import Dataset
from BackSplitLib.errors import RunError, TrainingCancelled
from BackSplitLib.inference import Predictor
from BackSplitLib.runs import load_run
from BackSplitLib.training import TrainConfig, train

TINY = dict(iterations=6, val_every=3, batch_size=2, seed=3, patch_size=(32, 32, 16), device="cpu")


def _weights(path):
    return load_file(str(path))


def test_run_folder_has_every_file_and_model_json_describes_the_run(backsplit_run, phantom_dataset):
    assert {p.name for p in backsplit_run.iterdir()} >= {"model.json", "model.safetensors", "last.safetensors",
                                                        "last_state.pt", "log.jsonl"}
    meta = json.loads((backsplit_run / "model.json").read_text())
    assert meta["schema"] == Dataset.load(phantom_dataset).schema.to_dict()
    assert meta["arch"]["name"] == "unet"
    assert set(meta["preprocessing"]) >= {"spacing", "normalization", "patch_size"}
    assert meta["preprocessing"]["normalization"]["scheme"] == "CT"
    assert meta["iteration"] == 6 and len(meta["history"]) >= 2
    lines = [json.loads(x) for x in (backsplit_run / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["iteration"] == 6 and "val_dice" in lines[-1]


def test_a_tie_in_validation_dice_keeps_the_later_weights(binary_run):
    # Issue 20 at n = 4: one validation case with a 14-voxel lesion scored 0 at every validation, and the
    # first (iteration-100) checkpoint was kept. Six iterations of the tiny phantom never find the lesion.
    history = json.loads((binary_run / "model.json").read_text())["history"]
    scores = [record["val_dice"] for record in history if "val_dice" in record]
    assert len(scores) == 2 and scores[0] == scores[1], f"premise: two equal validation scores, got {scores}"
    best, last = _weights(binary_run / "model.safetensors"), _weights(binary_run / "last.safetensors")
    assert best.keys() == last.keys()
    for key in best:
        np.testing.assert_array_equal(best[key].numpy(), last[key].numpy(), err_msg=key)


def test_binary_run_has_two_classes(binary_run):
    assert load_run(binary_run).schema.class_names == ["background", "lesion"]


def test_resumed_run_equals_uninterrupted_run(phantom_dataset, tmp_path):
    straight = train(phantom_dataset, tmp_path / "straight", TrainConfig(**TINY))
    calls = {"n": 0}

    def stop_at_iteration_3() -> bool:
        calls["n"] += 1
        return calls["n"] == 4  # checked before each iteration: stop before the 4th

    with pytest.raises(TrainingCancelled):
        train(phantom_dataset, tmp_path / "resumed", TrainConfig(**TINY), should_stop=stop_at_iteration_3)
    assert load_run(tmp_path / "resumed").meta["iteration"] == 3
    train(phantom_dataset, tmp_path / "resumed", TrainConfig(**TINY), resume=True)
    a, b = _weights(straight / "last.safetensors"), _weights(tmp_path / "resumed" / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-5, err_msg=key)


def test_a_kill_between_checkpoint_files_resumes_from_the_state_file(phantom_dataset, tmp_path):
    # A checkpoint writes last.safetensors, then last_state.pt, then model.json; a SIGKILL can land between
    # any two. The state file is the commit point: (a) weights one step ahead of it are not trusted, and
    # (b) a model.json one step behind it is brought up to date even when nothing is left to train.
    straight = train(phantom_dataset, tmp_path / "straight", TrainConfig(**TINY))
    calls = {"n": 0}

    def stop_at_iteration_3() -> bool:
        calls["n"] += 1
        return calls["n"] == 4

    resumed = tmp_path / "resumed"
    with pytest.raises(TrainingCancelled):
        train(phantom_dataset, resumed, TrainConfig(**TINY), should_stop=stop_at_iteration_3)
    # (a) killed after writing a later iteration's last.safetensors, before its state
    (resumed / "last.safetensors").write_bytes((straight / "last.safetensors").read_bytes())
    train(phantom_dataset, resumed, TrainConfig(**TINY), resume=True)
    a, b = _weights(straight / "last.safetensors"), _weights(resumed / "last.safetensors")
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-5, err_msg=key)
    # (b) killed after the final state, before model.json: model.json still says an earlier iteration
    meta = json.loads((resumed / "model.json").read_text())
    (resumed / "model.json").write_text(json.dumps({**meta, "iteration": TINY["iterations"] - 1}))
    train(phantom_dataset, resumed, TrainConfig(**TINY), resume=True)
    assert load_run(resumed).meta["iteration"] == TINY["iterations"]
    b = _weights(resumed / "last.safetensors")
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-5, err_msg=key)


def test_existing_run_is_not_overwritten_without_resume(backsplit_run, phantom_dataset):
    with pytest.raises(RunError, match="already holds a run"):
        train(phantom_dataset, backsplit_run, TrainConfig(**TINY))


def test_resume_with_a_different_schema_is_refused(backsplit_run, phantom_dataset):
    with pytest.raises(RunError, match="trained with classes"):
        train(phantom_dataset, backsplit_run, TrainConfig(**{**TINY, "mode": "binary"}), resume=True)


def test_finetuning_a_binary_run_starts_from_its_exact_predictions(binary_run, phantom_dataset, tmp_path):
    # With a zero learning rate the fine-tuned weights are the adapted binary weights: the collapsed
    # lesion probability must equal the binary model's.
    config = TrainConfig(**{**TINY, "iterations": 1, "learning_rate": 0.0, "warmup_iterations": 0})
    tuned = train(phantom_dataset, tmp_path / "tuned", config, base_run=binary_run)
    tuned_info = load_run(tuned)
    assert tuned_info.schema.auxiliary_names == Dataset.load(phantom_dataset).schema.auxiliary_names
    image = sitk.ReadImage(str(Dataset.load(phantom_dataset).test[0].image))
    before = Predictor.from_run(binary_run, device="cpu")
    after = Predictor.from_run(tuned, device="cpu")
    p_before = sitk.GetArrayFromImage(before.predict(image, probabilities=True).probability)
    p_after = sitk.GetArrayFromImage(after.predict(image, probabilities=True).probability)
    np.testing.assert_allclose(p_after, p_before, atol=1e-5)


def test_binary_and_backsplit_heads_start_at_the_same_uniform_lesion_probability(phantom_dataset, tmp_path):
    # The default head prior: 1/K for a dataset of K classes, in both modes (binary no longer starts at 1/2).
    # With a zero learning rate the run's model is its initialisation.
    classes = Dataset.load(phantom_dataset).schema.num_classes
    image = sitk.ReadImage(str(Dataset.load(phantom_dataset).test[0].image))
    for mode in ("binary", "backsplit"):
        config = TrainConfig(**{**TINY, "mode": mode, "iterations": 1, "learning_rate": 0.0})
        assert config.head_prior == "uniform"
        run = train(phantom_dataset, tmp_path / mode, config)
        lesion = sitk.GetArrayFromImage(Predictor.from_run(run, device="cpu").predict(
            image, probabilities=True).probability)
        assert float(lesion.mean()) == pytest.approx(1.0 / classes, rel=0.05), mode
        assert float(np.abs(lesion - 1.0 / classes).max()) < 0.5 / classes, mode
    with pytest.raises(Exception, match="head_prior must be"):
        train(phantom_dataset, tmp_path / "bad", TrainConfig(**{**TINY, "head_prior": "flat"}))


def test_partial_dataset_trains_with_the_marginal_loss(phantom_dataset, tmp_path):
    # Mark two cases as having no auxiliary labels: their label maps keep only the lesion.
    import shutil

    root = tmp_path / "partial"
    shutil.copytree(phantom_dataset, root)
    meta = json.loads((root / "dataset.json").read_text())
    dataset = Dataset.load(root)
    for case in dataset.training[:2]:
        label = sitk.ReadImage(str(case.label))
        array = dataset.schema.collapse_labels(sitk.GetArrayFromImage(label)) * dataset.schema.target_value
        out = sitk.GetImageFromArray(array.astype(np.uint8))
        out.CopyInformation(label)
        sitk.WriteImage(out, str(case.label))
    meta["cases_without_auxiliary"] = [c.name for c in dataset.training[:2]]
    (root / "dataset.json").write_text(json.dumps(meta))
    run = train(root, tmp_path / "run", TrainConfig(**{**TINY, "iterations": 2}))
    assert load_run(run).meta["training"]["partial"] == "marginal"


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_keeps_replicas_in_sync(phantom_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "BackSplitLib", "train", str(phantom_dataset), "--out", str(tmp_path / "ddp"),
               "--iterations", "2", "--device", "cpu", "--val-fraction", "0"]
    # no validation: a 2-iteration model finds no lesion, which `train` reports with exit status 1
    result = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace", env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    training = load_run(tmp_path / "ddp").meta["training"]
    assert training["world_size"] == 2
    assert training["ddp_replicas_in_sync"] is True


def _trainer(phantom_dataset, tmp_path, mode, **settings):
    from BackSplitLib.training import Trainer

    trainer = Trainer(phantom_dataset, tmp_path / mode, TrainConfig(**{**TINY, "mode": mode, **settings}))
    trainer.setup()
    return trainer


def _body_gradient(trainer, iteration):
    import torch

    images, labels, labelled = trainer.make_batch(iteration)
    trainer.loss_fn.auxiliary_weight = trainer.config.auxiliary_weight * trainer.auxiliary_share
    loss = trainer.loss_fn(trainer.model(images), labels.long(), labelled)
    grads = torch.autograd.grad(loss, list(trainer.model.body.parameters()))
    return loss, torch.cat([g.flatten() for g in grads])


def test_backsplit_starts_as_the_binary_model_and_its_body_gets_the_binary_gradient(phantom_dataset, tmp_path):
    """Issue 20: until its lesion channel has started, a BackSplit run is the binary run of the same seed (the
    same collapsed prediction, the same loss, the same gradient into the body), so its lesion channel cannot
    start later than binary's. Before the fix the body's gradients differed at step 0 (the auxiliary terms
    were in the loss from the start, and the heads were drawn independently)."""
    import torch

    binary = _trainer(phantom_dataset, tmp_path, "binary")
    split = _trainer(phantom_dataset, tmp_path, "backsplit")
    assert split.model.num_classes > 2 and split.lesion_from_batch is None and split.auxiliary_share == 0.0
    images = binary.make_batch(0)[0]
    with torch.no_grad():
        p_binary = torch.softmax(binary.model(images), 1)[:, 1]
        p_split = torch.softmax(split.model(images), 1)[:, split.schema.target_value]
    assert torch.allclose(p_binary, p_split, atol=1e-6)
    loss_binary, grad_binary = _body_gradient(binary, 0)
    loss_split, grad_split = _body_gradient(split, 0)
    assert loss_split.item() == pytest.approx(loss_binary.item(), rel=1e-5)
    assert float((grad_split - grad_binary).norm()) <= 1e-4 * float(grad_binary.norm())  # float rounding only


def test_the_auxiliary_terms_switch_on_when_a_training_batch_finds_the_lesion_and_earn_their_weight(
        phantom_dataset, tmp_path):
    import torch

    from BackSplitLib.auxiliary_share import AUXILIARY_BACK_OFF, AUXILIARY_RAMP_SHARE, lesion_found_in_batch

    split = _trainer(phantom_dataset, tmp_path, "backsplit", iterations=100)
    target = split.schema.target_value
    labels = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    labels[..., :2] = target
    missed = torch.zeros(1, split.schema.num_classes, 4, 4, 4)  # the lesion at 1/K everywhere
    found = missed.clone()
    found[:, target, ..., :2] = 10.0
    no_lesion = torch.zeros_like(labels)
    assert lesion_found_in_batch(missed, labels, target) is False
    assert lesion_found_in_batch(found, labels, target) is True
    assert lesion_found_in_batch(found, no_lesion, target) is None
    ramp = round(AUXILIARY_RAMP_SHARE * 100)
    split.observe_lesion(39, missed, labels)  # not started: a miss does nothing
    assert split.lesion_from_batch is None and split.auxiliary_share == 0.0
    split.observe_lesion(40, found, labels)  # found: switch on
    assert split.lesion_from_batch == 41 and split.auxiliary_share == pytest.approx(1 / ramp)
    for iteration in range(41, 41 + ramp):
        split.observe_lesion(iteration, found, labels)
    assert split.auxiliary_share == 1.0  # capped at the full auxiliary weight
    split.observe_lesion(60, found, no_lesion)  # no lesion in the batch: holds
    assert split.auxiliary_share == 1.0
    split.observe_lesion(61, missed, labels)  # the lesion is missed: the auxiliary terms back off
    assert split.auxiliary_share == pytest.approx(1 - AUXILIARY_BACK_OFF / ramp)
    for iteration in range(62, 62 + ramp):
        split.observe_lesion(iteration, missed, labels)
    assert split.auxiliary_share == 0.0 and split.lesion_from_batch == 41  # back to the binary loss, still started
    split.auxiliary_share = 1.0
    _, after = _body_gradient(split, 90)  # with their share the auxiliary terms reach the body
    split.auxiliary_share = 0.0
    _, before = _body_gradient(split, 90)
    assert not torch.allclose(after, before)
