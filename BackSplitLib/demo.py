"""``backsplit demo``: binary vs BackSplit on the built-in phantom with the same network, budget and seed.

Writes ``summary.json`` (``{"binary": {"dice", "fp_per_case", "train_s_per_iteration",
"infer_s_per_volume"}, "backsplit": {...}, "settings": {...}}``), ``demo.png`` and the predictions.

Fixed before any recipe work (issue 13), so the demo shows whatever comes out rather than a chosen
result: seed 0, 500 iterations, 16 training and 6 test cases of the default-size CT phantom (test case j
has a lesion in host j mod 3, so the test set holds every lesion host twice), and the figure shows the
test case with the largest |Dice difference| between the arms (:func:`figure_case`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BackSplitLib.atomic import write_json_atomic
from BackSplitLib.dataset import Dataset

FULL = {"cases": 16, "test_cases": 6, "iterations": 500}
QUICK = {"cases": 6, "test_cases": 2, "iterations": 20, "shape": (32, 48, 56)}


def run_demo(out: Path, quick: bool = False, iterations: int | None = None, seed: int = 0,
             device: str = "auto", run_training=None, echo=lambda message: None) -> dict:
    """Train both arms, predict and evaluate the test cases; returns the summary (the caller shows it).

    ``run_training(dataset, out, config, label=...)`` trains one arm (the CLI passes one with a progress
    bar; default: ``training.train``); ``echo`` receives progress messages.
    """
    from BackSplitLib.inference import Predictor
    from BackSplitLib.metrics import evaluate_folder, write_evaluation
    from BackSplitLib.phantom import write_phantom_dataset
    from BackSplitLib.runs import load_run
    from BackSplitLib.training import TrainConfig, train

    if run_training is None:
        def run_training(dataset, run_out, config, label):  # noqa: ARG001 (label names the progress bar)
            return train(dataset, run_out, config)

    settings = dict(QUICK if quick else FULL)
    if iterations:
        settings["iterations"] = iterations
    settings.update(seed=seed, arch="unet", batch_size=2, device=device)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "dataset"
    if not (data_dir / "dataset.json").exists():
        echo(f"writing the phantom dataset ({settings['cases']} training, {settings['test_cases']} test cases)")
        write_phantom_dataset(data_dir, cases=settings["cases"], test_cases=settings["test_cases"], seed=seed,
                              shape=settings.get("shape"))
    dataset = Dataset.load(data_dir)

    summary: dict = {}
    for mode in ("binary", "backsplit"):
        config = TrainConfig(mode=mode, arch="unet", iterations=settings["iterations"], seed=seed, device=device,
                             batch_size=settings["batch_size"])
        run = run_training(data_dir, out / "runs" / mode, config, label=f"{mode:>9}")
        predictor = Predictor.from_run(run, device=device)
        pred_dir = out / "predictions" / mode
        seconds = []
        for case in dataset.test:
            start = time.perf_counter()
            predictor.predict_file(case.image, pred_dir)
            seconds.append(time.perf_counter() - start)
        evaluation = evaluate_folder(pred_dir, data_dir)
        write_evaluation(evaluation, out / f"evaluation_{mode}.json")
        summary[mode] = {
            "dice": evaluation["mean_dice"],
            "fp_per_case": evaluation["fp_components_per_case"],
            "lesion_sensitivity": evaluation["lesion_sensitivity"],
            "train_s_per_iteration": load_run(run).meta["train_s_per_iteration"],
            "infer_s_per_volume": float(np.median(seconds)),
        }
    summary["settings"] = {**settings, "schema": dataset.schema.to_dict(),
                           "auxiliary_classes": dataset.schema.auxiliary_names}
    write_json_atomic(out / "summary.json", summary)

    draw_demo_figure(out, dataset, summary)
    return summary


def figure_case(dataset: Dataset, evaluations: dict[str, dict]) -> str:
    """The demo's figure rule, fixed before any recipe work: the test case with the largest
    |Dice(BackSplit) - Dice(binary)| (the first by name on a tie), whichever arm it favours."""
    names = sorted(c.name for c in dataset.test)
    per_case = {m: evaluations[m]["cases"] for m in ("binary", "backsplit")}
    return max(names, key=lambda n: abs(per_case["backsplit"][n]["dice"] - per_case["binary"][n]["dice"]))


def draw_demo_figure(out: Path, dataset: Dataset, summary: dict) -> Path:
    """demo.png from the predictions and evaluations in ``out``: the case :func:`figure_case` picks, at its
    slice with the largest lesion area."""
    from BackSplitLib.report import demo_figure

    evaluations = {m: json.loads((out / f"evaluation_{m}.json").read_text()) for m in ("binary", "backsplit")}
    name = figure_case(dataset, evaluations)
    case = next(c for c in dataset.test if c.name == name)
    truth = dataset.schema.collapse_labels(sitk.GetArrayFromImage(sitk.ReadImage(str(case.label))))
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(case.image)))
    masks = {m: sitk.GetArrayFromImage(sitk.ReadImage(str(next((out / "predictions" / m).glob(f"{case.name}.*")))))
             for m in ("binary", "backsplit")}
    return demo_figure(out / "demo.png", image, truth, masks, summary, case.name)

