"""``backsplit auxiliary`` (automatic auxiliary labels) and ``backsplit advise`` (which ones are worth it).

::

    backsplit auxiliary IMAGE --ct-tissues --out LABEL [--schema-out JSON]
    backsplit auxiliary IMAGE --mr-classes N --out LABEL [--schema-out JSON]
    backsplit auxiliary IMAGE --import MAP --names NAMES|auto --structures a,b,c --out LABEL [--schema-out JSON]
    backsplit auxiliary IMAGE --from totalsegmentator --structures a,b,c --out LABEL [--schema-out JSON]
    backsplit auxiliary --dataset DATASET --ct-tissues
    backsplit advise RUN DATASET [--json FILE]
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from BackSplitLib import auxiliary as aux
from BackSplitLib.atomic import write_json_atomic
from BackSplitLib.cli.app import app
from BackSplitLib.errors import BackSplitError
from BackSplitLib.io import read_image, write_image
from BackSplitLib.vocabulary import AUXILIARY_EVIDENCE

out_console = Console()
TOOLS = ("totalsegmentator",)


class UsageError(BackSplitError):
    """The options of a command do not fit together."""


@app.command("auxiliary")
def auxiliary_command(
    image: Optional[Path] = typer.Argument(None, help="Image (file or DICOM folder) to make auxiliary labels for."),
    ct_tissues: bool = typer.Option(False, "--ct-tissues",
                                    help="CT tissue classes from HU: lung_air, fat, soft_tissue, bone."),
    mr_classes: Optional[int] = typer.Option(None, "--mr-classes",
                                             help="N MR intensity classes inside the body (2-8)."),
    mr_method: str = typer.Option("otsu", "--mr-method", help="otsu (multi-threshold) or kmeans."),
    import_map: Optional[Path] = typer.Option(None, "--import", help="Label map with named structures to import."),
    names: str = typer.Option("auto", "--names", help="Names of the map's values: a file (JSON, CSV, dataset.json, "
                              "map_to_binary.py[:task]) or 'auto' (header or a file beside the map)."),
    from_tool: Optional[str] = typer.Option(None, "--from", help="Run a segmentation tool: totalsegmentator."),
    structures: Optional[str] = typer.Option(None, "--structures", help="Comma-separated names, groups "
                                             "(abdominal_organs, lungs, bones, ...), globs or new=a+b."),
    out: Optional[Path] = typer.Option(None, "--out", help="Auxiliary label map to write."),
    schema_out: Optional[Path] = typer.Option(None, "--schema-out", help="Write the label schema JSON here."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Add the classes to every case of this dataset."),
    target: str = typer.Option("lesion", "--target", help="Target class name written into --schema-out."),
    hu: Optional[list[str]] = typer.Option(None, "--hu",
                                           help="Change a tissue HU range, e.g. fat=-200:-40 (repeatable)."),
    fast: bool = typer.Option(False, "--fast", help="TotalSegmentator's 3 mm model."),
    device: str = typer.Option("gpu", "--device", help="TotalSegmentator device: gpu, cpu, mps."),
) -> None:
    """Make auxiliary labels automatically: CT tissue classes, MR intensity classes or imported organs."""
    sources = [s for s, on in (("--ct-tissues", ct_tissues), ("--mr-classes", mr_classes is not None),
                               ("--import", import_map is not None), ("--from", from_tool is not None)) if on]
    if len(sources) != 1:
        raise UsageError("choose exactly one of --ct-tissues, --mr-classes N, --import MAP, --from totalsegmentator"
                         + (f" (got {', '.join(sources)})" if sources else ""))
    make_classes = _class_maker(ct_tissues, mr_classes, mr_method, hu)

    if dataset is not None:
        if image is not None or out is not None:
            raise UsageError("--dataset works on the dataset's own images: drop IMAGE and --out")
        if make_classes is None:
            raise UsageError("--dataset supports --ct-tissues and --mr-classes N",
                             "import organ maps per image, then add them to the dataset's labels")
        _add_to_dataset(dataset, make_classes)
        return

    if image is None:
        raise UsageError("give an IMAGE (or --dataset DATASET)")
    if out is None:
        raise UsageError("give --out LABEL, the auxiliary label map to write")
    picture = read_image(image)
    if make_classes is not None:
        labels = make_classes(picture)
    elif import_map is not None:
        if not structures:
            raise UsageError("--import needs --structures a,b,c (names or groups)")
        organ_map = aux.read_organ_map(import_map, names)
        out_console.print(f"names of {import_map.name}: {organ_map.names_source}", highlight=False)
        labels = aux.import_organ_map(picture, organ_map, structures)
    else:
        tool = (from_tool or "").lower()
        if tool not in TOOLS:
            raise UsageError(f"unknown tool '{from_tool}' for --from", f"supported: {', '.join(TOOLS)}")
        if not structures:
            raise UsageError("--from totalsegmentator needs --structures a,b,c")
        labels = aux.run_totalsegmentator(image, structures, picture, fast=fast, device=device)

    write_image(labels.label, out)
    if schema_out is not None:
        write_json_atomic(schema_out, labels.schema(target).to_dict())
    _print_classes(labels, picture.GetSpacing(), out)


def _class_maker(ct_tissues: bool, mr_classes: Optional[int], mr_method: str, hu: Optional[list[str]]):
    """The per-image generator for the intensity-based modes (None for imports)."""
    if hu and not ct_tissues:
        raise UsageError("--hu changes CT tissue ranges: use it with --ct-tissues")
    if ct_tissues:
        ranges = aux.TissueRanges().with_ranges(aux.parse_hu_ranges(hu or []))
        return lambda img: aux.ct_tissue_classes(img, ranges)
    if mr_classes is not None:
        # checked here too, so a dataset run fails before touching any case
        if not 2 <= mr_classes <= 8:
            raise UsageError(f"--mr-classes must be between 2 and 8, got {mr_classes}")
        if mr_method not in aux.MR_METHODS:
            raise UsageError(f"unknown --mr-method '{mr_method}'", f"use one of {', '.join(aux.MR_METHODS)}")
        return lambda img: aux.mr_intensity_classes(img, mr_classes, mr_method)
    return None


def _add_to_dataset(root: Path, make_classes) -> None:
    with _progress() as bar:
        task = bar.add_task("adding classes", total=None)

        def report(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"adding classes {name}")

        update = aux.add_classes_to_dataset(root, make_classes, report)
    out_console.print(f"{root}: {update.cases} training cases updated; new classes: "
                      f"{', '.join(update.added) or 'none (already present)'}; labels now "
                      f"{update.schema.describe_classes()}", highlight=False)


def _print_classes(labels: aux.AuxiliaryLabels, spacing, out: Path) -> None:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    table = Table(title=f"auxiliary classes -> {out}")
    table.add_column("value", justify="right")
    table.add_column("class")
    table.add_column("voxels", justify="right")
    table.add_column("volume (ml)", justify="right")
    for name, count in labels.voxel_counts().items():
        table.add_row(str(labels.classes[name]), name, str(count), f"{count * voxel_ml:.1f}")
    out_console.print(table)


@app.command("advise")
def advise_command(
    run: Path = typer.Argument(..., help="Run folder of a binary model."),
    dataset: Path = typer.Argument(..., help="Dataset whose training cases are predicted."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the ranking as JSON (for the Slicer module)."),
    tissues: Optional[bool] = typer.Option(None, "--tissues/--no-tissues",
                                           help="Also rank CT tissue classes (default: for CT datasets)."),
    max_recommended: int = typer.Option(5, "--max-recommended", help="At most this many recommended structures."),
    min_share: float = typer.Option(0.1, "--min-share", help="Recommend a structure when it touches at least this "
                                    "share of false positives or hosts this share of lesions."),
    device: str = typer.Option("auto", "--device", help="Prediction device: auto, cpu, cuda."),
) -> None:
    """Rank candidate auxiliary structures by the binary model's false positives and the lesions' hosts."""
    if not run.is_dir():
        raise UsageError(f"run folder {run} does not exist", "give the output folder of 'backsplit train'")
    with _progress() as bar:
        task = bar.add_task("predicting", total=None)

        def report(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"predicting {name}")

        report_ = aux.advise(run, dataset, tissues=tissues, device=device, min_share=min_share,
                             max_recommended=max_recommended, progress=report)
    table = Table(title=f"auxiliary structures for {dataset} ({report_.cases} cases, "
                        f"{report_.false_positive_components} false-positive components, {report_.lesions} lesions)")
    for column, justify in (("rank", "right"), ("structure", "left"), ("source", "left"),
                            ("FP components touched", "right"), ("lesions hosted", "right"),
                            ("cases", "right"), ("score", "right"), ("recommended", "center")):
        table.add_column(column, justify=justify)
    for rank, s in enumerate(report_.structures, start=1):
        table.add_row(str(rank), s.name, s.source, f"{s.fp_components} ({s.fp_share:.0%})",
                      f"{s.lesions_hosted} ({s.host_share:.0%})", str(s.cases), f"{s.score:.2f}",
                      "yes" if s.recommended else "")
    out_console.print(table)
    out_console.print("recommended auxiliary set: " + (", ".join(report_.recommended) or
                      "none (the binary model's false positives are not concentrated in any structure)"),
                      highlight=False)
    out_console.print(AUXILIARY_EVIDENCE, highlight=False)
    if json_out is not None:
        write_json_atomic(json_out, {"run": str(run), "dataset": str(dataset), **report_.to_dict()})


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)


