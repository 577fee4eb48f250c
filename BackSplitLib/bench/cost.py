"""``backsplit bench cost``: what BackSplit costs compared with a binary model (medians of repeated runs).

- **Inference**: time and peak memory per volume, BackSplit (the phantom's 12 classes) vs binary, same
  architecture and body weights, through ``Predictor.predict`` (what ``backsplit predict`` runs); the
  parameter ratio. Only the 1x1x1 head differs, so the target is a time ratio <= 1.02.
- **Training**: seconds per iteration BackSplit vs binary for each architecture, measured inside the real
  trainer (``training.train``: data, forward, loss, backward, optimizer) as the median of per-iteration
  times after a warm-up (target <= 1.05).
- **Pipeline overhead**: ``Predictor.predict_file`` wall time (read, resample, sliding windows, collapse,
  resample back, write) vs the bare network forward over the same windows (target <= 1.3).
- **Scale**: a 512x512x200 CT-sized volume predicted on the CPU by a model at the volume's own spacing
  (so every voxel is predicted), in a child process whose peak RSS is read back (target <= 8 GiB).
- **Data pipeline**: the trainer's iterations/s with real loading and augmentation vs the same step on a
  pre-loaded batch (target >= 0.9).

Memory is measured as peak resident set size (``ru_maxrss``) of a fresh child process, so every
measurement starts from the same state; the child also reports its RSS before predicting, so the
prediction's own share is visible. Numbers are printed and saved (``cost.json``, ``cost.md``); nothing
here asserts a target.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from queue import Empty

import numpy as np
import SimpleITK as sitk
import torch

from BackSplitLib.atomic import write_text_atomic
from BackSplitLib.bench import torch_threads
from BackSplitLib.bench.stats import meets
from BackSplitLib import runs as runfiles
from BackSplitLib.networks import ARCHITECTURES, build_network, default_params
from BackSplitLib.phantom import PHANTOM_SCHEMA, make_phantom, write_phantom_dataset
from BackSplitLib.schema import LabelSchema

TARGETS = {"inference_time_ratio": ("<=", 1.02), "train_time_ratio": ("<=", 1.05),
           "pipeline_overhead": ("<=", 1.3), "scale_peak_gib": ("<=", 8.0), "data_pipeline_ratio": (">=", 0.9)}
_GIB = 1024**3


@dataclass
class CostSettings:
    """Sizes and repeat counts (the defaults take several minutes on 2 CPU cores)."""

    archs: tuple[str, ...] = ARCHITECTURES
    shape: tuple[int, int, int] = (64, 80, 96)  # phantom (z, y, x), spacing 1.5 x 1.5 x 2.5 mm
    patch_size: tuple[int, int, int] = (64, 64, 64)
    repeats: int = 5
    train_iterations: int = 10
    warmup_iterations: int = 2
    scale_shape: tuple[int, int, int] | None = (200, 512, 512)  # (z, y, x); None skips the scale test
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None  # torch CPU threads (None: torch's default); children use the same
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ helpers
def _preprocessing(spacing, patch_size) -> dict:
    """A run's preprocessing record for timing (CT window of the phantom's HU range)."""
    return {"orientation": "RAS", "spacing": [float(s) for s in spacing],
            "normalization": {"scheme": "CT", "clip": [-1000.0, 1500.0], "mean": 0.0, "std": 300.0},
            "patch_size": [int(p) for p in patch_size]}


def make_run(folder: Path, arch: str, schema: LabelSchema, preprocessing: dict, seed: int = 0) -> Path:
    """An untrained run folder (timing does not depend on the weights); the same seed gives the same body
    weights for any class count, so binary and BackSplit differ only in the head."""
    folder.mkdir(parents=True, exist_ok=True)
    params = default_params(arch, preprocessing["patch_size"], preprocessing["spacing"])
    torch.manual_seed(seed)
    model = build_network(arch, 1, schema.num_classes, **params)
    runfiles.save_weights(model, folder / runfiles.BEST_WEIGHTS)
    runfiles.write_model_json(folder, {"schema": schema.to_dict(), "arch": {"name": arch, "params": params},
                                       "preprocessing": preprocessing})
    return folder


def parameter_count(run: Path) -> int:
    return sum(p.numel() for p in runfiles.build_model(runfiles.load_run(run), "best").parameters())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _median(values) -> float:
    return float(statistics.median(values))


# ------------------------------------------------------------------------------ child processes
def _predict_in_child(run: str, image_path: str, device: str, threads: int, queue) -> None:
    """Child: load the run, predict ``image_path`` once, report time and memory."""
    try:
        torch.set_num_threads(threads)
        from BackSplitLib.inference import Predictor
        from BackSplitLib.io import read_image

        predictor = Predictor.from_run(run, device=device)
        image = read_image(image_path, "image")
        before = _rss_bytes()
        start = time.perf_counter()
        predictor.predict(image)
        seconds = time.perf_counter() - start
        queue.put({"seconds": seconds, "rss_before_bytes": before, "peak_rss_bytes": _peak_rss_bytes()})
    except BaseException as e:  # report, do not hang the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})


def predict_in_child(run: Path, image_path: Path, device: str = "cpu", timeout_s: float = 3600) -> dict:
    """Predict in a fresh process; ``{"seconds", "rss_before_bytes", "peak_rss_bytes"}``."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_predict_in_child,
                              args=(str(run), str(image_path), device, torch.get_num_threads(), queue))
    process.start()
    deadline = time.monotonic() + timeout_s
    result = None
    try:
        while result is None and time.monotonic() < deadline:
            try:
                result = queue.get(timeout=1.0)
            except Empty:
                if not process.is_alive() and queue.empty():  # died without a word (killed, out of memory)
                    raise RuntimeError(f"the prediction child process exited with code {process.exitcode}") from None
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    if result is None:
        raise RuntimeError(f"the prediction child process did not finish within {timeout_s:.0f} s")
    if "error" in result:
        raise RuntimeError(f"prediction in a child process failed: {result['error']}")
    return result


