"""The CLI end to end on a tiny phantom, and one clear line for every kind of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.cli import main
from BackSplitLib.dataset import Dataset

FAST = ["--iterations", "2", "--val-every", "2", "--device", "cpu"]


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_version_and_help_from_the_console_script():
    result = subprocess.run([sys.executable, "-m", "BackSplitLib", "--version"], capture_output=True, encoding="utf-8", errors="replace")
    assert result.returncode == 0 and result.stdout.startswith("backsplit ")
    for command in ("train", "finetune", "predict", "evaluate", "phantom", "demo", "import-model"):
        result = subprocess.run([sys.executable, "-m", "BackSplitLib", command, "--help"], capture_output=True, encoding="utf-8", errors="replace")
        assert result.returncode == 0, result.stderr


def test_train_finetune_predict_evaluate_end_to_end(capsys, phantom_dataset, tmp_path):
    # PyTorch's head predicts lesion voxels from the start, so a 2-iteration model is not "finds no lesion"
    code, output = run_cli(capsys, "train", phantom_dataset, "--mode", "binary", "--out", tmp_path / "binary", *FAST,
                           "--head-prior", "none")
    assert code == 0, output
    code, output = run_cli(capsys, "finetune", tmp_path / "binary", phantom_dataset, "--out", tmp_path / "tuned", *FAST)
    assert code == 0, output
    tuned = json.loads((tmp_path / "tuned" / "model.json").read_text())
    assert tuned["schema"]["labels"]["lesion"] == 1  # the base model's channels keep their values
    assert len(tuned["schema"]["labels"]) == len(Dataset.load(phantom_dataset).schema.labels)

    code, output = run_cli(capsys, "predict", tmp_path / "tuned", phantom_dataset / "imagesTs", "--out",
                           tmp_path / "pred", "--probabilities", "--classes", "--device", "cpu")
    assert code == 0, output
    test_cases = Dataset.load(phantom_dataset).test
    names = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert names == sorted(f"{c.name}{s}.nii.gz" for c in test_cases for s in ("", "_prob", "_classes"))

    code, output = run_cli(capsys, "evaluate", tmp_path / "pred", phantom_dataset, "--json", tmp_path / "eval.json")
    assert code == 0, output
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    assert set(evaluation) >= {"mean_dice", "fp_components_per_case", "lesion_sensitivity", "mean_hd95", "cases",
                               "fp_components_all_sizes_per_case"}
    assert set(evaluation["cases"]) == {c.name for c in test_cases}
    assert (tmp_path / "eval.csv").is_file()


def _copy(dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    return root, Dataset.load(root)


def _rewrite_label(path, change):
    label = sitk.ReadImage(str(path))
    array = change(sitk.GetArrayFromImage(label))
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(label)
    sitk.WriteImage(out, str(path))


def _break_unknown_value(root, dataset):
    def change(a):
        a = a.copy()
        a[0, 0, 0] = 42
        return a
    _rewrite_label(dataset.training[1].label, change)
    return "label value 42"


def _break_geometry(root, dataset):
    label = sitk.ReadImage(str(dataset.training[0].label))
    label.SetSpacing([s * 1.5 for s in label.GetSpacing()])
    sitk.WriteImage(label, str(dataset.training[0].label))
    return "spacing differs"


def _break_target(root, dataset):
    meta = json.loads((root / "dataset.json").read_text())
    meta["target"] = "tumour"
    (root / "dataset.json").write_text(json.dumps(meta))
    return "target class 'tumour' is not in the schema"


def _break_empty(root, dataset):
    for case in dataset.training:
        case.image.unlink()
    return "holds no images"


def _break_nan(root, dataset):
    image = sitk.ReadImage(str(dataset.training[0].image))
    array = sitk.GetArrayFromImage(image)
    array[1, 2, 3] = np.nan
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    path = dataset.training[0].image
    import nibabel  # ITK's writer would turn NaN into 0: write the file the way other tools do

    nibabel.save(nibabel.Nifti1Image(np.transpose(array, (2, 1, 0)), np.eye(4)), path)
    return "NaN or infinite"


def _break_4d(root, dataset):
    image = sitk.ReadImage(str(dataset.training[0].image))
    sitk.WriteImage(sitk.JoinSeries([image, image]), str(dataset.training[0].image))
    return "4D"


def _break_unreadable(root, dataset):
    dataset.training[0].image.write_bytes(b"\x1f\x8b not really gzip")
    return "could not be read"


def _break_missing_label(root, dataset):
    dataset.training[0].label.unlink()
    return "has no label"


def _break_no_lesion(root, dataset):
    for case in dataset.training:
        _rewrite_label(case.label, lambda a: np.where(a == dataset.schema.target_value, 0, a).astype(a.dtype))
    return "contains the target"


@pytest.mark.parametrize("breaker", [_break_unknown_value, _break_geometry, _break_target, _break_empty, _break_nan,
                                     _break_4d, _break_unreadable, _break_missing_label, _break_no_lesion])
def test_bad_datasets_fail_in_one_line_without_traceback_or_output(capsys, phantom_dataset, tmp_path, breaker):
    root, dataset = _copy(phantom_dataset, tmp_path)
    expected = breaker(root, dataset)
    code, output = run_cli(capsys, "train", root, "--out", tmp_path / "run", *FAST)
    assert code != 0
    assert expected in output
    assert "Traceback" not in output
    assert output.strip().startswith("error:")
    assert not (tmp_path / "run").exists()


def test_missing_dataset_and_not_a_run_folder(capsys, tmp_path, phantom_dataset):
    code, output = run_cli(capsys, "train", tmp_path / "nowhere", "--out", tmp_path / "run", *FAST)
    assert code != 0 and "does not exist" in output
    code, output = run_cli(capsys, "predict", tmp_path, phantom_dataset / "imagesTs", "--out", tmp_path / "pred")
    assert code != 0 and "not a BackSplit run folder" in output and not (tmp_path / "pred").exists()
    code, output = run_cli(capsys, "finetune", tmp_path, phantom_dataset, "--out", tmp_path / "run2", *FAST)
    assert code != 0 and "not a BackSplit run folder" in output and not (tmp_path / "run2").exists()


def test_wrong_input_type_for_predict(capsys, backsplit_run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    code, output = run_cli(capsys, "predict", backsplit_run, notes, "--out", tmp_path / "pred")
    assert code != 0 and "not a supported image file" in output and not (tmp_path / "pred").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "BackSplitLib", "--debug", "predict", str(tmp_path), str(tmp_path),
                             "--out", str(tmp_path / "p")], capture_output=True, encoding="utf-8", errors="replace")
    assert result.returncode != 0 and "Traceback" in result.stderr and "RunError" in result.stderr


def test_killed_training_resumes_from_its_last_checkpoint(phantom_dataset, tmp_path):
    # A real kill (SIGKILL) after the first checkpoint; --resume finishes the budget.
    import signal
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "BackSplitLib", "train", str(phantom_dataset), "--out", str(out),
               "--iterations", "400", "--val-every", "1", "--device", "cpu", "--batch-size", "1",
               "--val-fraction", "0"]  # no validation: a few iterations find no lesion, which train reports with 1
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "last_state.pt").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "model.json").exists(), "no checkpoint was written before the kill"
    done = json.loads((out / "model.json").read_text())["iteration"]
    assert 1 <= done < 400
    result = subprocess.run(command[:8] + [str(done + 1)] + command[9:] + ["--resume"], capture_output=True, encoding="utf-8", errors="replace")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "model.json").read_text())["iteration"] == done + 1


def test_resample_labels_trains_on_labels_from_another_grid(capsys, phantom_dataset, tmp_path):
    # The same label content on a flipped, coarser grid: refused by default with
    # the hint, accepted with --resample-labels, and the resampled label matches the original grid.
    from BackSplitLib.io import resample_like
    from BackSplitLib.transforms import validation_transforms

    root, dataset = _copy(phantom_dataset, tmp_path)
    case = dataset.training[0]
    label = sitk.ReadImage(str(case.label))
    # 1.7x, not 2x: with an integer factor half the fine voxel centres sit exactly on coarse voxel
    # borders, where nearest-neighbour implementations may round either way.
    coarse = sitk.Image([int(s / 1.7) for s in label.GetSize()[:2]] + [label.GetSize()[2]], label.GetPixelID())
    coarse.SetSpacing([label.GetSpacing()[0] * 1.7, label.GetSpacing()[1] * 1.7, label.GetSpacing()[2]])
    coarse.SetOrigin(label.GetOrigin())
    coarse.SetDirection(label.GetDirection())
    coarse = sitk.Flip(resample_like(label, coarse), [True, False, False])
    sitk.WriteImage(coarse, str(case.label))
    code, output = run_cli(capsys, "train", root, "--out", tmp_path / "refused", *FAST)
    assert code != 0 and "--resample-labels" in output and not (tmp_path / "refused").exists()
    code, output = run_cli(capsys, "train", root, "--out", tmp_path / "run", "--resample-labels", *FAST,
                           "--val-fraction", "0")  # no validation: 2 iterations find no lesion (exit status 1)
    assert code == 0, output

    from BackSplitLib.runs import load_run

    preprocessing = load_run(tmp_path / "run").preprocessing
    item = validation_transforms(preprocessing, None, resample_labels=True)({"image": str(case.image),
                                                                             "label": str(case.label)})
    assert item["label"].shape == item["image"].shape
    # Independent reference: SimpleITK's physical-space resampling onto the image grid, then the same
    # preprocessing without resampling.
    reference = tmp_path / "reference_label.nii.gz"
    sitk.WriteImage(resample_like(coarse, sitk.ReadImage(str(case.image))), str(reference))
    expected = validation_transforms(preprocessing, None)({"image": str(case.image), "label": str(reference)})
    mismatch = (item["label"] != expected["label"]).float().mean().item()
    assert mismatch == 0.0, mismatch


def test_the_train_command_defaults_are_the_engine_defaults():
    """One place per default: ``backsplit train`` without options trains TrainConfig's recipe."""
    import inspect

    from BackSplitLib.cli.engine import train
    from BackSplitLib.training import TrainConfig

    options, engine = inspect.signature(train).parameters, TrainConfig()
    for name in ("iterations", "batch_size", "val_fraction", "learning_rate", "auxiliary_weight", "head_prior", "seed"):
        assert options[name].default.default == getattr(engine, name), name


def test_train_says_in_its_last_line_and_exit_status_that_the_model_finds_no_lesion(capsys, phantom_dataset, tmp_path):
    """Issue 20 A.3: a run whose validation never predicted a lesion voxel is kept, and reported as such."""
    code, output = run_cli(capsys, "train", phantom_dataset, "--out", tmp_path / "run", *FAST)
    assert code == 1, output
    last = output.strip().splitlines()[-1]
    assert "the model finds no lesion" in output and "never predicted" in output and "hint:" in output
    assert "Traceback" not in output and last.startswith("error: the model finds no lesion")
    assert "warning:" in output and "has not started" in output  # during training, under the progress bar
    assert json.loads((tmp_path / "run" / "model.json").read_text())["lesion"]["found"] is False


def test_an_error_naming_a_path_with_brackets_prints_it_literally(tmp_path, capsys):
    # rich markup in a message (a user's folder or project name) must not be interpreted or swallowed
    from BackSplitLib.cli import main

    assert main(["train", str(tmp_path / "no[bold]such[/]"), "--out", str(tmp_path / "run")]) == 2
    captured = capsys.readouterr()
    assert "no[bold]such[/]" in captured.out + captured.err
