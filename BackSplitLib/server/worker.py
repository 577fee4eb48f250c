"""The training worker: its own process (``python -m BackSplitLib.server.worker --data DIR``), one per GPU.

It claims queued jobs from the store one at a time, builds a dataset folder from the stored cases, calls
the engine's ``train`` and writes progress to SQLite, where the API's event streams read it. Keeping
training out of the API process means the API answers while a GPU is busy, and a crash in training (out of
memory, a killed process) cannot take the API down.

Stopping: SIGTERM (the server shutting down) makes the engine save its last checkpoint and the job goes
back to the queue to resume on the next start. A cancel request (``DELETE /jobs/{id}``) ends the job as
cancelled at the next iteration. The worker also stops when the server that started it is gone.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BackSplitLib.atomic import staged_folder
from BackSplitLib.dataset import CaseFiles
from BackSplitLib.errors import BackSplitError, TrainingCancelled
from BackSplitLib.image_files import check_data_complete, check_self_contained
from BackSplitLib.io import image_extension, write_label
from BackSplitLib.run_folder import load_run, read_model_json, run_metrics
from BackSplitLib.schema import LabelSchema
from BackSplitLib.server.lifetime import watch_stdin_eof
from BackSplitLib.server.store import Store
from BackSplitLib.vocabulary import JOB_NOT_PROMOTED_NO_LESION, LESION_NEVER_PREDICTED

FILE_ENDING = ".nii.gz"
SELF_CONTAINED_ENDINGS = {".nii.gz", ".nii", ".nrrd", ".mha"}  # one file per image: a link to it is the image
POLL_S = 0.5  # how often an idle worker looks for a queued job
CANCEL_POLL_S = 0.25  # how often a training job checks its cancel flag (one SQLite read)
PROGRESS_EVERY_S = 0.25  # progress rows written at most this often (plus validations and the last iteration)


# ---------------------------------------------------------------------- dataset from stored cases
def union_schema(schemas: list[LabelSchema], base: LabelSchema | None = None) -> LabelSchema:
    """All classes of the cases (and of the base model when fine-tuning), matched by name.

    Starting from the base model's schema keeps its class values, so the engine's head adaptation only
    has to append channels; classes that no case labels are still trained, through the marginal loss.
    """
    merged = base if base is not None else schemas[0]
    for schema in schemas:
        merged = merged.union(schema)
    return merged


def build_dataset(store: Store, case_ids: list[str], out: Path, base: LabelSchema | None = None) -> Path:
    """Write a dataset folder (nnU-Net layout) for the engine from stored cases.

    Labels are remapped into the union schema by class name. A case whose schema lacks some class of the
    union is listed in ``case_labels`` with the classes it does label, so the engine trains the missing
    ones with the marginal loss instead of treating them as background.
    """
    from BackSplitLib.dataset import write_dataset_json

    rows = [store.get_case(c) for c in case_ids]
    cases = [stored_case(store, row) for row in rows]
    for case in cases:  # cases stored before the upload gate existed pass it too before any reader opens them
        for path, role in ((case.image, "image"), (case.label, "label")):
            what = f"case {case.name} ({role})"
            check_data_complete(path, check_self_contained(path, what), what)
    schema = union_schema([case.schema for case in cases], base)
    ending = _file_ending(cases)
    with staged_folder(out) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        case_labels: dict[str, list[str]] = {}
        for case in cases:
            _link_or_convert(case.image, tmp / "imagesTr" / f"{case.name}_0000{ending}")
            _remap_label(case.label, case.schema, schema, tmp / "labelsTr" / f"{case.name}{ending}")
            if set(case.labelled) != set(schema.class_names):
                case_labels[case.name] = case.schema.class_names
        modality = rows[0].get("modality") or "CT"
        extra = {"case_labels": case_labels} if case_labels else {}
        write_dataset_json(tmp, schema, len(cases), ending, {"0": modality}, name="server-job", **extra)
    return out


def stored_case(store: Store, row: dict) -> CaseFiles:
    """A stored case (its database row) as the engine's case record, named by its id."""
    folder = store.case_dir(row["id"])
    schema = LabelSchema.from_dict(row["schema"], f"case {row['id']}")
    return CaseFiles.with_schema(row["id"], folder / row["image_file"], folder / row["label_file"], schema)