# ------------------------------------------------------------------------------ measurements
class _TimedForward(torch.nn.Module):
    """Wraps a network and adds up the seconds spent in its forward calls (the bare network cost)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.seconds = 0.0
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        y = self.model(x)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return y


def inference_cost(work: Path, settings: CostSettings, arch: str, image_path: Path, log=print) -> dict:
    """Time and memory per volume, BackSplit vs binary, and the pipeline overhead (BackSplit run)."""
    from BackSplitLib.inference import Predictor

    preprocessing = _preprocessing((1.5, 1.5, 2.5), settings.patch_size)
    runs = {mode: make_run(work / f"{arch}_{mode}", arch, schema, preprocessing, settings.seed)
            for mode, schema in (("binary", PHANTOM_SCHEMA.binary()), ("backsplit", PHANTOM_SCHEMA))}
    predictors = {m: Predictor.from_run(r, device=settings.device) for m, r in runs.items()}
    image = sitk.ReadImage(str(image_path))
    times: dict[str, list[float]] = {m: [] for m in runs}
    with torch.no_grad():
        for m in runs:
            predictors[m].predict(image)  # warm-up (allocator, thread pool)
        for _ in range(settings.repeats):
            for m in runs:  # interleaved, so drifting machine load hits both alike
                start = time.perf_counter()
                predictors[m].predict(image)
                times[m].append(time.perf_counter() - start)
    memory = {m: predict_in_child(r, image_path, settings.device) for m, r in runs.items()}

    # Pipeline overhead: the full file-to-file path vs the forward calls inside it.
    predictor = predictors["backsplit"]
    timed = _TimedForward(predictor.model)
    predictor.model = timed
    ratios, walls, forwards = [], [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(settings.repeats):
            timed.seconds, timed.calls = 0.0, 0
            start = time.perf_counter()
            predictor.predict_file(image_path, out)
            wall = time.perf_counter() - start
            walls.append(wall)
            forwards.append(timed.seconds)
            ratios.append(wall / timed.seconds)
    predictor.model = timed.model
    params = {m: parameter_count(r) for m, r in runs.items()}
    result = {
        "arch": arch,
        "binary_s": _median(times["binary"]), "backsplit_s": _median(times["backsplit"]),
        "inference_time_ratio": _median(times["backsplit"]) / _median(times["binary"]),
        "binary_peak_rss_gib": memory["binary"]["peak_rss_bytes"] / _GIB,
        "backsplit_peak_rss_gib": memory["backsplit"]["peak_rss_bytes"] / _GIB,
        "binary_predict_rss_gib": (memory["binary"]["peak_rss_bytes"] - memory["binary"]["rss_before_bytes"]) / _GIB,
        "backsplit_predict_rss_gib": (memory["backsplit"]["peak_rss_bytes"] - memory["backsplit"]["rss_before_bytes"]) / _GIB,
        "binary_parameters": params["binary"], "backsplit_parameters": params["backsplit"],
        "parameter_ratio": params["backsplit"] / params["binary"],
        "pipeline_wall_s": _median(walls), "pipeline_forward_s": _median(forwards),
        "pipeline_overhead": _median(ratios), "forward_calls": timed.calls, "repeats": settings.repeats,
    }
    result["memory_ratio"] = result["backsplit_peak_rss_gib"] / result["binary_peak_rss_gib"]
    log(f"  inference {arch}: binary {result['binary_s']:.2f} s, backsplit {result['backsplit_s']:.2f} s "
        f"(x{result['inference_time_ratio']:.3f}); pipeline x{result['pipeline_overhead']:.2f}")
    return result


def _iteration_seconds(dataset: Path, out: Path, settings: CostSettings, arch: str, mode: str) -> list[float]:
    """Per-iteration seconds of the real trainer after the warm-up (no validation: val_fraction 0)."""
    from BackSplitLib.training import TrainConfig, train

    stamps: list[float] = []
    config = TrainConfig(mode=mode, arch=arch, iterations=settings.train_iterations, seed=settings.seed,
                         device=settings.device, patch_size=settings.patch_size, val_fraction=0.0,
                         val_every=settings.train_iterations, log_every=settings.train_iterations)
    train(dataset, out, config, progress=lambda p: stamps.append(p.elapsed_s))
    deltas = np.diff([0.0, *stamps])
    return [float(d) for d in deltas[settings.warmup_iterations:]]


def training_cost(dataset: Path, work: Path, settings: CostSettings, arch: str, log=print) -> dict:
    """Median seconds per training iteration, BackSplit vs binary (interleaved repeats)."""
    seconds: dict[str, list[float]] = {"binary": [], "backsplit": []}
    repeats = max(1, settings.extra.get("train_repeats", 1))
    for r in range(repeats):
        for mode in ("binary", "backsplit"):
            seconds[mode] += _iteration_seconds(dataset, work / f"train_{arch}_{mode}_{r}", settings, arch, mode)
    result = {"arch": arch, "binary_s_per_it": _median(seconds["binary"]),
              "backsplit_s_per_it": _median(seconds["backsplit"]), "iterations_timed": len(seconds["binary"])}
    result["train_time_ratio"] = result["backsplit_s_per_it"] / result["binary_s_per_it"]
    log(f"  training {arch}: binary {result['binary_s_per_it']:.3f} s/it, backsplit "
        f"{result['backsplit_s_per_it']:.3f} s/it (x{result['train_time_ratio']:.3f})")
    return result


def data_pipeline_cost(dataset: Path, settings: CostSettings, real_s_per_it: float, arch: str = "unet",
                       log=print) -> dict:
    """The trainer's step on one pre-loaded batch (same network, loss, optimizer, batch size) vs the real
    per-iteration time measured by :func:`training_cost` (which includes loading and augmentation)."""
    from BackSplitLib.dataset import Dataset
    from BackSplitLib.losses import BackSplitLoss
    from BackSplitLib.planning import plan
    from BackSplitLib.training import TrainConfig
    from BackSplitLib.transforms import training_transforms

    data = Dataset.load(dataset)
    config = TrainConfig(mode="backsplit", arch=arch, patch_size=settings.patch_size, device=settings.device)
    the_plan = plan(data, data.training, config)
    transform = training_transforms(the_plan.preprocessing, the_plan.lookup, the_plan.schema.target_value)
    transform.set_random_state(seed=settings.seed)
    samples = []
    for case in data.training[: config.batch_size]:
        sample = transform({"image": str(case.image), "label": str(case.label)})
        samples.extend(sample if isinstance(sample, list) else [sample])
    images = torch.stack([s["image"] for s in samples[: config.batch_size]])
    labels = torch.stack([s["label"] for s in samples[: config.batch_size]]).long()
    torch.manual_seed(settings.seed)
    params = default_params(arch, the_plan.preprocessing["patch_size"], the_plan.preprocessing["spacing"])
    model = build_network(arch, 1, the_plan.schema.num_classes, **params)
    loss_fn = BackSplitLoss(the_plan.schema.num_classes, ignore_value=the_plan.schema.ignore_value)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    seconds = []
    for i in range(settings.warmup_iterations + settings.train_iterations):
        start = time.perf_counter()
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= settings.warmup_iterations:
            seconds.append(time.perf_counter() - start)
    preloaded = _median(seconds)
    result = {"arch": arch, "preloaded_s_per_it": preloaded, "real_s_per_it": real_s_per_it,
              "preloaded_it_per_s": 1 / preloaded, "real_it_per_s": 1 / real_s_per_it,
              "data_pipeline_ratio": preloaded / real_s_per_it}
    log(f"  data pipeline: real {result['real_it_per_s']:.2f} it/s vs pre-loaded {result['preloaded_it_per_s']:.2f} it/s "
        f"(x{result['data_pipeline_ratio']:.2f})")
    return result


def scale_cost(work: Path, settings: CostSettings, arch: str = "unet", log=print) -> dict:
    """Predict a CT-sized volume with a BackSplit model at the volume's spacing, in a child process."""
    shape = settings.scale_shape
    assert shape is not None
    image, _ = make_phantom(settings.seed, settings.shape)
    # The phantom resampled onto a CT-sized grid covering the same field of view: real anatomy, real size.
    size_xyz = [int(n) for n in shape[::-1]]
    spacing = [fov / n for fov, n in zip(np.asarray(image.GetSize()) * np.asarray(image.GetSpacing()), size_xyz)]
    reference = sitk.Image(size_xyz, sitk.sitkFloat32)
    reference.SetSpacing(spacing)
    reference.SetOrigin([o - s0 / 2 + s / 2 for o, s0, s in zip(image.GetOrigin(), image.GetSpacing(), spacing)])
    big = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "ct_sized_0000.nii"  # uncompressed: pushing 200 MB through zlib would only add minutes
    sitk.WriteImage(big, str(path))
    del big, reference
    run = make_run(work / f"scale_{arch}", arch, PHANTOM_SCHEMA, _preprocessing(spacing, settings.patch_size),
                   settings.seed)
    measured = predict_in_child(run, path, settings.device)
    result = {"arch": arch, "shape_zyx": list(shape), "spacing_xyz": spacing, "classes": PHANTOM_SCHEMA.num_classes,
              "seconds": measured["seconds"], "scale_peak_gib": measured["peak_rss_bytes"] / _GIB,
              "rss_before_gib": measured["rss_before_bytes"] / _GIB}
    log(f"  scale: {shape[2]}x{shape[1]}x{shape[0]} in {result['seconds']:.0f} s, peak RSS "
        f"{result['scale_peak_gib']:.2f} GiB")
    path.unlink(missing_ok=True)
    return result


