"""Server commands: ``backsplit serve`` and ``backsplit remote ...`` (the client side, over HTTP).

The token comes from ``--token-file`` or the BACKSPLIT_TOKEN environment variable, never from a plain
argument: arguments show in the process list of every user on the machine.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from BackSplitLib.cli.app import app, console
from BackSplitLib.client import SERVER_ENV, TOKEN_ENV, BackSplitClient, BackSplitClientError
from BackSplitLib.errors import BackSplitError
from BackSplitLib.permissions import DEFAULT_PROJECT, PROJECT_ENV
from BackSplitLib.server.limits import DEFAULT_DECODE_BUDGET, DEFAULT_MAX_IMAGE_SIZE, Limits, parse_size
from BackSplitLib.vocabulary import (ARCHITECTURES, DATABASE_ENV, DEFAULT_ARCHITECTURE, DEFAULT_LEASE_S, DEFAULT_FINETUNE_ITERATIONS, DEFAULT_HOST,
                                     DEFAULT_ITERATIONS, DEFAULT_MAX_UPLOAD, DEFAULT_PORT, DEFAULT_SERVER_URL, DEFAULT_TRAINING_MODE)
from BackSplitLib.vocabulary import TrainingMode as Mode

remote_app = typer.Typer(help="Talk to a BackSplit server: upload cases, train, fine-tune, predict.",
                         no_args_is_help=True)
app.add_typer(remote_app, name="remote")

SERVER = typer.Option(None, "--server", envvar=SERVER_ENV, show_envvar=True,
                      help=f"Server URL (default {DEFAULT_SERVER_URL}).")
TOKEN_FILE = typer.Option(None, "--token-file", exists=True, dir_okay=False,
                          help=f"File holding the API token (else ${TOKEN_ENV}).")
PROJECT = typer.Option(None, "--project", envvar=PROJECT_ENV, show_envvar=True,
                       help=f"Project (lesion task) on the server (default: '{DEFAULT_PROJECT}'); see "
                            "'backsplit remote projects'.")
DATABASE = typer.Option(None, "--database", envvar=DATABASE_ENV, show_envvar=True,
                        help="Job database: postgresql://USER@HOST:PORT/DB to share it between API processes and "
                             "'backsplit worker' machines (password: ~/.pgpass or the environment). Default: SQLite "
                             "in the data folder.")


# Data (JSON, tables) goes to stdout so it can be piped; messages and progress go to stderr (``console``).
output = Console()


# ---------------------------------------------------------------------- serve
@app.command()
def serve(
    data: Path = typer.Option(..., "--data", help="Data folder: database, cases, models (created on first start)."),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535),
    token_file: Path = typer.Option(None, "--token-file", dir_okay=False,
                                    help="Read the API token from this file, or write a new one there (mode 0600). "
                                         "Default: DATA/token."),
    no_auth: bool = typer.Option(False, "--no-auth", help="No token needed (only with a loopback --host)."),
    max_upload: str = typer.Option(DEFAULT_MAX_UPLOAD, "--max-upload", help="Largest request body: bytes or 64K / 500M / 2G."),
    workers: int = typer.Option(None, "--workers", min=0,
                                help="Training worker processes (default: one per GPU, one on CPU; 0: API only)."),
    max_image_size: str = typer.Option(DEFAULT_MAX_IMAGE_SIZE, "--max-image-size",
                                       help="Largest image an upload's header may declare (voxels x bytes per voxel), "
                                            "same syntax as --max-upload; 2G fits a float32 512x512x1000 CT."),
    max_iterations: int = typer.Option(Limits.max_iterations, "--max-iterations", min=1,
                                       help="Most iterations a job may ask for."),
    decode_budget: str = typer.Option(DEFAULT_DECODE_BUDGET, "--decode-budget",
                                      help="Voxel bytes decoded at once across all requests (a case's image + label "
                                           "count together); uploads wait, then get 429, while it is full."),
    max_job_tensor: int = typer.Option(Limits.max_job_tensor, "--max-job-tensor", min=1,
                                       help="A job's batch x patch voxels x classes (its memory)."),
    max_job_work: int = typer.Option(Limits.max_job_work, "--max-job-work", min=1,
                                     help="A job's iterations x batch x patch voxels (its time)."),
    header_timeout: float = typer.Option(Limits.header_timeout, "--header-timeout", min=0.1,
                                         help="Seconds a connection may take to send its request head."),
    body_timeout: float = typer.Option(Limits.body_timeout, "--body-timeout", min=0.1,
                                       help="Seconds a request body may stall before the request is dropped."),
    database: str = DATABASE,
) -> None:
    """Run the fine-tuning server (FastAPI + uvicorn); OpenAPI docs at /docs.

    The token comes from BACKSPLIT_TOKEN when set, else from the token file (created on first start)."""
    from BackSplitLib.server.serve import serve as run_server

    limits = Limits(max_image_size=parse_size(max_image_size), max_iterations=max_iterations,
                    decode_budget=parse_size(decode_budget), max_job_tensor=max_job_tensor, max_job_work=max_job_work,
                    header_timeout=header_timeout, body_timeout=body_timeout)
    _warn_password_on_argv(database)
    run_server(data, host, port, token_file, no_auth, parse_size(max_upload), workers,
               echo=lambda line: console.print(line, highlight=False, soft_wrap=True), limits=limits,
               database=database)


@app.command()
def worker(
    data: Path = typer.Option(..., "--data", help="The shared data folder (the one 'backsplit serve' uses)."),
    database: str = DATABASE,
    gpus: str = typer.Option(None, "--gpus", help="GPUs to train on, one worker each (e.g. 0,1), or 'cpu' "
                                                  "(default: every GPU this machine has, else the CPU)."),
    workers: int = typer.Option(None, "--workers", min=1, help="Worker processes on the CPU (with --gpus cpu)."),
    lease: float = typer.Option(DEFAULT_LEASE_S, "--lease", min=1.0,
                                help="Seconds a running job stays this machine's without a heartbeat; after "
                                     "that it resumes elsewhere from its last checkpoint."),
    runner: str = typer.Option("engine", "--runner", hidden=True, help="'probe': the queue probe (tests)."),
) -> None:
    """Run training workers on this machine for a server's job database and shared data folder.

    No API runs here: the workers claim jobs from the database, train, and publish models into the shared
    folder. Stop with Ctrl-C or SIGTERM (running jobs save a checkpoint and go back to the queue)."""
    from BackSplitLib.server.worker import RUNNERS
    from BackSplitLib.server.worker_machine import run_workers

    if runner not in RUNNERS:
        raise BackSplitError(f"--runner {runner} is not one of {', '.join(sorted(RUNNERS))}")
    _warn_password_on_argv(database)
    run_workers(data, database, gpus, workers, lease, runner,
                echo=lambda line: console.print(line, highlight=False, soft_wrap=True))


def _warn_password_on_argv(database: str | None) -> None:
    import os
    import sys

    if database and database != os.environ.get(DATABASE_ENV) and any(database in arg for arg in sys.argv) \
            and "@" in database and ":" in database.split("@")[0].split("//")[-1]:
        console.print(f"warning: the database password is visible in the process list; put the URL in "
                      f"${DATABASE_ENV} or the password in ~/.pgpass", highlight=False)


# ---------------------------------------------------------------------- helpers
@contextmanager
def _client(server: str | None, token_file: Path | None, project: str | None = None) -> Iterator[BackSplitClient]:
    """A client of ``project`` (None: $BACKSPLIT_PROJECT, else the default project); server errors become
    one-line CLI errors with the server's detail."""
    try:
        yield BackSplitClient.from_env(server, token_file, project=project)
    except BackSplitClientError as e:
        hint = f"give the token with --token-file or ${TOKEN_ENV}" if e.status == 401 else None
        raise BackSplitError(str(e), hint) from None  # the CLI prints it in one line and exits 2


