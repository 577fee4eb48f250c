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
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from BackSplitLib import __version__
from BackSplitLib import runs as runfiles
from BackSplitLib.auxiliary_share import lesion_found_in_batch, next_share, share_step
from BackSplitLib.dataset import Dataset
from BackSplitLib.devices import resolve_device
from BackSplitLib.errors import DatasetError, RunError, TrainingCancelled
from BackSplitLib.lesion_watch import LesionWatch
from BackSplitLib.planning import plan
from BackSplitLib.schema import LabelSchema
from BackSplitLib.vocabulary import (DEFAULT_AUXILIARY_WEIGHT, DEFAULT_BATCH_SIZE, DEFAULT_FINETUNE_ITERATIONS,
                                     DEFAULT_HEAD_PRIOR, DEFAULT_ITERATIONS, DEFAULT_LEARNING_RATE,
                                     DEFAULT_VAL_FRACTION, UNIFORM_HEAD_PRIOR)
from BackSplitLib.vocabulary import PARTIAL_LABEL_MODES as PARTIAL_MODES
from BackSplitLib.vocabulary import TRAINING_MODES as MODES
SCHEDULES = ("cosine", "poly")
# "target+auxiliary": the lesion's Dice loss plus the mean auxiliary Dice loss (the lesion keeps the weight
# it has in a binary model); "mean": MONAI's plain mean over classes (the lesion gets 1/K of the Dice term);
# "ce": cross-entropy only, no Dice term.
DICE_MODES = ("target+auxiliary", "mean", "ce")


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in model.json."""

    mode: str = "backsplit"
    arch: str = "unet"
    arch_params: dict | None = None
    iterations: int = DEFAULT_ITERATIONS
    batch_size: int = DEFAULT_BATCH_SIZE
    patch_size: tuple[int, int, int] | None = None
    learning_rate: float = DEFAULT_LEARNING_RATE
    weight_decay: float = 1e-5
    schedule: str = "cosine"
    warmup_iterations: int | None = None
    val_every: int | None = None
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    partial: str = "marginal"
    dice: str = "target+auxiliary"
    auxiliary_weight: float = DEFAULT_AUXILIARY_WEIGHT
    lesion_fraction: float = 0.5
    # the head's initial target probability (focal-loss initialisation, networks.init_head_prior): "uniform"
    # (1/K of the dataset's K classes, both modes), a number, or None for PyTorch's initialisation. Not applied
    # when fine-tuning (the base model's head is kept).
    head_prior: float | str | None = DEFAULT_HEAD_PRIOR
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
        check_head_prior(self.head_prior)
        if self.patch_size is not None:
            from BackSplitLib.networks import check_patch_size

            check_patch_size(self.patch_size, self.arch, self.arch_params)

    @property
    def effective_val_every(self) -> int:
        return self.val_every or max(10, self.iterations // 10)


def check_head_prior(value) -> None:
    """A ``TrainConfig.head_prior`` is "uniform", None (PyTorch's initialisation) or a probability in (0, 1)."""
    if value is None or value == UNIFORM_HEAD_PRIOR:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DatasetError(f"head_prior must be '{UNIFORM_HEAD_PRIOR}', none or a probability between 0 and 1 "
                           f"(exclusive), got {value!r}")


# The one fine-tune recipe, used by the CLI's ``finetune``, the server's fine-tune jobs and the panel: the
# model is already good, so a lower peak learning rate and no warm-up (a warm-up would first move the
# adapted head away from the base model's predictions); everything else as when training from scratch.
FINETUNE_RECIPE = {"learning_rate": 1e-3, "warmup_iterations": 0, "iterations": DEFAULT_FINETUNE_ITERATIONS}


def finetune_config(**settings) -> TrainConfig:
    """The TrainConfig of a fine-tune: :data:`FINETUNE_RECIPE` over TrainConfig's defaults, then
    ``settings`` (any TrainConfig field; None means "the recipe's value")."""
    given = {name: value for name, value in settings.items() if value is not None}
    return TrainConfig(**{**FINETUNE_RECIPE, **given})


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
    warning: str | None = None  # set once, at the validation where the lesion should have started and has not


class LesionNotStartedWarning(UserWarning):
    """The lesion channel predicts no lesion voxel on validation by the time it should (``lesion_watch``)."""


# ------------------------------------------------------------------ devices and DDP
def _distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


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
             amp: bool) -> tuple[float, int, int]:
    """Mean lesion Dice on preprocessed validation cases (empty truth and prediction count as 1), and the
    predicted and true lesion voxels over all of them (``lesion_watch``: has the lesion channel started?)."""
    from BackSplitLib.inference import sliding_window_target_probability

    model.eval()
    scores, predicted, true = [], 0, 0
    for item in items:
        prob = sliding_window_target_probability(model, item["image"][None].to(device), schema, patch_size, amp)
        pred = prob[0, 0] >= 0.5
        truth = item["label"][0].to(device) == schema.target_value
        if schema.ignore_value is not None:
            keep = item["label"][0].to(device) != schema.ignore_value
            pred, truth = pred & keep, truth & keep
        denominator = pred.sum() + truth.sum()
        scores.append(1.0 if denominator == 0 else float(2 * (pred & truth).sum() / denominator))
        predicted, true = predicted + int(pred.sum()), true + int(truth.sum())
    model.train()
    return (float(np.mean(scores)) if scores else float("nan")), predicted, true