# ------------------------------------------------------------------------------ everything
def run_cost(out: Path, settings: CostSettings | None = None, log=print) -> dict:
    """Run every measurement, write ``cost.json`` and ``cost.md`` into ``out``, return the results."""
    settings = settings or CostSettings()
    with torch_threads(settings.threads):
        return _run_cost(out, settings, log)


def _run_cost(out: Path, settings: CostSettings, log) -> dict:
    from BackSplitLib.bench.quality import _write_json, machine

    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    started = time.perf_counter()
    results: dict = {"settings": asdict(settings), "machine": machine(), "targets": TARGETS}
    dataset = work / "phantom"
    if not (dataset / "dataset.json").is_file():
        write_phantom_dataset(dataset, cases=3, test_cases=1, seed=settings.seed, shape=settings.shape)
    image_path = next((dataset / "imagesTs").iterdir())

    log("inference (BackSplit vs binary, same body)")
    results["inference"] = [inference_cost(work / "inference", settings, a, image_path, log) for a in settings.archs]
    log("training (real trainer, per-iteration medians)")
    results["training"] = [training_cost(dataset, work / "training", settings, a, log) for a in settings.archs]
    unet = next((t for t in results["training"] if t["arch"] == "unet"), results["training"][0])
    log("data pipeline")
    results["data_pipeline"] = data_pipeline_cost(dataset, settings, unet["backsplit_s_per_it"], unet["arch"], log)
    if settings.scale_shape is not None:
        log("scale (CT-sized volume on the CPU)")
        results["scale"] = scale_cost(work / "scale", settings, log=log)
    results["wall_s"] = time.perf_counter() - started
    _write_json(out / "cost.json", results)
    write_text_atomic(out / "cost.md", "\n".join(cost_markdown(results)) + "\n")
    return results



