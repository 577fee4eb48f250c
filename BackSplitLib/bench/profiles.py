"""The benchmark profiles of ``backsplit bench quality``: what sizes a run (``Profile``), the named profiles
(``PROFILES``), the experiments they can hold, and the parsing of ``--recipe`` / ``--finetune-recipe``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from BackSplitLib.errors import BackSplitError
from BackSplitLib.vocabulary import AUXILIARY_SOURCES, PARTIAL_LABEL_MODES, AuxiliarySource

EXPERIMENTS = {
    1: "BackSplit vs binary",
    2: "Fine-tuning a binary model",
    3: "Partial auxiliary supervision",
    4: "How many auxiliary structures",
    5: "Noisy and automatic auxiliary labels",
    6: "Fisher information",
}


class BenchError(BackSplitError):
    """A benchmark cannot run as asked (no test set, unknown profile, ...)."""


@dataclass
class Profile:
    """Everything that sizes a benchmark; stored in results.json."""

    name: str
    experiments: tuple[int, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    archs: tuple[str, ...] = ("unet",)
    iterations: int = 150
    batch_size: int = 2
    patch_size: tuple[int, int, int] | None = None  # None: planned from the data
    # the built-in phantom (ignored when a DATASET is given)
    cases: int = 8
    test_cases: int = 4
    shape: tuple[int, int, int] | None = (32, 48, 56)
    # experiment 2: fine-tuning budgets (0 = the binary model itself, exactly: adapt_head keeps predictions);
    # with finetune_share, the budgets are (0, share x iterations) whatever the iterations (get_profile)
    finetune_iterations: tuple[int, ...] = (0, 40, 80)
    finetune_share: float | None = None
    # experiment 3
    partial_fractions: tuple[float, ...] = (0.0, 0.5, 1.0)
    partial_modes: tuple[str, ...] = PARTIAL_LABEL_MODES
    # experiment 4 (None: 0, 1, 2, 4, ... and all); leave-one-out costs one run per structure and seed
    auxiliary_counts: tuple[int, ...] | None = None
    leave_one_out: bool = True
    # experiment 5
    noise: tuple[tuple[str, int], ...] = (("erode", 1), ("erode", 3), ("dilate", 1), ("dilate", 3),
                                          ("shift", 1), ("shift", 3))
    tissue_classes: bool = True
    # experiment 6
    fisher_voxels: int = 20000
    val_every: int | None = None
    # the built-in phantom family (phantom_families: "ct", "mr", "liver", "lung"); ``shape`` None builds each
    # family at its own geometry, ``family_shapes`` overrides it per family
    family: str = "ct"
    family_shapes: dict = field(default_factory=dict)
    # validations per run when val_every is not given (the robustness profile needs many to see when the
    # lesion channel starts)
    validations: int = 3
    # the robustness profile: every family in ``families`` at every budget (iterations) in ``budgets``
    families: tuple[str, ...] = ()
    budgets: tuple[int, ...] = ()
    # TrainConfig fields set for every run of both arms (an ablation changes one of them)
    recipe: dict = field(default_factory=dict)
    # TrainConfig fields set for every fine-tune of experiment 2, the fine-tuned and the continued arm alike,
    # over the engine's one fine-tune recipe (an ablation of that recipe; empty: the recipe itself)
    finetune_recipe: dict = field(default_factory=dict)
    # issue 20, part B (see the module docstring): the learning curve's training-set sizes (empty: every
    # training case, once), the lesion-volume bin edges in voxels (empty: no size bins), experiment 1's
    # BackSplit arms by auxiliary source and its 0 % control
    train_cases: tuple[int, ...] = ()
    size_bins: tuple[int, ...] = ()
    auxiliary_sources: tuple[str, ...] = (AuxiliarySource.ground_truth.value,)
    control: bool = False

    def training_runs(self, auxiliary_classes: int) -> int:
        """How many trainings the profile needs (for the estimate printed before starting)."""
        seeds, n = len(self.seeds), 0
        base = {("unet", "binary"), ("unet", "backsplit")}
        if 1 in self.experiments:
            base |= {(a, m) for a in self.archs for m in ("binary", "backsplit")}
            extra = sum(1 for s in self.auxiliary_sources if s != AuxiliarySource.ground_truth) + int(self.control)
            n += extra * len(self.archs)
        n += len(base)
        if 2 in self.experiments:
            n += 2 * sum(1 for k in self.finetune_iterations if k > 0)
        if 3 in self.experiments:
            n += len(self.partial_modes) * sum(1 for f in self.partial_fractions if f < 1)
        if 4 in self.experiments:
            counts = self.counts(auxiliary_classes)
            n += sum(1 for k in counts if 0 < k < auxiliary_classes)
            n += auxiliary_classes if self.leave_one_out else 0
        if 5 in self.experiments:
            n += len(self.noise) + int(self.tissue_classes)
        return n * seeds * max(1, len(self.train_cases))

    def train_config(self, mode: str, arch: str, seed: int, device: str = "auto", iterations: int | None = None,
                     partial: str = "marginal", finetune: bool = False):
        """One run's TrainConfig under this profile (both arms alike): its sizes and recipe; ``finetune``
        starts from the engine's one fine-tune recipe (the CLI's, the server's and the panel's) instead of
        TrainConfig's defaults. ``backsplit demo`` trains with the effect profile's configs too."""
        from BackSplitLib.training import TrainConfig, finetune_config

        iterations = iterations or self.iterations
        val_every = self.val_every or max(1, iterations // self.validations)
        settings = dict(mode=mode, arch=arch, iterations=iterations, seed=seed, device=device,
                        batch_size=self.batch_size, patch_size=self.patch_size, partial=partial,
                        val_every=min(val_every, iterations), log_every=max(1, iterations // 10))
        if finetune:
            return finetune_config(**{**settings, **self.finetune_recipe})
        return TrainConfig(**{**settings, **self.recipe})

    def counts(self, auxiliary_classes: int) -> list[int]:
        if self.auxiliary_counts is not None:
            return sorted({min(k, auxiliary_classes) for k in self.auxiliary_counts})
        counts, k = [0], 1
        while k < auxiliary_classes:
            counts.append(k)
            k *= 2
        return counts + [auxiliary_classes]


PROFILES = {
    # ~30 min on 2 free CPU cores: experiment 1 with unet, 2, 3 at 0/50/100 %, 6; 3 seeds.
    "quick": Profile(name="quick", experiments=(1, 2, 3, 6), iterations=250, finetune_iterations=(0, 50, 125),
                     partial_fractions=(0.0, 0.5, 1.0)),
    # sized for one GPU: all experiments, three architectures, the default phantom size, longer training.
    "full": Profile(name="full", experiments=(1, 2, 3, 4, 5, 6), archs=("unet", "dynunet", "segresnet"),
                    iterations=2000, cases=20, test_cases=8, shape=None,
                    finetune_iterations=(0, 100, 250, 500, 1000), partial_fractions=(0.0, 0.25, 0.5, 0.75, 1.0),
                    val_every=200),
    # issue 13's effect benchmark: experiment 1 with unet, 5 seeds, 12 test cases (4 per lesion host and
    # more), sized for <= 30 min per family on 2 free CPU cores; run once per family (--family ct / mr).
    # --experiments 1,2,3 adds issue 13's fine-tuning (0.25 N iterations) and partial-supervision targets.
    "effect": Profile(name="effect", experiments=(1,), seeds=(0, 1, 2, 3, 4), iterations=300, cases=16,
                      test_cases=12, shape=(40, 56, 64), patch_size=(32, 32, 32), finetune_share=0.25),
    # issue 20: does the lesion channel start, for both arms, on every family and at a short and a longer
    # budget? Experiment 1 (unet, both arms) per family and budget, 12 validations per run; ct and mr at the
    # effect profile's size, liver and lung at their own geometry (bench/robustness.py).
    "robustness": Profile(name="robustness", experiments=(1,), seeds=(0, 1, 2, 3, 4), cases=16, test_cases=12,
                          shape=None, family_shapes={"ct": (40, 56, 64), "mr": (40, 56, 64)},
                          patch_size=(32, 32, 32), validations=12, families=("ct", "mr", "liver", "lung"),
                          budgets=(300, 1000)),
}


def parse_recipe(text: str | None) -> dict | None:
    """``"head_prior=0.01,dice=mean"`` -> ``{"head_prior": 0.01, "dice": "mean"}``, checked against TrainConfig."""
    if not text:
        return None
    from dataclasses import fields

    from BackSplitLib.training import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    recipe = {}
    for item in _top_level_items(text):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in known:
            raise BenchError(f"cannot read recipe setting '{item}'",
                             f"write name=value pairs of TrainConfig fields ({', '.join(sorted(known))})")
        try:
            recipe[key] = json.loads(value)
        except ValueError:
            recipe[key] = value
    return recipe


def _top_level_items(text: str) -> list[str]:
    """Split at the commas outside brackets and braces: ``patch_size=[48,48,32],dice=mean`` has two items."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return items + [text[start:]]