# ------------------------------------------------------------------ the trainer
class Trainer:
    """One training run in named steps, in the spirit of nnU-Net's trainer hooks.

    ``setup`` reads the data and builds everything; ``resume`` restores a killed run; ``step`` trains one
    iteration; ``validate`` scores the validation cases; ``checkpoint`` writes the run folder. Mixed
    precision lives in ``_setup_precision``/``_forward``/``_backward``, multi-process training in
    ``_setup_distributed``/``_wrap_network``/``_finish_distributed``, resuming in ``_previous_run``/
    ``resume``. ``run`` chains them; ``train(...)`` is ``Trainer(...).run()``.
    """

    def __init__(self, dataset: str | Path | Dataset, out: str | Path, config: TrainConfig,
                 base_run: str | Path | None = None, resume: bool = False,
                 progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.config = replace(config)  # the caller's config stays as given
        self.config.validate()
        self.out = Path(out)
        self.dataset = dataset if isinstance(dataset, Dataset) else Dataset.load(dataset)
        self.base_run = base_run
        self.base = runfiles.load_run(base_run) if base_run is not None else None
        self.wants_resume = resume
        self.progress = progress
        self.should_stop = should_stop
        self.start, self.best, self.history, self.train_seconds = 0, -1.0, [], 0.0
        self.last_val: float | None = None
        self.watch = LesionWatch(self.config.iterations)
        # the iteration after the first training batch whose hard lesion Dice reached AUXILIARY_START_DICE (both
        # modes; BackSplit's auxiliary terms switch on there)
        self.lesion_from_batch: int | None = None
        # the auxiliary terms' current share of auxiliary_weight (0 until the switch; see AUXILIARY_BACK_OFF)
        self.auxiliary_share = 0.0

    # -------------------------------------------------------------- setup
    def setup(self) -> None:
        """Plan, build the network, the data, the loss and the optimizer (restoring a run to resume)."""
        from monai.data import CacheDataset

        from BackSplitLib.losses import BackSplitLoss
        from BackSplitLib.networks import adapt_head, build_network, default_params, init_head_prior
        from BackSplitLib.transforms import training_transforms, validation_transforms

        config, dataset, base = self.config, self.dataset, self.base
        keep_freed_memory()
        if base is not None:
            config.arch, config.arch_params = base.arch, base.arch_params
        self.previous, self.state = self._previous_run()
        self._setup_distributed()

        self.train_cases, self.val_cases = dataset.split(config.val_fraction, config.seed)
        self.plan = plan(dataset, dataset.training, config, base)
        self.schema, self.preprocessing = self.plan.schema, self.plan.preprocessing
        if not config.arch_params:  # dynunet's depth and kernels follow the planned patch size and spacing
            config.arch_params = default_params(config.arch, self.preprocessing["patch_size"],
                                                self.preprocessing["spacing"])
        if self.state is not None and self.previous.schema.labels != self.schema.labels:
            raise RunError(f"{self.out} was trained with classes {self.previous.schema.describe_classes()}, the "
                           f"dataset now gives {self.schema.describe_classes()}",
                           "resume with the same dataset, or start a new run")

        torch.manual_seed(config.seed)  # the same seed gives the same initial weights (binary vs BackSplit too)
        starts_binary = base is None and config.head_prior is not None and self.schema.num_classes > 2
        # BackSplit from scratch starts as the binary model of the same seed (see AUXILIARY_START_DICE)
        head_schema = self.schema.binary() if starts_binary else self.schema
        self.model = build_network(config.arch, 1, head_schema.num_classes, **config.arch_params)
        if base is not None:
            base_model = runfiles.build_model(base, "best")
            self.model.load_state_dict(adapt_head(base_model, base.schema, self.schema).state_dict())
        elif config.head_prior is not None:
            prior = (1.0 / dataset.schema.num_classes if config.head_prior == UNIFORM_HEAD_PRIOR
                     else config.head_prior)
            init_head_prior(self.model, head_schema, prior)
            if starts_binary:
                adapt_head(self.model, head_schema, self.schema)
        self.model.to(self.device)

        self.transform = training_transforms(self.preprocessing, self.plan.lookup, self.schema.target_value,
                                             config.lesion_fraction, config.augment, config.resample_labels)
        records = [{"image": str(c.image), "label": str(c.label), "case": c.name,
                    "labelled": torch.as_tensor(self.plan.labelled[c.name])} for c in self.train_cases]
        self.train_data = CacheDataset(records, self.transform, num_workers=config.cache_workers, progress=False)
        self.val_items = []
        if self.is_main and self.val_cases:
            val_data = CacheDataset([{"image": str(c.image), "label": str(c.label)} for c in self.val_cases],
                                    validation_transforms(self.preprocessing, self.plan.lookup,
                                                          config.resample_labels),
                                    num_workers=config.cache_workers, progress=False)
            self.val_items = [val_data[i] for i in range(len(val_data))]

        schema = self.schema
        self.loss_fn = BackSplitLoss(schema.num_classes, ignore_value=schema.ignore_value, partial=config.partial,
                                     target_value=schema.target_value, plain_dice_mean=config.dice == "mean",
                                     auxiliary_weight=config.auxiliary_weight,
                                     lambda_dice=0.0 if config.dice == "ce" else 1.0)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(config))
        self._setup_precision()
        if self.state is not None:
            self.resume()
        self.network = self._wrap_network(self.model)
        self.meta = {
            "backsplit_version": __version__,
            "schema": schema.to_dict(),
            "arch": {"name": config.arch, "params": config.arch_params},
            "preprocessing": self.preprocessing,
            "training": {**asdict(config), "dataset": str(dataset.root),
                         "base_run": str(self.base_run) if self.base_run else None,
                         "train_cases": [c.name for c in self.train_cases],
                         "val_cases": [c.name for c in self.val_cases],
                         "world_size": self.world, "device": str(self.device)},
        }

    # -------------------------------------------------------------- resume
    def _previous_run(self) -> tuple[runfiles.RunInfo | None, dict | None]:
        """The run in ``out`` and its training state when resuming; refuses to overwrite a run otherwise."""
        if self.wants_resume and (self.out / runfiles.LAST_STATE).is_file():
            return runfiles.load_run(self.out), runfiles.load_state(self.out / runfiles.LAST_STATE)
        if (self.out / runfiles.MODEL_JSON).exists():
            raise RunError(f"{self.out} already holds a run", "pass --resume to continue it, or choose another --out")
        return None, None

    def resume(self) -> None:
        """Continue exactly where the last checkpoint left off: weights, optimizer, schedule, scaler,
        counters and the torch random state (batches come from (seed, rank, iteration) anyway)."""
        state = self.state
        # The state file is the commit point: it carries the weights of its own iteration, so a kill
        # between writing last.safetensors and the state never resumes from weights one step ahead.
        if "model" in state:
            self.model.load_state_dict(state["model"])
        else:
            runfiles.load_weights(self.model, self.out / runfiles.LAST_WEIGHTS)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.start, self.best = int(state["iteration"]), float(state["best_val_dice"])
        self.lesion_from_batch = state.get("lesion_from_batch")
        self.auxiliary_share = float(state.get("auxiliary_share", 0.0))
        self.history = list(self.previous.meta.get("history", []))
        self.watch = LesionWatch.from_history(self.config.iterations, self.history)
        self.train_seconds = float(state.get("train_seconds", 0.0))
        torch.set_rng_state(state["torch_rng"])

    # -------------------------------------------------------------- devices: DDP and AMP
    def _setup_distributed(self) -> None:
        self.rank, local_rank, self.world = _distributed()
        self.device = resolve_device(self.config.device)
        if self.world > 1:
            if self.device.type == "cuda":
                self.device = torch.device(f"cuda:{local_rank}")
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.is_main = self.rank == 0

    def _wrap_network(self, model: torch.nn.Module) -> torch.nn.Module:
        network = model
        if self.world > 1:
            network = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.config.compile and self.device.type == "cuda":
            network = torch.compile(network)
        return network

    def _finish_distributed(self) -> None:
        if self.world > 1:
            _check_replicas(self.model, self.meta, self.out if self.is_main else None)
            dist.barrier()
            dist.destroy_process_group()

    def _setup_precision(self) -> None:
        """AMP on CUDA only: bfloat16 where supported (no scaler needed), else float16 with a GradScaler."""
        self.use_amp = self.config.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            return self.network(images)

    def _backward(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    # -------------------------------------------------------------- one iteration
    def make_batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch of ``iteration``: its randomness comes from (seed, rank, iteration) alone."""
        seed = _iteration_seed(self.config.seed, self.rank, iteration)
        self.transform.set_random_state(seed=seed % (2**32))
        picks = np.random.default_rng(seed).integers(0, len(self.train_data), size=self.config.batch_size)
        samples = [s for i in picks for s in _as_list(self.train_data[int(i)])]
        # ``labelled`` stays on the CPU: the loss reads it without a device sync.
        return (torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples]),
                torch.stack([s["labelled"] for s in samples]))

    def step(self, iteration: int, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One optimisation step on ``batch``; returns the loss."""
        images, labels, labelled = batch
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True).long()
        torch.manual_seed(_iteration_seed(self.config.seed, self.rank, iteration))
        logits = self._forward(images)
        self.loss_fn.auxiliary_weight = self.config.auxiliary_weight * self.auxiliary_share
        loss = self.loss_fn(logits.float(), labels, labelled)
        if not torch.isfinite(loss):
            raise RunError(f"the loss became {loss.item()} at iteration {iteration}",
                           "lower the learning rate or check the images for extreme values")
        self.observe_lesion(iteration, logits, labels)
        self._backward(loss)
        return loss

    def observe_lesion(self, iteration: int, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """After the batch of ``iteration``: switch the auxiliary terms on when the lesion is first found, then
        move their share with the lesion (``auxiliary_share.next_share``). Under DDP the replicas agree: any
        replica switches the terms on, the most cautious one moves the share."""
        step = share_step(lesion_found_in_batch(logits, labels, self.schema.target_value))
        if self.world > 1:
            flag = torch.tensor([step], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX if self.lesion_from_batch is None else dist.ReduceOp.MIN)
            step = float(flag.item())
        if self.lesion_from_batch is None:
            if step <= 0:
                return
            self.lesion_from_batch = iteration + 1
        self.auxiliary_share = next_share(self.auxiliary_share, step, self.config.iterations)

    # -------------------------------------------------------------- validation and checkpoints
    def validate(self, iteration: int) -> dict:
        """Score the validation cases; the record's lesion voxels feed the lesion watch, whose warning (the
        lesion has not started by the time it should have) goes into the record, the log and the progress."""
        dice, predicted, true = validate(self.model, self.val_items, self.schema, self.preprocessing["patch_size"],
                                         self.device, self.use_amp)
        record = {"val_dice": dice, "val_lesion_voxels": predicted, "val_truth_voxels": true}
        warning = self.watch.observe(iteration, predicted, true)
        if warning is not None:
            warnings.warn(warning, LesionNotStartedWarning, stacklevel=2)
            record["warning"] = warning
        return record

    def checkpoint(self, iteration: int, improved: bool) -> None:
        """Best and last weights, the training state and model.json, each written atomically (rank 0)."""
        if not self.is_main:
            return
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        if improved or not self.val_items:
            runfiles.save_weights(self.model, out / runfiles.BEST_WEIGHTS)
        runfiles.save_weights(self.model, out / runfiles.LAST_WEIGHTS)
        runfiles.save_state({
            "iteration": iteration, "model": self.model.state_dict(), "best_val_dice": self.best,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
            "train_seconds": self.train_seconds, "lesion_from_batch": self.lesion_from_batch,
            "auxiliary_share": self.auxiliary_share,
            **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
        }, out / runfiles.LAST_STATE)
        done = iteration - self.start
        runfiles.write_model_json(out, {
            **self.meta, "iteration": iteration, "history": self.history,
            "best_val_dice": self.best if self.val_items else None,
            "lesion": self.watch.record(),
            "lesion_from_batch": self.lesion_from_batch,
            "train_s_per_iteration": self.train_seconds / max(1, iteration) if done else None,
        })

    def _log(self, record: dict, validating: bool) -> None:
        if validating:
            self.history.append(record)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            runfiles.append_log(self.out, record)

    # -------------------------------------------------------------- the loop
    def run(self) -> Path:
        """Set up, train the remaining iterations, and return the run folder."""
        self.setup()
        config = self.config
        val_every = config.effective_val_every
        self.model.train()
        tic = last_checkpoint = time.perf_counter()
        # One thread prepares the next batch while the network trains on this one (the order of batches
        # and their augmentations does not depend on timing, so resume stays exact).
        prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backsplit-batches")
        upcoming = prefetcher.submit(self.make_batch, self.start)
        if self.start >= config.iterations:
            # Killed after the last state was written but before model.json: nothing to train, but
            # model.json must say the iteration the weights are at.
            self.checkpoint(self.start, False)
        try:
            for iteration in range(self.start, config.iterations):
                if self.should_stop is not None and self.should_stop():
                    self.checkpoint(iteration, False)
                    raise TrainingCancelled(f"training stopped at iteration {iteration}")
                step_start = time.perf_counter()
                batch = upcoming.result()
                if iteration + 1 < config.iterations:
                    upcoming = prefetcher.submit(self.make_batch, iteration + 1)
                loss = self.step(iteration, batch)
                self.train_seconds += time.perf_counter() - step_start

                done = iteration + 1
                record = None
                if done % config.log_every == 0 or done == config.iterations:
                    record = {"iteration": done, "loss": float(loss.item()), "lr": self.scheduler.get_last_lr()[0],
                              "time_s": round(time.perf_counter() - tic, 3)}
                    if self.schema.auxiliary_names:
                        record["auxiliary_share"] = round(self.auxiliary_share, 4)
                validating = done % val_every == 0 or done == config.iterations
                improved = False
                warning = None
                if validating and self.val_items:
                    scores = self.validate(done)
                    self.last_val, warning = scores["val_dice"], scores.get("warning")
                    # A tie keeps the later weights: with one small validation case the lesion Dice is often 0
                    # at every validation, and '>' kept the first, barely trained checkpoint (issue 20, n = 4).
                    improved = self.last_val >= self.best
                    self.best = max(self.best, self.last_val)
                    record = {**(record or {"iteration": done, "loss": float(loss.item())}), **scores}
                if record is not None:
                    self._log(record, validating)
                # Between validations, a time-based checkpoint: a kill loses minutes, not a tenth of the run.
                if validating or time.perf_counter() - last_checkpoint > config.checkpoint_every_s:
                    self.checkpoint(done, improved)
                    last_checkpoint = time.perf_counter()
                if self.progress is not None:
                    elapsed = time.perf_counter() - tic
                    eta = elapsed / (done - self.start) * (config.iterations - done)
                    self.progress(Progress(done, config.iterations, float(loss.item()), self.last_val,
                                           self.best if self.best >= 0 else None, eta, elapsed, warning=warning))
        finally:
            prefetcher.shutdown(wait=True, cancel_futures=True)
        self._finish_distributed()
        return self.out


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
    return Trainer(dataset, out, config, base_run=base_run, resume=resume, progress=progress,
                   should_stop=should_stop).run()


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