def _file_ending(cases: list[CaseFiles]) -> str:
    """The stored images' own format when they all share one, so nothing is converted (a case from Slicer
    stays NRRD, with its geometry in full precision); NIfTI for a job that mixes formats."""
    endings = {image_extension(case.image) for case in cases}
    return endings.pop() if len(endings) == 1 and endings <= SELF_CONTAINED_ENDINGS else FILE_ENDING


def _link_or_convert(source: Path, dest: Path) -> None:
    """Images already in the dataset's format are linked (no copy of a large CT); others are converted."""
    if image_extension(source) == image_extension(dest):
        os.symlink(source.resolve(), dest)
    else:
        sitk.WriteImage(sitk.ReadImage(str(source)), str(dest), True)


def _remap_label(source: Path, case_schema: LabelSchema, schema: LabelSchema, dest: Path) -> None:
    table = schema.lookup_from(case_schema)
    if np.array_equal(table, np.arange(len(table))) and image_extension(source) == image_extension(dest):
        os.symlink(source.resolve(), dest)  # values already agree: nothing to rewrite
        return
    label = sitk.ReadImage(str(source))
    write_label(schema.relabel(sitk.GetArrayFromImage(label), case_schema), label, dest, schema)


# ---------------------------------------------------------------------- one job
class JobStopped(Exception):
    """The worker is shutting down: the job goes back to the queue and resumes later."""


def train_config(params: dict, finetune: bool = False):
    """The engine's TrainConfig from a job's parameters (unknown keys are left to the engine's defaults;
    a fine-tune job gets the engine's one fine-tune recipe, as the CLI's ``finetune`` does)."""
    from BackSplitLib.training import TrainConfig, finetune_config

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in params.items() if k in known and v is not None}
    if "patch_size" in values:
        values["patch_size"] = tuple(int(n) for n in values["patch_size"])
    return finetune_config(**values) if finetune else TrainConfig(**values)


def run_training(store: Store, job: dict, should_stop: Callable[[], bool],
                 progress: Callable[[object], None]) -> tuple[Path, dict]:
    """Train one job with the real engine; returns the run folder and the model's metrics."""
    from BackSplitLib.training import train

    job_dir = store.job_dir(job["id"])
    base_run = store.model_dir(job["base_model"]) if job.get("base_model") else None
    base_schema = load_run(base_run).schema if base_run is not None else None
    dataset = build_dataset(store, job["cases"], job_dir / "dataset", base_schema)
    config = train_config({**job["params"], "device": os.environ.get("BACKSPLIT_DEVICE", "auto")},
                          finetune=job["kind"] == "finetune")
    if not job["resume"]:
        shutil.rmtree(job_dir / "run", ignore_errors=True)  # a first attempt starts clean
    run_dir = train(dataset, job_dir / "run", config, base_run=base_run, resume=job["resume"],
                    progress=progress, should_stop=should_stop)
    return Path(run_dir), run_metrics(read_model_json(run_dir))


def validation_found_lesion(metrics: dict) -> bool:
    """False when the run's lesion watch says validation never predicted the lesion, or its best validation
    Dice is 0 or below: a model that never found the lesion must not become current. A run without
    validation counts as found (as before)."""
    if metrics.get("lesion_found") is False:
        return False
    best = metrics.get("best_val_dice")
    return best is None or best > 0


def should_promote(params: dict, metrics: dict) -> bool:
    """Auto-promotion, unless the job turned it off or its validation never found the lesion."""
    return bool(params.get("auto_promote", True)) and validation_found_lesion(metrics)


