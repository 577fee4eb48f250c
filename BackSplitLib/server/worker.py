"""The training worker: its own process (``python -m BackSplitLib.server.worker --data DIR``), one per GPU,
started by ``backsplit serve`` on its machine or by ``backsplit worker`` on any machine that sees the database
and the shared data folder.

It claims queued jobs from the store one at a time (holding a lease it renews; one queue for every project),
builds a dataset folder from the job's project's stored cases (a case or base model of another project fails
the job: the store checked it when the job was queued, the worker checks it again), calls the engine's ``train`` and writes progress to the database, where every API
process's event streams read it. Keeping training out of the API process means the API answers while a GPU
is busy, and a crash in training (out of memory, a killed process) cannot take the API down.

Stopping: SIGTERM (the server shutting down) makes the engine save its last checkpoint and the job goes
back to the queue to resume on the next start. A cancel request (``DELETE /jobs/{id}`` on any API process)
ends the job as cancelled at the next iteration. The worker also stops when the server that started it is
gone. A worker that dies without a word (kill -9, machine down) stops renewing its lease; the next claim
after it expires sends the job back to the queue, to resume from its last checkpoint on any worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import threading
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
from BackSplitLib.permissions import DEFAULT_PROJECT
from BackSplitLib.run_folder import load_run, read_model_json, run_metrics
from BackSplitLib.schema import LabelSchema
from BackSplitLib.server.database import DATABASE_ENV, StoreUnavailable
from BackSplitLib.server.lifetime import watch_stdin_eof
from BackSplitLib.server.store import LEASE_S, LeaseLost, NotFound, Store, worker_name
from BackSplitLib.vocabulary import JOB_NOT_PROMOTED_NO_LESION, LESION_NEVER_PREDICTED

FILE_ENDING = ".nii.gz"
SELF_CONTAINED_ENDINGS = {".nii.gz", ".nii", ".nrrd", ".mha"}  # one file per image: a link to it is the image
POLL_S = 0.5  # how often an idle worker looks for a queued job
RETRY_MAX_S = 30.0  # the longest pause between retries while the database is unreachable
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


def build_dataset(store: Store, case_ids: list[str], out: Path, base: LabelSchema | None = None,
                  project: str = DEFAULT_PROJECT) -> Path:
    """Write a dataset folder (nnU-Net layout) for the engine from stored cases of ``project`` (only its own:
    a case id of another project is NotFound).

    Labels are remapped into the union schema by class name. A case whose schema lacks some class of the
    union is listed in ``case_labels`` with the classes it does label, so the engine trains the missing
    ones with the marginal loss instead of treating them as background.
    """
    from BackSplitLib.dataset import write_dataset_json

    rows = [store.get_case(c, project) for c in case_ids]
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
    project = job["project"]
    base_run = store.model_dir(store.get_model(job["base_model"], project)["id"]) if job.get("base_model") else None
    base_schema = load_run(base_run).schema if base_run is not None else None
    dataset = build_dataset(store, job["cases"], job_dir / "dataset", base_schema, project)
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
    """Claims and runs jobs until told to stop. ``run_job`` is the engine call (replaceable in tests).

    While a job runs, a heartbeat thread renews its lease every ``lease_s / 4`` seconds. Every write for the
    job names this worker, so a worker whose lease expired (the job went back to the queue) changes nothing:
    it stops at its next iteration without saving. When the database is unreachable the worker keeps training,
    skips progress rows, and retries its heartbeat and its result with back-off; a result that could not be
    written before shutdown stays on disk, and the job resumes from its last checkpoint when its lease expires.
    """

    def __init__(self, store: Store, parent_pid: int | None = None,
                 run_job: Callable[..., tuple[Path, dict]] = run_training, lease_s: float = LEASE_S):
        self.store = store
        self.parent_pid = parent_pid
        self.run_job = run_job
        self.lease_s = lease_s
        self.name = worker_name()
        self.stopping = False
        self.parent_pipe_closed = False  # set when the server's end of our stdin closes (every OS)

    def parent_gone(self) -> bool:
        # os.getppid() is the fast path on POSIX; on Windows it keeps a dead parent's id, so stdin EOF decides.
        return self.parent_pid is not None and (self.parent_pipe_closed or os.getppid() != self.parent_pid)

    def quitting(self) -> bool:
        return self.stopping or self.parent_gone()

    def serve_forever(self) -> None:
        pause = POLL_S
        while not self.quitting():
            try:
                job = self.store.claim_next_job(os.getpid(), self.name, self.lease_s)
            except StoreUnavailable as e:
                pause = min(RETRY_MAX_S, pause * 2)
                print(f"backsplit worker: {e}; retrying in {pause:.0f} s", file=sys.stderr, flush=True)
                time.sleep(pause)
                continue
            pause = POLL_S
            if job is None:
                time.sleep(POLL_S)
                continue
            self.run(job)

    def retry(self, write: Callable[[], object], what: str, log_path: Path):
        """``write()`` until the database takes it, with back-off; None when the worker must stop first."""
        pause = 0.5
        while True:
            try:
                return write()
            except StoreUnavailable as e:
                if self.quitting():
                    _log(log_path, f"could not {what} before stopping ({e}); the job resumes from its checkpoint "
                                   "when its lease expires")
                    return None
                _log(log_path, f"could not {what} ({e}); retrying in {pause:.1f} s")
                time.sleep(pause)
                pause = min(RETRY_MAX_S, pause * 2)

    def run(self, job: dict) -> None:
        job_id = job["id"]
        worker = job.get("worker") or self.name  # the name the claim recorded: every write is fenced by it
        log_path = self.store.job_dir(job_id) / "worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        lease = _Lease(self.store, job_id, worker, self.lease_s, lambda m: _log(log_path, m))
        checks = {"at": 0.0}
        written = {"at": 0.0, "val_dice": None}
        latest: dict = {}  # the last progress, written with the result even if its row write was skipped

        def should_stop() -> bool:
            if lease.lost.is_set():
                raise LeaseLost(f"job {job_id} is no longer held by this worker")  # stop without saving
            if self.quitting():
                return True
            now = time.monotonic()
            if now - checks["at"] >= CANCEL_POLL_S:
                checks["at"] = now
                try:
                    if self.store.cancel_requested(job_id):
                        lease.cancel.set()
                except StoreUnavailable:
                    pass  # training goes on; the heartbeat retries
            return lease.cancel.is_set()

        def progress(p) -> None:
            latest.update(iteration=int(p.iteration), total_iterations=int(p.total_iterations), loss=_finite(p.loss),
                          val_dice=_finite(p.val_dice))
            now = time.monotonic()
            final = p.iteration >= p.total_iterations
            if not final and p.val_dice == written["val_dice"] and now - written["at"] < PROGRESS_EVERY_S:
                return  # throttle: one row write per PROGRESS_EVERY_S is plenty for a progress bar
            written["at"], written["val_dice"] = now, p.val_dice
            try:
                if not self.store.update_progress(job_id, worker, iteration=int(p.iteration),
                                                  total_iterations=int(p.total_iterations), loss=_finite(p.loss),
                                                  val_dice=_finite(p.val_dice), eta_s=_finite(p.eta_s)):
                    lease.lost.set()
            except StoreUnavailable:
                pass  # progress is for display: skip it while the database is away

        _log(log_path, f"attempt {job['attempts']} started (resume={job['resume']}, worker {worker})")
        lease.start()
        try:
            self._run(job, worker, should_stop, progress, latest, log_path)
        finally:
            lease.stop()
        shutil.rmtree(self.store.job_dir(job_id) / "dataset", ignore_errors=True)

    def _run(self, job: dict, worker: str, should_stop, progress, latest: dict, log_path: Path) -> None:
        job_id = job["id"]
        try:
            run_dir, metrics = self.run_job(self.store, job, should_stop, progress)
            meta = read_model_json(run_dir)  # a damaged run folder fails the job, not the worker
        except LeaseLost:
            _log(log_path, "lease lost (the job went back to the queue): stopped without saving")
        except StoreUnavailable as e:  # the job could not read what it needs: not the job's fault
            _log(log_path, f"stopped: {e}; the job resumes from its checkpoint when its lease expires")
        except TrainingCancelled:
            if self.quitting():
                _log(log_path, "worker stopping: job put back in the queue to resume from its checkpoint")
                self.retry(lambda: self.store.requeue_job(job_id, resume=True, worker=worker), "requeue the job",
                           log_path)
                return
            _log(log_path, "cancelled")
            self.retry(lambda: self.store.finish_job(job_id, "cancelled", worker=worker), "record the cancel", log_path)
            shutil.rmtree(self.store.job_dir(job_id) / "run", ignore_errors=True)
        except (BackSplitError, NotFound) as e:  # NotFound: a case or base model outside the job's project, or gone
            _log(log_path, f"failed: {e}")
            self.retry(lambda: self.store.finish_job(job_id, "failed", self.store.without_paths(str(e)), worker=worker),
                       "record the failure", log_path)
        except Exception as e:  # an engine bug must fail the job with its reason, not kill the worker
            _log(log_path, traceback.format_exc())
            message = self.store.without_paths(
                f"training stopped with an internal error: {type(e).__name__}: {str(e)[:300]} (see {log_path} "
                "in the server's data folder)")
            self.retry(lambda: self.store.finish_job(job_id, "failed", message, worker=worker), "record the failure",
                       log_path)
        else:
            promote = should_promote(job["params"], metrics)
            found = validation_found_lesion(metrics)

            def publish():  # a model that never found the lesion is kept, not promoted, and the job says why
                return self.store.register_model(
                    run_dir, schema=meta.get("schema", {}), metrics=metrics, parent=job.get("base_model"),
                    case_ids=job["cases"], source=job["kind"], job_id=job_id, worker=worker, promote=promote,
                    first_becomes_current=found, progress=latest, note=None if found else JOB_NOT_PROMOTED_NO_LESION)

            try:
                model = self.retry(publish, "publish the model", log_path)
            except LeaseLost:
                _log(log_path, "lease lost before the model was published: another worker finishes the job")
                return
            if model is not None:
                _log(log_path, f"succeeded: model {model['id']}" + ("" if promote else " (not promoted)")
                     + ("" if found else f": {LESION_NEVER_PREDICTED}"))


class _Lease:
    """The heartbeat thread of one running job: renews its lease, notices a cancel or a lost lease, and
    retries with back-off while the database is unreachable."""

    def __init__(self, store: Store, job_id: str, worker: str, lease_s: float, log: Callable[[str], None]):
        self.store, self.job_id, self.worker, self.lease_s, self.log = store, job_id, worker, lease_s, log
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="backsplit-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        every = self.lease_s / 4
        pause = every
        while not self._done.wait(pause):
            try:
                state = self.store.heartbeat(self.job_id, self.worker, self.lease_s)
            except StoreUnavailable as e:
                pause = min(pause * 2, RETRY_MAX_S, every)  # never wait longer than a normal beat
                self.log(f"heartbeat failed ({e}); retrying")
                continue
            pause = every
            if state == "lost":
                self.lost.set()
                return
            if state == "cancel":
                self.cancel.set()


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _log(path: Path, message: str) -> None:
    with open(path, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="BackSplit training worker (started by 'backsplit serve' or "
                                                 "'backsplit worker').")
    parser.add_argument("--data", required=True, help="the server's data folder")
    parser.add_argument("--parent-pid", type=int, default=None, help="stop when this process is gone")
    parser.add_argument("--lease-s", type=float, default=LEASE_S, help="seconds a job's lease lasts unrenewed")
    parser.add_argument("--runner", choices=sorted(RUNNERS), default="engine", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # The database URL comes from the environment (it may hold a password: never on argv).
    worker = Worker(Store(args.data, os.environ.get(DATABASE_ENV) or None), args.parent_pid,
                    run_job=RUNNERS[args.runner](), lease_s=args.lease_s)
    return serve(worker, args.parent_pid is not None, preload=args.runner == "engine")


def serve(worker: Worker, watch_parent: bool, preload: bool = True) -> int:
    """Run ``worker`` in this process until SIGTERM / SIGINT (or its parent's pipe closes)."""

    def stop(signum, frame) -> None:  # finish the current iteration, save, requeue, exit
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if watch_parent:
        watch_stdin_eof(lambda: setattr(worker, "parent_pipe_closed", True))
    if preload:
        try:  # import the engine now, so the first job starts training without the import delay
            import monai.data  # noqa: F401

            import BackSplitLib.losses  # noqa: F401
            import BackSplitLib.networks  # noqa: F401
            import BackSplitLib.training  # noqa: F401
            import BackSplitLib.transforms  # noqa: F401
        except ImportError as e:
            print(f"backsplit worker: the training engine is unavailable ({e})", file=sys.stderr)
    print(f"backsplit worker {worker.name} ready (data {worker.store.root}, database {worker.store.describe()})",
          flush=True)
    worker.serve_forever()
    return 0


def _probe_runner():
    from BackSplitLib.server.probe_job import run_probe_job

    return run_probe_job


#: What a worker runs for a job: the engine, or the queue probe (tests and benchmarks of the queue itself).
RUNNERS: dict[str, Callable[[], Callable[..., tuple[Path, dict]]]] = {"engine": lambda: run_training,
                                                                      "probe": _probe_runner}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
