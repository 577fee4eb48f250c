"""The queue probe: a job runner that exercises the queue, leases and results without training.

``backsplit worker --runner probe`` (hidden; tests and ``backsplit bench server --database``) runs it instead
of the engine, so a hundred jobs take seconds: each job counts its iterations (``PROBE_STEP_S`` each), reports
progress, honours stop and cancel like training does, appends one line per execution to
``jobs/<id>/executions.log`` (what the exactly-once test counts) and publishes a run folder with a
``model.json``. It is not a model: nothing may predict with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from BackSplitLib.errors import TrainingCancelled
from BackSplitLib.run_folder import write_model_json

PROBE_STEP_S = 0.02
EXECUTIONS_LOG = "executions.log"


class ProbeProgress(NamedTuple):
    iteration: int
    total_iterations: int
    loss: float
    val_dice: float | None
    eta_s: float


def run_probe_job(store, job: dict, should_stop: Callable[[], bool],
                  progress: Callable[[object], None]) -> tuple[Path, dict]:
    job_dir = store.job_dir(job["id"])
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / EXECUTIONS_LOG, "a") as log:
        log.write(f"{job.get('worker')} attempt {job['attempts']}\n")
    schema = store.get_case(job["cases"][0], job["project"])["schema"] if job["cases"] else {}  # read first, as the engine does
    total = int(job["params"].get("iterations", 1))
    for iteration in range(total):
        if should_stop():
            raise TrainingCancelled(f"probe stopped at iteration {iteration}")
        time.sleep(PROBE_STEP_S)
        progress(ProbeProgress(iteration + 1, total, 1.0 / (iteration + 1), None, PROBE_STEP_S * (total - iteration - 1)))
    run = job_dir / "run"
    run.mkdir(exist_ok=True)
    # A model.json every reader accepts, naming itself a probe; best validation Dice 0: the probe found no
    # lesion, so its "model" never becomes current. It has no weights: nothing can predict with it.
    write_model_json(run, {"probe": True, "schema": schema, "arch": {"name": "probe", "params": {}},
                           "preprocessing": {}, "best_val_dice": 0.0, "history": [{"iteration": total}]})
    return run, {"best_val_dice": 0.0, "last_iteration": total}