class Worker:
    """Claims and runs jobs until told to stop. ``run_job`` is the engine call (replaceable in tests)."""

    def __init__(self, store: Store, parent_pid: int | None = None,
                 run_job: Callable[..., tuple[Path, dict]] = run_training):
        self.store = store
        self.parent_pid = parent_pid
        self.run_job = run_job
        self.stopping = False
        self.parent_pipe_closed = False  # set when the server's end of our stdin closes (every OS)

    def parent_gone(self) -> bool:
        # os.getppid() is the fast path on POSIX; on Windows it keeps a dead parent's id, so stdin EOF decides.
        return self.parent_pid is not None and (self.parent_pipe_closed or os.getppid() != self.parent_pid)

    def serve_forever(self) -> None:
        while not self.stopping and not self.parent_gone():
            job = self.store.claim_next_job(os.getpid())
            if job is None:
                time.sleep(POLL_S)
                continue
            self.run(job)

    def run(self, job: dict) -> None:
        job_id = job["id"]
        log_path = self.store.job_dir(job_id) / "worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        checks = {"at": 0.0, "cancel": False}
        written = {"at": 0.0, "val_dice": None}

        def should_stop() -> bool:
            if self.stopping or self.parent_gone():
                return True
            now = time.monotonic()
            if now - checks["at"] >= CANCEL_POLL_S:
                checks["at"], checks["cancel"] = now, self.store.cancel_requested(job_id)
            return checks["cancel"]

        def progress(p) -> None:
            now = time.monotonic()
            final = p.iteration >= p.total_iterations
            if not final and p.val_dice == written["val_dice"] and now - written["at"] < PROGRESS_EVERY_S:
                return  # throttle: one row write per PROGRESS_EVERY_S is plenty for a progress bar
            written["at"], written["val_dice"] = now, p.val_dice
            self.store.update_progress(job_id, iteration=int(p.iteration), total_iterations=int(p.total_iterations),
                                       loss=_finite(p.loss), val_dice=_finite(p.val_dice), eta_s=_finite(p.eta_s))

        _log(log_path, f"attempt {job['attempts']} started (resume={job['resume']}, pid {os.getpid()})")
        try:
            run_dir, metrics = self.run_job(self.store, job, should_stop, progress)
        except TrainingCancelled:
            if self.stopping or self.parent_gone():
                _log(log_path, "worker stopping: job put back in the queue to resume from its checkpoint")
                self.store.requeue_job(job_id, resume=True)
                return
            _log(log_path, "cancelled")
            self.store.finish_job(job_id, "cancelled")
            shutil.rmtree(self.store.job_dir(job_id) / "run", ignore_errors=True)
        except BackSplitError as e:
            _log(log_path, f"failed: {e}")
            self.store.finish_job(job_id, "failed", self.store.without_paths(str(e)))
        except Exception as e:  # an engine bug must fail the job with its reason, not kill the worker
            _log(log_path, traceback.format_exc())
            self.store.finish_job(job_id, "failed", self.store.without_paths(
                f"training stopped with an internal error: {type(e).__name__}: {str(e)[:300]} (see {log_path} "
                "in the server's data folder)"))
        else:
            meta = read_model_json(run_dir)
            promote = should_promote(job["params"], metrics)
            found = validation_found_lesion(metrics)
            # A model that never found the lesion is kept, not promoted, and the job says why (its note).
            model = self.store.register_model(
                run_dir, schema=meta.get("schema", {}), metrics=metrics, parent=job.get("base_model"),
                case_ids=job["cases"], source=job["kind"], job_id=job_id, promote=promote,
                first_becomes_current=found, note=None if found else JOB_NOT_PROMOTED_NO_LESION)
            _log(log_path, f"succeeded: model {model['id']}" + ("" if promote else " (not promoted)")
                 + ("" if found else f": {LESION_NEVER_PREDICTED}"))
        shutil.rmtree(self.store.job_dir(job_id) / "dataset", ignore_errors=True)


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _log(path: Path, message: str) -> None:
    with open(path, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="BackSplit training worker (started by 'backsplit serve').")
    parser.add_argument("--data", required=True, help="the server's data folder")
    parser.add_argument("--parent-pid", type=int, default=None, help="stop when this process is gone")
    args = parser.parse_args(argv)
    worker = Worker(Store(args.data), args.parent_pid)

    def stop(signum, frame) -> None:  # finish the current iteration, save, requeue, exit
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.parent_pid is not None:
        watch_stdin_eof(lambda: setattr(worker, "parent_pipe_closed", True))
    try:  # import the engine now, so the first job starts training without the import delay
        import monai.data  # noqa: F401

        import BackSplitLib.losses  # noqa: F401
        import BackSplitLib.networks  # noqa: F401
        import BackSplitLib.training  # noqa: F401
        import BackSplitLib.transforms  # noqa: F401
    except ImportError as e:
        print(f"backsplit worker: the training engine is unavailable ({e})", file=sys.stderr)
    print(f"backsplit worker {os.getpid()} ready (data {args.data})", flush=True)
    worker.serve_forever()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