def _in_project(client: BackSplitClient) -> str:
    """The ``--project`` option a printed follow-up command needs (none for the default project)."""
    return "" if client.project == DEFAULT_PROJECT else f" --project {client.project}"


def _print_json(data) -> None:
    output.print_json(json.dumps(data))


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _short(identifier: str | None) -> str:
    return identifier[:8] if identifier else "-"


def follow_job(client: BackSplitClient, job: dict) -> dict:
    """Show a job's progress from its event stream until it ends; returns the final job."""
    label = f"{job['kind']} {_short(job['id'])}"
    final = job
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task(label, total=job["total_iterations"] or None, status=job["state"])
        try:
            for event, data in client.events(job["id"]):
                final = data
                val = f" val Dice {data['val_dice']:.3f}" if data.get("val_dice") is not None else ""
                loss = f"loss {data['loss']:.3f}" if data.get("loss") is not None else data["state"]
                bar.update(task, completed=data["iteration"], total=data["total_iterations"] or None,
                           status=f"{loss}{val}" if data["state"] == "running" else data["state"])
        except KeyboardInterrupt:
            console.print(f"stopped following; the job goes on. Cancel it with: backsplit remote cancel {job['id']}"
                          f"{_in_project(client)}")
            raise typer.Exit(130) from None
    return final