def cost_rows(results: dict) -> list[tuple[str, str, str]]:
    """(measurement, value, target) rows shared by the rich table and cost.md."""
    rows = []
    for r in results["inference"]:
        rows.append((f"inference time ratio, {r['arch']}",
                     f"{r['backsplit_s']:.2f} s / {r['binary_s']:.2f} s", meets(TARGETS, "inference_time_ratio", r["inference_time_ratio"])))
        rows.append((f"peak memory ratio, {r['arch']}",
                     f"{r['backsplit_peak_rss_gib']:.2f} / {r['binary_peak_rss_gib']:.2f} GiB RSS", f"{r['memory_ratio']:.3f}"))
        rows.append((f"parameter ratio, {r['arch']}", f"{r['backsplit_parameters']:,} / {r['binary_parameters']:,}",
                     f"{r['parameter_ratio']:.5f}"))
        rows.append((f"predict pipeline vs bare forward, {r['arch']}",
                     f"{r['pipeline_wall_s']:.2f} s / {r['pipeline_forward_s']:.2f} s ({r['forward_calls']} forward calls)",
                     meets(TARGETS, "pipeline_overhead", r["pipeline_overhead"])))
    for r in results["training"]:
        rows.append((f"training s/iteration, {r['arch']}",
                     f"{r['backsplit_s_per_it']:.3f} / {r['binary_s_per_it']:.3f} s", meets(TARGETS, "train_time_ratio", r["train_time_ratio"])))
    d = results["data_pipeline"]
    rows.append(("data pipeline: real vs pre-loaded it/s", f"{d['real_it_per_s']:.2f} / {d['preloaded_it_per_s']:.2f}",
                 meets(TARGETS, "data_pipeline_ratio", d["data_pipeline_ratio"])))
    if "scale" in results:
        s = results["scale"]
        z, y, x = s["shape_zyx"]
        rows.append((f"{x}x{y}x{z} volume on CPU ({s['classes']} classes)", f"{s['seconds']:.0f} s",
                     f"peak RSS {meets(TARGETS, 'scale_peak_gib', s['scale_peak_gib'])} GiB"))
    return rows


def cost_markdown(results: dict) -> list[str]:
    m = results["machine"]
    lines = ["# BackSplit benchmark: cost", "",
             f"Machine: {m['processor']}, {m['cpu_count']} CPUs{', ' + m['cuda'] if m.get('cuda') else ' (no GPU)'}, "
             f"torch {m['torch']} with {m['torch_threads']} threads, load average at start {m.get('load_average_at_start')}. "
             f"Medians of {results['settings']['repeats']} repeats (training: per-iteration medians). "
             f"Wall time {results['wall_s'] / 60:.1f} min.", "",
             "| measurement | BackSplit / binary (or value) | ratio (target) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in cost_rows(results)]
    return lines


def settings_with(**overrides) -> CostSettings:
    return replace(CostSettings(), **{k: v for k, v in overrides.items() if v is not None})
