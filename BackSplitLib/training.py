"""One trainer for binary, BackSplit and fine-tuning from any run.

``train(dataset, out, config)`` plans the preprocessing from the data (or takes the base run's when
fine-tuning), builds the network, and runs an iteration budget with AdamW and a cosine or poly schedule,
validating every ``val_every`` iterations on lesion Dice. Best and last checkpoints are written
atomically; ``resume=True`` continues a killed run exactly: every iteration draws its randomness from
``(seed, rank, iteration)``, so a resumed run sees the same batches and augmentations as an
uninterrupted one. Works on CPU and CUDA (AMP, optional ``torch.compile``) and under ``torchrun`` (DDP).
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.distributed as dist

from BackSplitLib import __version__
from BackSplitLib import runs as runfiles
from BackSplitLib.dataset import CaseFiles, Dataset
from BackSplitLib.devices import resolve_device
from BackSplitLib.errors import DatasetError, RunError, TrainingCancelled
from BackSplitLib.io import check_same_geometry, read_image, resample_like
from BackSplitLib.schema import BACKGROUND, LabelSchema
from BackSplitLib.vocabulary import PARTIAL_LABEL_MODES as PARTIAL_MODES
from BackSplitLib.vocabulary import TRAINING_MODES as MODES
SCHEDULES = ("cosine", "poly")
# "target+auxiliary": the lesion's Dice loss plus the mean auxiliary Dice loss (the lesion keeps the weight
# it has in a binary model); "mean": MONAI's plain mean over classes (the lesion gets 1/K of the Dice term).
DICE_MODES = ("target+auxiliary", "mean")
DEFAULT_PATCH = 64
MAX_PATCH_VOXELS_CPU = 64**3


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in model.json."""

    mode: str = "backsplit"
    arch: str = "unet"
    arch_params: dict | None = None
    iterations: int = 500
    batch_size: int = 2
    patch_size: tuple[int, int, int] | None = None
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    schedule: str = "cosine"
    warmup_iterations: int | None = None
    val_every: int | None = None
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    partial: str = "marginal"
    dice: str = "target+auxiliary"
    auxiliary_weight: float = 1.0
    lesion_fraction: float = 0.5
    augment: bool = True
    resample_labels: bool = False
    log_every: int = 10
    checkpoint_every_s: float = 300.0
    cache_workers: int = 0

    def validate(self) -> None:
        if self.mode not in MODES:
            raise DatasetError(f"unknown mode '{self.mode}'", f"use one of {', '.join(MODES)}")
        if self.partial not in PARTIAL_MODES:
            raise DatasetError(f"unknown partial-label handling '{self.partial}'", f"use one of {', '.join(PARTIAL_MODES)}")
        if self.dice not in DICE_MODES:
            raise DatasetError(f"unknown Dice weighting '{self.dice}'", f"use one of {', '.join(DICE_MODES)}")
        if self.schedule not in SCHEDULES:
            raise DatasetError(f"unknown schedule '{self.schedule}'", f"use one of {', '.join(SCHEDULES)}")
        if self.iterations < 1 or self.batch_size < 1:
            raise DatasetError("iterations and batch size must be at least 1")
        if not 0 <= self.lesion_fraction <= 1:
            raise DatasetError("lesion_fraction must be between 0 and 1")
        if self.patch_size is not None:
            from BackSplitLib.networks import check_patch_size

            check_patch_size(self.patch_size, self.arch, self.arch_params)

    @property
    def effective_val_every(self) -> int:
        return self.val_every or max(10, self.iterations // 10)


@dataclass
class Progress:
    """What a progress callback receives after every iteration."""

    iteration: int
    total_iterations: int
    loss: float
    val_dice: float | None = None
    best_val_dice: float | None = None
    eta_s: float | None = None
    elapsed_s: float = 0.0
    phase: str = "train"


@dataclass
class _Plan:
    schema: LabelSchema
    lookup: np.ndarray | None
    preprocessing: dict
    labelled: dict[str, np.ndarray] = field(default_factory=dict)


# ------------------------------------------------------------------ devices and DDP
def _distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


# ------------------------------------------------------------------ planning
def training_schema(dataset: Dataset, mode: str, base: runfiles.RunInfo | None) -> LabelSchema:
    """The schema the network is trained with: the dataset's (binary: coarsened), unioned by class name
    with the base run's when fine-tuning (its classes keep their channels)."""
    schema = dataset.schema.binary() if mode == "binary" else dataset.schema
    if base is not None:
        schema = base.schema.union(schema)
    return schema


def plan(dataset: Dataset, cases: list[CaseFiles], config: TrainConfig,
         base: runfiles.RunInfo | None = None) -> _Plan:
    """Check every case (readable, 3D, finite, geometry, label values) and derive the preprocessing:
    the dataset's median spacing, CT clip/mean/std from foreground voxels, and the patch size."""
    schema = training_schema(dataset, config.mode, base)
    source_schema = dataset.schema
    lookup = None
    if config.mode == "binary":
        lookup = np.zeros(max(source_schema.labels.values()) + 1, dtype=np.int64)
        lookup[source_schema.target_value] = schema.target_value
        if source_schema.ignore_value is not None:
            lookup[source_schema.ignore_value] = schema.ignore_value
    elif schema.labels != source_schema.labels:
        lookup = schema.lookup_from(source_schema)

    spacings, shapes, samples, lesion_cases = [], [], [], 0
    rng = np.random.default_rng(0)
    for case in cases:
        image = read_image(case.image, "image")
        label = read_image(case.label, "label")
        if config.resample_labels:
            label = resample_like(label, image)  # the statistics below need voxel-aligned labels
        else:
            check_same_geometry(image, label, f"image {case.image}", f"label {case.label}")
        label_array = sitk.GetArrayViewFromImage(label)
        source_schema.check_label_values(label_array, str(case.label))
        lesion_cases += bool(np.any(label_array == source_schema.target_value))
        spacing, shape = _ras_spacing_and_shape(image)
        spacings.append(spacing)
        shapes.append(shape)
        foreground = label_array > 0
        if source_schema.ignore_value is not None:
            foreground &= label_array != source_schema.ignore_value
        values = sitk.GetArrayViewFromImage(image)[foreground]
        if values.size:
            samples.append(rng.choice(values, size=min(values.size, 20000), replace=False))
    if lesion_cases == 0:
        raise DatasetError(f"no training case in {dataset.root} contains the target '{source_schema.target}'",
                           "check dataset.json 'target' and the label values")

    if base is not None:
        preprocessing = dict(base.preprocessing)
    else:
        spacing = np.median(np.asarray(spacings), axis=0)
        median_shape = np.median(np.asarray(shapes) * np.asarray(spacings) / spacing, axis=0)
        preprocessing = {
            "orientation": "RAS",
            "spacing": [float(s) for s in spacing],
            "normalization": _normalization(dataset.normalization, samples),
            "patch_size": list(config.patch_size or _patch_size(median_shape, config)),
        }

    labelled = {}
    for case in cases:
        names = set(schema.class_names) if config.mode == "binary" else set(case.labelled) & set(schema.class_names)
        names |= {BACKGROUND, schema.target}
        labelled[case.name] = np.array([n in names for n in schema.class_names])
    return _Plan(schema, lookup, preprocessing, labelled)


def _ras_spacing_and_shape(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Spacing and size along R, A, S after reorientation (each image axis goes to its closest world axis)."""
    direction = np.abs(np.asarray(image.GetDirection()).reshape(3, 3))
    order = np.argmax(direction, axis=0)  # world axis of each image axis
    spacing, shape = np.zeros(3), np.zeros(3)
    spacing[order] = image.GetSpacing()
    shape[order] = image.GetSize()
    return spacing, shape


def _normalization(scheme: str, samples: list[np.ndarray]) -> dict:
    if scheme != "CT":
        return {"scheme": "zscore"}
    values = np.concatenate(samples).astype(np.float64) if samples else np.zeros(1)
    lo, hi = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(values, lo, hi)
    return {"scheme": "CT", "clip": [float(lo), float(hi)], "mean": float(clipped.mean()),
            "std": float(max(clipped.std(), 1e-3))}


def _patch_size(median_shape: np.ndarray, config: TrainConfig) -> tuple[int, int, int]:
    from BackSplitLib.networks import default_params, patch_divisor

    divisor = patch_divisor(config.arch, config.arch_params or default_params(config.arch))
    patch = []
    for extent in median_shape:
        size = min(DEFAULT_PATCH, int(extent) // divisor * divisor)
        patch.append(max(divisor, size))
    return tuple(patch)


# ------------------------------------------------------------------ schedule
def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    warmup = config.warmup_iterations if config.warmup_iterations is not None else min(50, config.iterations // 10)
    total = config.iterations

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if config.schedule == "poly":
            return (1 - min(progress, 1.0)) ** 0.9
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks instead of returning them to the system after every step.

    Training allocates and frees the same activation-sized blocks (tens of MB) every iteration; with
    glibc's defaults each one is a fresh mmap, and the page faults showed up as ~30 % system time on
    CPU (measured: 3.65 -> 2.78 s per UNet step). The same effect as setting MALLOC_MMAP_THRESHOLD_ /
    MALLOC_TRIM_THRESHOLD_ (or using jemalloc, as PyTorch's performance guide suggests), applied to this
    process only; a no-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # another C library (musl): leave it alone
        pass


def _iteration_seed(seed: int, rank: int, iteration: int) -> int:
    return int(np.random.SeedSequence([seed, rank, iteration]).generate_state(1)[0])


# ------------------------------------------------------------------ validation
@torch.no_grad()
def validate(model: torch.nn.Module, items: list[dict], schema: LabelSchema, patch_size, device,
             amp: bool) -> float:
    """Mean lesion Dice on preprocessed validation cases (empty truth and prediction count as 1)."""
    from BackSplitLib.inference import sliding_window_target_probability

    model.eval()
    scores = []
    for item in items:
        prob = sliding_window_target_probability(model, item["image"][None].to(device), schema, patch_size, amp)
        pred = prob[0, 0] >= 0.5
        truth = item["label"][0].to(device) == schema.target_value
        if schema.ignore_value is not None:
            keep = item["label"][0].to(device) != schema.ignore_value
            pred, truth = pred & keep, truth & keep
        denominator = pred.sum() + truth.sum()
        scores.append(1.0 if denominator == 0 else float(2 * (pred & truth).sum() / denominator))
    model.train()
    return float(np.mean(scores)) if scores else float("nan")


# ------------------------------------------------------------------ the trainer
def train(
    dataset: str | Path | Dataset,
    out: str | Path,
    config: TrainConfig,
    base_run: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Train (or fine-tune from ``base_run``) and return the run folder. See the module docstring."""
    from monai.data import CacheDataset

    from BackSplitLib.losses import BackSplitLoss
    from BackSplitLib.networks import adapt_head, build_network, default_params
    from BackSplitLib.transforms import training_transforms, validation_transforms

    config = replace(config)  # the caller's config stays as given
    config.validate()
    keep_freed_memory()
    out = Path(out)
    dataset = dataset if isinstance(dataset, Dataset) else Dataset.load(dataset)
    base = runfiles.load_run(base_run) if base_run is not None else None
    if base is not None:
        config.arch, config.arch_params = base.arch, base.arch_params

    state = None
    if resume and (out / runfiles.LAST_STATE).is_file():
        previous = runfiles.load_run(out)
        state = runfiles.load_state(out / runfiles.LAST_STATE)
    elif (out / runfiles.MODEL_JSON).exists():
        raise RunError(f"{out} already holds a run", "pass --resume to continue it, or choose another --out")

    rank, local_rank, world = _distributed()
    device = resolve_device(config.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device(f"cuda:{local_rank}")
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0

    train_cases, val_cases = dataset.split(config.val_fraction, config.seed)
    the_plan = plan(dataset, dataset.training, config, base)
    schema, preprocessing = the_plan.schema, the_plan.preprocessing
    if not config.arch_params:  # dynunet's depth and kernels follow the planned patch size and spacing
        config.arch_params = default_params(config.arch, preprocessing["patch_size"], preprocessing["spacing"])
    if state is not None and previous.schema.labels != schema.labels:
        raise RunError(f"{out} was trained with classes {previous.schema.describe_classes()}, the dataset now gives "
                       f"{schema.describe_classes()}", "resume with the same dataset, or start a new run")

    torch.manual_seed(config.seed)  # the same seed gives the same initial weights (binary vs BackSplit too)
    model = build_network(config.arch, 1, schema.num_classes, **config.arch_params)
    if base is not None:
        base_model = runfiles.build_model(base, "best")
        model.load_state_dict(adapt_head(base_model, base.schema, schema).state_dict())
    if state is not None:
        runfiles.load_weights(model, out / runfiles.LAST_WEIGHTS)
    model.to(device)

    transform = training_transforms(preprocessing, the_plan.lookup, schema.target_value,
                                    config.lesion_fraction, config.augment, config.resample_labels)
    records = [{"image": str(c.image), "label": str(c.label), "case": c.name,
                "labelled": torch.as_tensor(the_plan.labelled[c.name])} for c in train_cases]
    train_data = CacheDataset(records, transform, num_workers=config.cache_workers, progress=False)
    val_items = []
    if is_main and val_cases:
        val_data = CacheDataset([{"image": str(c.image), "label": str(c.label)} for c in val_cases],
                                validation_transforms(preprocessing, the_plan.lookup, config.resample_labels),
                                num_workers=config.cache_workers, progress=False)
        val_items = [val_data[i] for i in range(len(val_data))]

    loss_fn = BackSplitLoss(schema.num_classes, ignore_value=schema.ignore_value, partial=config.partial,
                            target_value=schema.target_value if config.dice == "target+auxiliary" else None,
                            auxiliary_weight=config.auxiliary_weight)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    use_amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    start, best, history, train_seconds = 0, -1.0, [], 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        start, best = int(state["iteration"]), float(state["best_val_dice"])
        history, train_seconds = list(previous.meta.get("history", [])), float(state.get("train_seconds", 0.0))
        torch.set_rng_state(state["torch_rng"])

    network = model
    if world > 1:
        network = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile and device.type == "cuda":
        network = torch.compile(network)

    meta = {
        "backsplit_version": __version__,
        "schema": schema.to_dict(),
        "arch": {"name": config.arch, "params": config.arch_params},
        "preprocessing": preprocessing,
        "training": {**asdict(config), "dataset": str(dataset.root), "base_run": str(base_run) if base_run else None,
                     "train_cases": [c.name for c in train_cases], "val_cases": [c.name for c in val_cases],
                     "world_size": world, "device": str(device)},
    }

    def checkpoint(iteration: int, improved: bool) -> None:
        if not is_main:
            return
        out.mkdir(parents=True, exist_ok=True)
        if improved or not val_items:
            runfiles.save_weights(model, out / runfiles.BEST_WEIGHTS)
        runfiles.save_weights(model, out / runfiles.LAST_WEIGHTS)
        runfiles.save_state({
            "iteration": iteration, "best_val_dice": best, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(), "train_seconds": train_seconds,
            **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
        }, out / runfiles.LAST_STATE)
        done = iteration - start
        runfiles.write_model_json(out, {
            **meta, "iteration": iteration, "history": history,
            "best_val_dice": best if val_items else None,
            "train_s_per_iteration": train_seconds / max(1, iteration) if done else None,
        })

    val_every = config.effective_val_every
    model.train()
    tic = last_checkpoint = time.perf_counter()
    last_val = None
    def make_batch(iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch of ``iteration``: its randomness comes from (seed, rank, iteration) alone."""
        seed = _iteration_seed(config.seed, rank, iteration)
        transform.set_random_state(seed=seed % (2**32))
        picks = np.random.default_rng(seed).integers(0, len(train_data), size=config.batch_size)
        samples = [s for i in picks for s in _as_list(train_data[int(i)])]
        # ``labelled`` stays on the CPU: the loss reads it without a device sync.
        return (torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples]),
                torch.stack([s["labelled"] for s in samples]))

    # One thread prepares the next batch while the network trains on this one (the order of batches
    # and their augmentations does not depend on timing, so resume stays exact).
    prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backsplit-batches")
    upcoming = prefetcher.submit(make_batch, start)
    try:
        for iteration in range(start, config.iterations):
            if should_stop is not None and should_stop():
                checkpoint(iteration, False)
                raise TrainingCancelled(f"training stopped at iteration {iteration}")
            step_start = time.perf_counter()
            images, labels, labelled = upcoming.result()
            if iteration + 1 < config.iterations:
                upcoming = prefetcher.submit(make_batch, iteration + 1)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True).long()
            torch.manual_seed(_iteration_seed(config.seed, rank, iteration))

            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = network(images)
            loss = loss_fn(logits.float(), labels, labelled)
            if not torch.isfinite(loss):
                raise RunError(f"the loss became {loss.item()} at iteration {iteration}",
                               "lower the learning rate or check the images for extreme values")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            train_seconds += time.perf_counter() - step_start

            done = iteration + 1
            record = None
            if done % config.log_every == 0 or done == config.iterations:
                record = {"iteration": done, "loss": float(loss.item()), "lr": scheduler.get_last_lr()[0],
                          "time_s": round(time.perf_counter() - tic, 3)}
            validating = done % val_every == 0 or done == config.iterations
            improved = False
            if validating and val_items:
                last_val = validate(model, val_items, schema, preprocessing["patch_size"], device, use_amp)
                improved = last_val > best
                best = max(best, last_val)
                record = {**(record or {"iteration": done, "loss": float(loss.item())}), "val_dice": last_val}
            if record is not None:
                if validating:
                    history.append(record)
                if is_main:
                    out.mkdir(parents=True, exist_ok=True)
                    runfiles.append_log(out, record)
            # Between validations, a time-based checkpoint: a kill loses minutes, not a tenth of the run.
            if validating or time.perf_counter() - last_checkpoint > config.checkpoint_every_s:
                checkpoint(done, improved)
                last_checkpoint = time.perf_counter()
            if progress is not None:
                elapsed = time.perf_counter() - tic
                eta = elapsed / (done - start) * (config.iterations - done)
                progress(Progress(done, config.iterations, float(loss.item()), last_val, best if best >= 0 else None,
                                  eta, elapsed))
    finally:
        prefetcher.shutdown(wait=True, cancel_futures=True)

    if world > 1:
        _check_replicas(model, meta, out if is_main else None)
        dist.barrier()
        dist.destroy_process_group()
    return out


def _as_list(sample) -> list[dict]:
    return sample if isinstance(sample, list) else [sample]


def _check_replicas(model: torch.nn.Module, meta: dict, out: Path | None) -> None:
    """After DDP training every replica must hold the same weights; record that in model.json."""
    checksum = torch.stack([p.detach().double().sum().cpu() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    in_sync = bool(all(torch.allclose(g, gathered[0], rtol=0, atol=1e-6) for g in gathered))
    if out is not None:
        info = runfiles.load_run(out).meta
        info["training"]["ddp_replicas_in_sync"] = in_sync
        info.pop("format_version", None)
        runfiles.write_model_json(out, info)
