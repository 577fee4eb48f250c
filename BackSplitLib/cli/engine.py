"""Engine commands: phantom, train, finetune, import-model, predict, evaluate, demo."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from BackSplitLib.cli.app import app, console
from BackSplitLib.errors import DatasetError, RunError
from BackSplitLib.vocabulary import (DEFAULT_ARCHITECTURE, DEFAULT_AUXILIARY_WEIGHT, DEFAULT_BATCH_SIZE,
                                     DEFAULT_FINETUNE_ITERATIONS, DEFAULT_HEAD_PRIOR, DEFAULT_ITERATIONS,
                                     DEFAULT_LEARNING_RATE, DEFAULT_PARTIAL_LABEL_MODE, DEFAULT_TRAINING_MODE,
                                     DEFAULT_VAL_FRACTION)
from BackSplitLib.vocabulary import Architecture as Arch
from BackSplitLib.vocabulary import PartialLabelMode as Partial
from BackSplitLib.vocabulary import TrainingMode as Mode


def progress_bar(description: str) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=console, transient=False)


def run_training(dataset: Path, out: Path, config, base_run: Path | None = None, resume: bool = False,
                 label: str = "training") -> Path:
    """Train with a rich progress bar (loss, validation Dice) and return the run folder; the lesion watch's
    warning (the lesion has not started when it should have) is printed under the bar when it comes."""
    import warnings

    from BackSplitLib.training import LesionNotStartedWarning, train

    bar = progress_bar(label)
    task = None

    def update(p) -> None:
        nonlocal task
        if task is None:  # shown once training starts, so a bad dataset fails in one clean line
            bar.start()
            task = bar.add_task(label, total=config.iterations, status="")
        val = f" val Dice {p.val_dice:.3f}" if p.val_dice is not None else ""
        bar.update(task, completed=p.iteration, status=f"loss {p.loss:.3f}{val}")
        if p.warning:
            bar.console.print(f"[bold yellow]warning:[/] {p.warning}", highlight=False, soft_wrap=True)

    try:
        with warnings.catch_warnings():  # shown through the console above, not twice
            warnings.simplefilter("ignore", LesionNotStartedWarning)
            return train(dataset, out, config, base_run=base_run, resume=resume, progress=update)
    finally:
        bar.stop()


@app.command()
def phantom(
    out_dir: Path = typer.Argument(..., help="Folder for the new dataset (new, empty, or an earlier phantom dataset, which is replaced)."),
    cases: int = typer.Option(20, "--cases", min=1, help="Training cases (imagesTr/labelsTr)."),
    test_cases: int = typer.Option(5, "--test-cases", min=0, help="Test cases (imagesTs/labelsTs)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same dataset."),
    family: str = typer.Option("ct", "--family", help="ct: CT-like abdomen, cysts in liver and kidneys; mr: T2-like MR, metastases in liver, vertebrae and adrenals; liver: CT, six classes, faint liver metastases; lung: chest CT, five classes, small nodules among vessels."),
) -> None:
    """Write a synthetic dataset: organs as auxiliary classes, small lesions, lesion mimics."""
    from BackSplitLib.phantom import write_phantom_dataset
    from BackSplitLib.phantom_families import phantom_family

    path = write_phantom_dataset(out_dir, cases=cases, test_cases=test_cases, seed=seed, family=phantom_family(family))
    console.print(f"wrote {cases} training and {test_cases} test cases to {path}")


def _head_prior(text: str) -> float | str | None:
    """``--head-prior``: 'uniform', 'none' (PyTorch's initialisation) or a probability (checked by the engine)."""
    from BackSplitLib.training import check_head_prior

    value: float | str | None = None if text.lower() == "none" else text
    try:
        value = float(text)
    except ValueError:
        pass
    try:
        check_head_prior(value)
    except DatasetError as error:
        raise typer.BadParameter(error.message) from None
    return value


@app.command()
def train(
    dataset: Path = typer.Argument(..., help="Dataset folder (dataset.json, imagesTr, labelsTr)."),
    mode: Mode = typer.Option(DEFAULT_TRAINING_MODE, "--mode", help="binary: background is one class; backsplit: auxiliary classes kept."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    arch: Arch = typer.Option(DEFAULT_ARCHITECTURE, "--arch", help="Network architecture."),
    iterations: int = typer.Option(DEFAULT_ITERATIONS, "--iterations", min=1, help="Training iterations."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    resume: bool = typer.Option(False, "--resume", help="Continue a stopped run in --out from its last checkpoint."),
    partial: Partial = typer.Option(DEFAULT_PARTIAL_LABEL_MODE, "--partial", help="Cases without some auxiliary labels: marginal loss or naive (as background)."),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", min=1),
    val_fraction: float = typer.Option(DEFAULT_VAL_FRACTION, "--val-fraction", min=0.0, max=0.9, help="Seeded share of imagesTr held out for validation."),
    val_every: int = typer.Option(None, "--val-every", min=1, help="Validate every N iterations (default: a tenth of the budget)."),
    learning_rate: float = typer.Option(DEFAULT_LEARNING_RATE, "--lr", help="AdamW peak learning rate (cosine schedule after a short warm-up)."),
    auxiliary_weight: float = typer.Option(DEFAULT_AUXILIARY_WEIGHT, "--auxiliary-weight", min=0.0, max=1.0, help="Weight of the auxiliary classes' terms added to the binary loss of the collapsed lesion probability: 1 = the plain split loss, 0 = the binary loss; they switch on once the lesion channel has started in training (docs/ARCHITECTURE.md, 'The BackSplit recipe')."),
    head_prior: str = typer.Option(DEFAULT_HEAD_PRIOR, "--head-prior", parser=_head_prior, metavar="uniform|none|P", help="The head's initial lesion probability, both modes: uniform = 1/K for the dataset's K classes (so binary and BackSplit start alike), a probability P, or none (PyTorch's initialisation)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network (CUDA)."),
    resample_labels: bool = typer.Option(False, "--resample-labels", help="Resample labels that are on another grid onto their image (nearest neighbour, physical space) instead of refusing them."),
) -> None:
    """Train a binary or BackSplit model on a dataset folder."""
    from BackSplitLib.training import TrainConfig

    config = TrainConfig(mode=mode.value, arch=arch.value, iterations=iterations, seed=seed, device=device,
                         partial=partial.value, batch_size=batch_size, val_fraction=val_fraction,
                         val_every=val_every, learning_rate=learning_rate, compile=compile,
                         auxiliary_weight=auxiliary_weight, head_prior=head_prior,
                         resample_labels=resample_labels)
    run = run_training(dataset, out, config, resume=resume, label=f"{mode.value} {arch.value}")
    _report_run(run)


@app.command()
def finetune(
    base_run: Path = typer.Argument(..., help="Run folder of the model to start from (binary or BackSplit)."),
    dataset: Path = typer.Argument(..., help="Dataset folder with auxiliary labels."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    iterations: int = typer.Option(None, "--iterations", min=1, help=f"Fine-tune iterations (default: the fine-tune recipe's, {DEFAULT_FINETUNE_ITERATIONS})."),
    mode: Mode = typer.Option(DEFAULT_TRAINING_MODE, "--mode"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    resume: bool = typer.Option(False, "--resume"),
    partial: Partial = typer.Option(DEFAULT_PARTIAL_LABEL_MODE, "--partial"),
    learning_rate: float = typer.Option(None, "--lr", help="Peak learning rate (default: the fine-tune recipe's, 1e-3, lower than from scratch: the model is already good)."),
    val_every: int = typer.Option(None, "--val-every", min=1),
    resample_labels: bool = typer.Option(False, "--resample-labels", help="Resample labels on another grid onto their image."),
) -> None:
    """Fine-tune a model into a BackSplit model: its head gains the dataset's auxiliary classes
    (initialised so that step 0 predicts exactly what the base model predicted). The recipe is the one
    the server's fine-tune jobs and the Slicer panel use (training.finetune_config)."""
    from BackSplitLib.training import finetune_config

    config = finetune_config(mode=mode.value, iterations=iterations, seed=seed, device=device,
                             partial=partial.value, learning_rate=learning_rate, val_every=val_every,
                             resample_labels=resample_labels)
    run = run_training(dataset, out, config, base_run=base_run, resume=resume, label="fine-tune")
    _report_run(run)


def _report_run(run: Path) -> None:
    """The last line of train / finetune: where the run is and its best validation Dice, or, when its
    validation never predicted the lesion, that the model finds no lesion (exit status 1)."""
    from BackSplitLib.cli.app import fail
    from BackSplitLib.runs import load_run

    meta = load_run(run).meta
    best = meta.get("best_val_dice")
    lesion = meta.get("lesion") or {}
    if lesion.get("found") is False:
        fail(f"the model finds no lesion ({lesion['message']}); it was kept in {run}; hint: {lesion['hint']}", code=1)
    console.print(f"run written to {run}" + (f" (best validation lesion Dice {best:.3f})" if best is not None else ""))


@app.command("import-model")
def import_model(
    state_dict: Path = typer.Argument(..., help="Weights: a .pt/.pth state dict or .safetensors file."),
    arch: Arch = typer.Option(..., "--arch"),
    schema: Path = typer.Option(..., "--schema", help="Label schema JSON of the model's outputs."),
    out: Path = typer.Option(..., "--out"),
    spacing: str = typer.Option("1.5,1.5,2.5", "--spacing", help="Training spacing x,y,z in mm (RAS)."),
    patch_size: str = typer.Option("64,64,64", "--patch-size", help="Training patch size x,y,z."),
    ct_window: str = typer.Option(None, "--ct-window", help="CT normalisation lo,hi,mean,std; z-score when omitted."),
) -> None:
    """Wrap a model trained elsewhere (MONAI UNet / DynUNet / SegResNet) into a run folder."""
    from BackSplitLib.importing import import_state_dict

    run = import_state_dict(state_dict, arch.value, schema, out, _floats(spacing, 3, "--spacing"),
                            [int(v) for v in _floats(patch_size, 3, "--patch-size")],
                            _floats(ct_window, 4, "--ct-window") if ct_window else None)
    console.print(f"run written to {run}")


def _floats(text: str, n: int, option: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise RunError(f"{option} needs {n} comma-separated numbers, got '{text}'")
    return values


@app.command()
def predict(
    run: Path = typer.Argument(..., help="Run folder (model.json + model.safetensors)."),
    input: Path = typer.Argument(..., help="An image file, a folder of images, or a DICOM series folder."),
    out: Path = typer.Option(..., "--out", help="Output folder: <case>.<ext> lesion masks."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write <case>_prob (float32)."),
    classes: bool = typer.Option(False, "--classes", help="Also write <case>_classes (the full class map)."),
    device: str = typer.Option("auto", "--device"),
    tta: bool = typer.Option(False, "--tta", help="Average over axis flips (slower, smoother)."),
) -> None:
    """Predict lesion masks in each input's exact geometry."""
    from BackSplitLib.inference import Predictor, prediction_inputs

    predictor = Predictor.from_run(run, device=device, tta=tta)
    inputs = prediction_inputs(input)
    with progress_bar("predict") as bar:
        task = bar.add_task("predict", total=len(inputs), status="")
        for path in inputs:
            bar.update(task, status=path.name)
            predictor.predict_file(path, out, probabilities, classes)
            bar.advance(task)
    console.print(f"wrote {len(inputs)} prediction(s) to {out}")


@app.command()
def evaluate(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted masks <case>.<ext>."),
    dataset: Path = typer.Argument(..., help="Dataset folder: truth from labelsTs, else labelsTr."),
    json_path: Path = typer.Option(None, "--json", help="Write the evaluation JSON here (and a CSV beside it)."),
    min_lesion_voxels: int = typer.Option(10, "--min-lesion-voxels", min=0, help="Smaller predicted components are not counted as false positives."),
) -> None:
    """Lesion Dice, false-positive components per case, lesion sensitivity and HD95."""
    from rich.table import Table

    from BackSplitLib.metrics import evaluate_folder, write_evaluation

    result = evaluate_folder(pred_dir, dataset, min_lesion_voxels=min_lesion_voxels)
    table = Table("case", "Dice", "FP comp.", "TP", "FN", "HD95 mm")
    for name, c in result["cases"].items():
        hd = "-" if c["hd95"] is None else f"{c['hd95']:.1f}"
        table.add_row(name, f"{c['dice']:.3f}", str(c["fp_components"]), str(c["tp_lesions"]), str(c["fn_lesions"]), hd)
    mean_hd, sensitivity = result["mean_hd95"], result["lesion_sensitivity"]
    table.add_row("[bold]mean", f"[bold]{result['mean_dice']:.3f}", f"{result['fp_components_per_case']:.2f}",
                  "", "-" if sensitivity is None else f"sens. {sensitivity:.2f}",
                  "-" if mean_hd is None else f"{mean_hd:.1f}")
    console.print(table)
    if json_path:
        write_evaluation(result, json_path)
        console.print(f"wrote {json_path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Output folder."),
    quick: bool = typer.Option(False, "--quick", help="A tiny run in about a minute (checks the pipeline, not the method)."),
    iterations: int = typer.Option(None, "--iterations", min=1, help="Training iterations per arm."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """The main job: binary vs BackSplit on the built-in phantom, same network, budget and seed."""
    from BackSplitLib.demo import run_demo

    if out.exists() and any(out.iterdir()) and not (out / "summary.json").exists() and not (out / "dataset").exists():
        raise RunError(f"{out} exists and is not a demo folder", "choose another --out")
    shutil.rmtree(out / "runs", ignore_errors=True)
    summary = run_demo(out, quick=quick, iterations=iterations, seed=seed, device=device, run_training=run_training,
                       echo=console.print)
    _print_demo_table(summary)
    console.print(f"wrote {out / 'summary.json'} and {out / 'demo.png'}")


def _print_demo_table(summary: dict) -> None:
    from rich.table import Table

    table = Table(title="BackSplit demo: binary vs BackSplit (same network, budget and seed)")
    for column in ("mode", "lesion Dice", "FP comp./case", "lesion sens.", "train s/it", "infer s/volume"):
        table.add_column(column)
    for mode in ("binary", "backsplit"):
        s = summary[mode]
        table.add_row(mode, f"{s['dice']:.3f}", f"{s['fp_per_case']:.2f}", f"{s['lesion_sensitivity']:.2f}",
                      f"{s['train_s_per_iteration']:.3f}", f"{s['infer_s_per_volume']:.2f}")
    console.print(table)