def _report_job(client: BackSplitClient, job: dict) -> None:
    """The job's outcome as the last line; a model the server kept but did not make current is said, with how
    to use it anyway, and exits non-zero when the server refused to promote it (issue 21: never "succeeded"
    while predictions go on using the old model)."""
    if job["state"] == "succeeded":
        model = client.get_model(job["model_id"])
        if model.get("current", True):
            console.print(f"job {job['id']} succeeded: model {job['model_id']} is now the current model")
            return
        dice = (model.get("metrics") or {}).get("best_val_dice")
        why = job.get("error") or "the job asked not to promote it (--no-auto-promote)"
        detail = f"{why}; its best validation lesion Dice was {dice:.3f}" if isinstance(dice, (int, float)) else why
        hint = f"train longer, or use it anyway: backsplit remote promote {job['model_id']}{_in_project(client)}"
        if job.get("error"):  # the server refused to promote it: not what the user asked for
            raise BackSplitError(f"job {job['id']} kept model {job['model_id']} but did not make it current "
                                 f"({detail}); predictions keep using the current model, if any, not this one", hint)
        console.print(f"job {job['id']} succeeded: model {job['model_id']} kept, not current ({detail}); use it "
                      f"with: backsplit remote promote {job['model_id']}{_in_project(client)}")
    elif job["state"] == "failed":
        raise BackSplitError(f"job {job['id']} failed: {job['error']}")
    elif job["state"] == "cancelled":
        raise BackSplitError(f"job {job['id']} was cancelled")
    else:
        console.print(f"job {job['id']} is {job['state']}")