def get_profile(name: str, **overrides) -> Profile:
    if name not in PROFILES:
        raise BenchError(f"unknown profile '{name}'", f"use one of {', '.join(PROFILES)}")
    profile = replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(profile.experiments) - set(EXPERIMENTS))
    if unknown or not profile.experiments:
        raise BenchError(f"unknown experiment(s) {unknown or '(none given)'}", f"choose from {sorted(EXPERIMENTS)}")
    if profile.finetune_share is not None:
        profile.finetune_iterations = (0, max(1, round(profile.finetune_share * profile.iterations)))
    unknown = [s for s in profile.auxiliary_sources if s not in AUXILIARY_SOURCES]
    if unknown or not profile.auxiliary_sources:
        raise BenchError(f"unknown auxiliary source(s) {unknown or '(none given)'}",
                         f"use one or more of {', '.join(AUXILIARY_SOURCES)}, comma-separated")
    if any(n < 1 for n in profile.train_cases):
        raise BenchError(f"--train-cases must be positive numbers of cases, got {list(profile.train_cases)}")
    if profile.size_bins:
        from BackSplitLib.metrics import size_bin_labels

        try:
            size_bin_labels(profile.size_bins)
        except ValueError as error:
            raise BenchError(f"--size-bins: {error}", "give increasing voxel counts, e.g. 50,500") from None
    if profile.train_cases and overrides.get("cases") is None:
        profile.cases = max(profile.cases, *profile.train_cases)  # the phantom holds the largest set
    return profile