def _patch(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        values = [int(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) < 1:
        raise BackSplitError(f"--patch-size {text!r} must be three positive integers, e.g. 96,96,64")
    return values


def _submit(kind: str, server, token_file, cases: str, base_model: str | None, mode: Mode, iterations: int | None,
            arch: str, auto_promote: bool, detach: bool, project: str | None = None, **extra) -> None:
    case_ids: list[str] | str = "all" if cases.strip() == "all" else [c.strip() for c in cases.split(",") if c.strip()]
    extra["patch_size"] = _patch(extra.get("patch_size"))
    with _client(server, token_file, project) as client:
        job = client.create_job(kind, case_ids, base_model, mode.value, iterations, arch, auto_promote, **extra)
        console.print(f"queued job {job['id']} ({len(job['cases'])} cases, {job['total_iterations']} iterations)")
        if detach:
            return
        _report_job(client, follow_job(client, job))


# ---------------------------------------------------------------------- remote commands
@remote_app.command()
def health(server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT) -> None:
    """Server status, version, device and queue length (needs no token)."""
    with _client(server, token_file, project) as client:
        _print_json(client.health())


@remote_app.command()
def projects(
    create: str = typer.Option(None, "--create", help="Create a project with this name; its label schema comes from "
                                                      "--schema, --dataset or --target/--auxiliary."),
    schema: Path = typer.Option(None, "--schema", exists=True, dir_okay=False,
                                help="Label schema JSON file (a dataset.json with 'labels' and 'target' works too)."),
    dataset: Path = typer.Option(None, "--dataset", exists=True, file_okay=False,
                                 help="Take the label schema of this dataset folder."),
    target: str = typer.Option(None, "--target", help="The lesion (target) class name."),
    auxiliary: str = typer.Option("", "--auxiliary", help="Comma-separated auxiliary class names (with --target)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT,
) -> None:
    """List the server's projects (lesion tasks; the one --project / $BACKSPLIT_PROJECT picks is marked), or
    create one (--create NAME with a label schema)."""
    with _client(server, token_file, project) as client:
        if create:
            made = client.create_project(create, _project_schema(schema, dataset, target, auxiliary))
            console.print(f"created project {made['name']} (target {made['target']}); use it with --project "
                          f"{made['name']} or {PROJECT_ENV}={made['name']}")
            return
        items = client.list_projects()
        if as_json:
            return _print_json(items)
        table = Table("", "name", "target", "classes", "current model", "cases", "jobs", "models")
        for p in items:
            classes = ", ".join((p["schema"] or {}).get("labels", {})) or "any target"
            table.add_row("*" if p["name"] == client.project else "", p["name"], p["target"] or "-", classes,
                          _short(p["current_model"]), str(p["cases"]), str(p["jobs"]), str(p["models"]))
        output.print(table)


def _project_schema(schema: Path | None, dataset: Path | None, target: str | None, auxiliary: str) -> dict:
    """A new project's label schema from exactly one of: a schema file, a dataset folder, --target/--auxiliary."""
    from BackSplitLib.dataset import Dataset
    from BackSplitLib.schema import LabelSchema

    given = [name for name, value in (("--schema", schema), ("--dataset", dataset), ("--target", target)) if value]
    if len(given) != 1:
        raise BackSplitError("a new project needs its label schema from one of --schema FILE, --dataset DIR or "
                             f"--target NAME [--auxiliary a,b] (given: {', '.join(given) or 'none'})")
    if schema is not None:
        return LabelSchema.load(schema).to_dict()
    if dataset is not None:
        return Dataset.load(dataset, require_training=False).schema.to_dict()
    names = [n.strip() for n in auxiliary.split(",") if n.strip()]
    return LabelSchema.from_names(target.strip(), names).to_dict()


@remote_app.command()
def upload(
    image: Path = typer.Argument(None, exists=True, help="Image volume (NIfTI or NRRD)."),
    label: Path = typer.Argument(None, exists=True, help="Label map on the image's grid."),
    schema: str = typer.Option(None, "--schema", help="Label schema: a JSON file or JSON text."),
    dataset: Path = typer.Option(None, "--dataset", exists=True, file_okay=False,
                                 help="Upload every training case of a dataset folder instead."),
    allow_empty_target: bool = typer.Option(False, "--allow-empty-target", help="Accept a case without lesion voxels."),
    modality: str = typer.Option(None, "--modality", help="CT (default) or e.g. MR."),
    server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT,
) -> None:
    """Upload a case (IMAGE LABEL --schema F), or all cases of a dataset folder (--dataset DIR)."""
    if dataset is None and (image is None or label is None or schema is None):
        raise BackSplitError("give IMAGE LABEL --schema FILE, or --dataset DIR")
    with _client(server, token_file, project) as client:
        if dataset is None:
            case = client.upload_case(image, label, schema, allow_empty_target, modality)
            console.print(f"uploaded case {case['id']} ({', '.join(case['classes'])})")
            return
        _upload_dataset(client, dataset, allow_empty_target, modality)


def _upload_dataset(client: BackSplitClient, root: Path, allow_empty_target: bool, modality: str | None) -> None:
    """Each training case with the schema of the classes it labels (partially labelled cases stay partial)."""
    from BackSplitLib.dataset import Dataset

    ds = Dataset.load(root)
    modality = modality or next(iter(ds.channel_names.values()), "CT")
    with tempfile.TemporaryDirectory() as tmp, Progress(
            TextColumn("[bold]uploading"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("upload", total=len(ds.training))
        for case in ds.training:
            label, schema = _case_label(ds, case, Path(tmp))
            client.upload_case(case.image, label, schema, allow_empty_target, modality)
            bar.advance(task)
    console.print(f"uploaded {len(ds.training)} cases from {root}")


def _case_label(ds, case, tmp: Path):
    """The case's label and schema; a partially labelled case gets a schema of only its classes."""
    import SimpleITK as sitk

    from BackSplitLib.io import write_label
    from BackSplitLib.schema import IGNORE, LabelSchema

    schema = ds.schema
    if set(schema.class_names) <= set(case.labelled):
        return case.label, schema.to_dict()
    sub = LabelSchema.from_names(schema.target, [n for n in schema.auxiliary_names if n in case.labelled],
                                 ignore=IGNORE in schema.labels, colors=schema.colors)
    image = sitk.ReadImage(str(case.label))
    # a class the case does not label holds no voxels of it
    path = write_label(sub.relabel(sitk.GetArrayFromImage(image), schema, drop_missing=True), image,
                       tmp / f"{case.name}.nii.gz", sub)
    return path, sub.to_dict()


@remote_app.command()
def cases(
    delete: str = typer.Option(None, "--delete", help="Delete the case with this id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT,
) -> None:
    """List the stored cases (or delete one)."""
    with _client(server, token_file, project) as client:
        if delete:
            client.delete_case(delete)
            console.print(f"deleted case {delete}")
            return
        items = client.list_cases()
        if as_json:
            return _print_json(items)
        table = Table("id", "name", "size", "classes", "target voxels")
        for c in items:
            table.add_row(c["id"], c["name"], "x".join(map(str, c["size"])), ", ".join(c["classes"]),
                          str(c["target_voxels"]))
        output.print(table)


_CASES = typer.Option("all", "--cases", help="'all' or comma-separated case ids.")
_MODE = typer.Option(DEFAULT_TRAINING_MODE, "--mode")
_ITER = typer.Option(DEFAULT_ITERATIONS, "--iterations", min=1)
_ARCH = typer.Option(DEFAULT_ARCHITECTURE.value, "--arch",
                     help=f"{', '.join(ARCHITECTURES)} (fine-tuning keeps the base's).")
_PROMOTE = typer.Option(True, "--auto-promote/--no-auto-promote", help="Make the new model current.")
_BATCH = typer.Option(None, "--batch-size", min=1)
_VAL = typer.Option(None, "--val-every", min=1)
_PATCH = typer.Option(None, "--patch-size", help="Training patch x,y,z in voxels (default: planned from the data).")
_VALFRAC = typer.Option(None, "--val-fraction", min=0.0, max=0.9, help="Share of the cases held out for validation.")
_DETACH = typer.Option(False, "--detach", help="Queue the job and return without following it.")


@remote_app.command("train")
def remote_train(cases: str = _CASES, mode: Mode = _MODE, iterations: int = _ITER, arch: str = _ARCH,
                 auto_promote: bool = _PROMOTE, batch_size: int = _BATCH, val_every: int = _VAL,
                 patch_size: str = _PATCH, val_fraction: float = _VALFRAC, detach: bool = _DETACH,
                 server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT) -> None:
    """Train a new model from scratch on the server and follow its progress."""
    _submit("train", server, token_file, cases, None, mode, iterations, arch, auto_promote, detach,
            project=project, batch_size=batch_size, val_every=val_every, patch_size=patch_size,
            val_fraction=val_fraction)


@remote_app.command("finetune")
def remote_finetune(base_model: str = typer.Option("current", "--base-model", help="Model id or 'current'."),
                    cases: str = _CASES, mode: Mode = _MODE,
                    iterations: int = typer.Option(None, "--iterations", min=1,
                                                   help="Fine-tune iterations (default: the fine-tune recipe's, "
                                                        f"{DEFAULT_FINETUNE_ITERATIONS})."),
                    auto_promote: bool = _PROMOTE, batch_size: int = _BATCH, val_every: int = _VAL,
                    patch_size: str = _PATCH, val_fraction: float = _VALFRAC, detach: bool = _DETACH,
                    server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT) -> None:
    """Fine-tune a model on the server's cases and follow its progress."""
    _submit("finetune", server, token_file, cases, base_model, mode, iterations, DEFAULT_ARCHITECTURE.value, auto_promote, detach,
            project=project, batch_size=batch_size, val_every=val_every, patch_size=patch_size,
            val_fraction=val_fraction)


@remote_app.command()
def jobs(as_json: bool = typer.Option(False, "--json", help="Print JSON."),
         server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT) -> None:
    """List the jobs."""
    with _client(server, token_file, project) as client:
        items = client.list_jobs()
        if as_json:
            return _print_json(items)
        table = Table("id", "kind", "state", "iteration", "loss", "val Dice", "model", "error")
        for j in items:
            table.add_row(j["id"], j["kind"], j["state"], f"{j['iteration']}/{j['total_iterations']}",
                          _fmt(j["loss"]), _fmt(j["val_dice"]), _short(j["model_id"]), j["error"] or "")
        output.print(table)


@remote_app.command()
def status(job_id: str = typer.Argument(..., help="Job id."),
           follow: bool = typer.Option(False, "--follow", "-f", help="Follow progress until the job ends."),
           server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT) -> None:
    """One job's state and progress."""
    with _client(server, token_file, project) as client:
        job = client.get_job(job_id)
        if follow and job["state"] in ("queued", "running"):
            _report_job(client, follow_job(client, job))
        else:
            _print_json(job)


@remote_app.command()
def cancel(job_id: str = typer.Argument(..., help="Job id."),
           server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT) -> None:
    """Cancel a job (a running one stops at its next iteration and creates no model)."""
    with _client(server, token_file, project) as client:
        job = client.cancel_job(job_id)
        console.print(f"job {job_id}: {'cancelling' if job['state'] == 'running' else job['state']}")


@remote_app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON."),
           server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT) -> None:
    """List model versions; the current one is marked."""
    with _client(server, token_file, project) as client:
        items = client.list_models()
        if as_json:
            return _print_json(items)
        table = Table("", "id", "parent", "source", "classes", "best val Dice", "cases")
        for m in items:
            table.add_row("*" if m["current"] else "", m["id"], _short(m["parent"]), m["source"],
                          ", ".join(m["schema"].get("labels", {})), _fmt(m["metrics"].get("best_val_dice")),
                          str(len(m["cases"])))
        output.print(table)


@remote_app.command()
def promote(model_id: str = typer.Argument(..., help="Model id (an older one rolls back)."),
            server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT) -> None:
    """Make a model the current one."""
    with _client(server, token_file, project) as client:
        model = client.promote_model(model_id)
        console.print(f"model {model['id']} is now current")


@remote_app.command()
def download(model_id: str = typer.Argument("current", help="Model id or 'current'."),
             out: Path = typer.Option(..., "--out", help="A .zip file, or a folder to unpack the run folder into."),
             server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT) -> None:
    """Download a model's run folder (usable offline with `backsplit predict`)."""
    with _client(server, token_file, project) as client:
        path = client.download_model(model_id, out)
        console.print(f"saved {path}")


@remote_app.command("predict")
def remote_predict(image: Path = typer.Argument(..., exists=True, dir_okay=False, help="Image volume."),
                   out: Path = typer.Option(None, "--out", help="Output file or folder (default: next to the image)."),
                   model: str = typer.Option("current", "--model", help="Model id or 'current'."),
                   classes: bool = typer.Option(False, "--classes", help="A zip with the mask and the class map."),
                   server: str = SERVER, token_file: Path = TOKEN_FILE, project: str = PROJECT) -> None:
    """Predict the lesion mask of an image on the server (output in the input's geometry and format)."""
    with _client(server, token_file, project) as client:
        path = client.predict(image, out, model, classes)
        console.print(f"wrote {path}")
