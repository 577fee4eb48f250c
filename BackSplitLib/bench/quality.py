"""``backsplit bench quality``: the BackSplit paper's claims, one experiment each, mean +- std over seeds.

1. BackSplit vs binary for each architecture: lesion Dice, FP components per case, lesion sensitivity, HD95.
2. Fine-tuning a trained binary model with auxiliary classes: lesion Dice against fine-tuning iterations,
   with the one fine-tune recipe (``training.finetune_config``) and, as control, the binary model continued
   in binary mode for the same iterations under the same recipe (equal budget).
3. Partial auxiliary supervision: a share of the training cases with auxiliary labels, marginal vs naive loss.
4. How many auxiliary structures: added one at a time (dataset order), and leave-one-out (which matter).
5. Noisy and automatic auxiliary labels: masks eroded / dilated / shifted; CT tissue classes instead.
6. Fisher information: split vs binary labels on the trained BackSplit model (``BackSplitLib.fisher``).

Issue 20's part B adds three general options (``Profile`` fields, CLI options of the same names):

- ``train_cases`` (``--train-cases 4,8,16,32``): the whole benchmark once per n on the first n training cases of
  the dataset in its order (nested: smaller sets inside larger ones; the same test cases), into ``OUT/n<n>``;
  ``OUT/results.json``, ``OUT/report.md`` and ``OUT/learning_curve.png`` then give each arm's lesion Dice and
  the paired gaps of experiment 1 per n.
- ``size_bins`` (``--size-bins 50,500``): lesion-wise sensitivity and mean per-lesion Dice per bin of true lesion
  volume in voxels (``metrics.size_bins``), per arm and as paired gaps, with the number of lesions per bin; a bin
  with fewer than :data:`MIN_LESIONS_TO_TEST` lesions is reported, not tested.
- ``auxiliary_sources`` (``--auxiliary-source ground-truth,ct-tissues,degraded``): the auxiliary labels
  experiment 1's BackSplit arms train with (``vocabulary.AuxiliarySource``); each arm is compared with binary
  and, when ground truth is among them, with the ground-truth arm.

``control`` (``--control``) adds experiment 1's 0 % control: the BackSplit run with its auxiliary terms never on
(``auxiliary_weight=0``: the binary loss on the many-channel head), compared with binary and with BackSplit.

Every run goes through the engine (``training.train``, ``inference.Predictor``, ``metrics.evaluate_folder``)
and is scored on the source dataset's labelled test set. Runs, predictions and evaluations are kept under
``OUT/runs``, ``OUT/predictions`` and ``OUT/evaluations``; a rerun reuses finished ones and resumes
interrupted ones, so a long benchmark can be stopped and continued. Outputs: ``results.json``,
``report.md`` and one PNG per experiment.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from BackSplitLib.atomic import write_json_atomic
from BackSplitLib.bench import stats, targets, variants
from BackSplitLib.bench.profiles import EXPERIMENTS, BenchError, Profile
from BackSplitLib.dataset import Dataset
from BackSplitLib.vocabulary import AuxiliarySource

#: Per-bin numbers of ``metrics.size_bins`` compared between arms (higher is better for both).
SIZE_BIN_METRICS = ("sensitivity", "lesion_dice")
#: name in results -> key of ``metrics.evaluate_folder``'s summary; True when higher is better.
METRICS = {"dice": ("mean_dice", True), "fp_per_case": ("fp_components_per_case", False),
           "sensitivity": ("lesion_sensitivity", True), "hd95": ("mean_hd95", False)}
#: A size bin with fewer true lesions than this is reported but not tested (too few for a paired comparison).
MIN_LESIONS_TO_TEST = 10


@dataclass
class Outcome:
    """One trained (or reused) condition at one seed: its evaluation summary."""

    name: str
    run: Path
    metrics: dict
    train_s: float = 0.0
    reused: bool = False


@dataclass
class QualityBench:
    """Runs a profile's experiments on ``dataset`` into ``out``. ``log`` receives one line per event."""

    dataset: Path
    out: Path
    profile: Profile
    device: str = "auto"
    log: Callable[[str], None] = print
    # train on the first ``train_subset`` training cases only (one point of the learning curve); None: all
    train_subset: int | None = None
    _source: Dataset | None = field(default=None, init=False)
    _train_source: Dataset | None = field(default=None, init=False)

    # ------------------------------------------------------------------ runs
    @property
    def source(self) -> Dataset:
        if self._source is None:
            self._source = Dataset.load(self.dataset)
            if not [c for c in self._source.test if c.label is not None]:
                raise BenchError(f"{self.dataset} has no labelled test cases (imagesTs + labelsTs)",
                                 "the benchmark scores every model on them; add some or use the built-in phantom")
        return self._source

    @property
    def train_source(self) -> Dataset:
        """The dataset every run trains on: the source, or its first ``train_subset`` training cases (a variant
        under OUT/datasets); the test set is always the source's."""
        if self._train_source is None:
            if self.train_subset is None:
                self._train_source = self.source
            else:
                n = self.train_subset
                self._train_source = Dataset.load(self.variant(f"first{n}", lambda p: variants.first_cases_variant(
                    self.source, p, n)))
        return self._train_source

    def _config(self, mode: str, arch: str, seed: int, iterations: int | None = None, partial: str = "marginal",
                finetune: bool = False):
        return self.profile.train_config(mode, arch, seed, self.device, iterations, partial, finetune)

    def condition(self, name: str, dataset: Path, config, base_run: Path | None = None) -> Outcome:
        """Train ``name`` (or reuse / resume it) and evaluate it on the source test set (cached)."""
        from BackSplitLib.runs import load_run
        from BackSplitLib.training import train

        run = self.out / "runs" / name
        evaluation = self.out / "evaluations" / f"{name.replace('/', '__')}.json"
        meta_path = run / "model.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        _check_same_settings(run, meta.get("training"), config)
        finished = meta.get("iteration") == config.iterations
        start = time.perf_counter()
        if not finished:
            run.parent.mkdir(parents=True, exist_ok=True)
            resume = (run / "last_state.pt").is_file()
            self.log(f"train {name} ({config.mode}, {config.arch}, {config.iterations} it"
                     f"{', from ' + str(base_run.relative_to(self.out)) if base_run else ''}{', resumed' if resume else ''})")
            train(dataset, run, config, base_run=base_run, resume=resume)
            evaluation.unlink(missing_ok=True)  # a new model needs a new evaluation
        train_s = time.perf_counter() - start
        metrics = self._evaluate(name, run, evaluation)
        seconds = load_run(run).meta.get("train_s_per_iteration")
        self.log(f"  {name}: Dice {metrics['dice']:.3f}, FP/case {metrics['fp_per_case']:.2f}"
                 f"{'' if finished else f' ({train_s:.0f} s)'}")
        return Outcome(name, run, {**metrics, "train_s_per_iteration": seconds}, train_s, finished)

    def _evaluate(self, name: str, run: Path, evaluation: Path) -> dict:
        from BackSplitLib.inference import Predictor
        from BackSplitLib.metrics import evaluate_folder, write_evaluation

        if evaluation.is_file() and self.profile.size_bins and not _has_lesion_records(evaluation):
            evaluation.unlink()  # evaluated before per-lesion records existed: evaluate again
        if not evaluation.is_file():
            predictor = Predictor.from_run(run, device=self.device)
            pred_dir = self.out / "predictions" / name
            for case in self.source.test:
                if case.label is not None:
                    predictor.predict_file(case.image, pred_dir)
            write_evaluation(evaluate_folder(pred_dir, self.source.root), evaluation)
        summary = json.loads(evaluation.read_text())
        metrics = {key: summary[source] for key, (source, _) in METRICS.items()}
        if self.profile.size_bins:
            from BackSplitLib.metrics import size_bins

            metrics["size_bins"] = size_bins(summary["cases"], self.profile.size_bins)
        return metrics

    def baseline(self, arch: str, mode: str, seed: int) -> Outcome:
        """The plain binary or BackSplit run on the source dataset (shared by experiments 1-6)."""
        return self.condition(f"{arch}/{mode}/seed{seed}", self.train_source.root, self._config(mode, arch, seed))

    def backsplit_arm(self, arch: str, source: str, seed: int) -> Outcome:
        """Experiment 1's BackSplit run trained with the auxiliary labels of ``source`` (AuxiliarySource)."""
        if source == AuxiliarySource.ground_truth:
            return self.baseline(arch, "backsplit", seed)
        if source == AuxiliarySource.ct_tissues:
            data = self.variant("ct_tissue", lambda p: variants.tissue_variant(self.train_source, p))
        else:
            data = self.variant("degraded", lambda p: variants.degraded_variant(self.train_source, p, seed=0))
        return self.condition(f"{arch}/backsplit-{source}/seed{seed}", data, self._config("backsplit", arch, seed))

    def control(self, arch: str, seed: int) -> Outcome:
        """The 0 % control: the BackSplit run (many-channel head) with its auxiliary terms never on."""
        return self.condition(f"{arch}/control/seed{seed}", self.train_source.root,
                              replace(self._config("backsplit", arch, seed), auxiliary_weight=0.0))

    def variant(self, name: str, make: Callable[[Path], Path]) -> Path:
        """A dataset variant under OUT/datasets (made once; ``make`` writes it atomically)."""
        path = self.out / "datasets" / name
        if not (path / "dataset.json").is_file():
            make(path)
        return path

    # ------------------------------------------------------------------ experiments
    def experiment1(self) -> dict:
        conditions: dict[str, dict[int, dict]] = {}
        comparisons: list[tuple[str, str]] = []
        seeds = self.profile.seeds
        for arch in self.profile.archs:
            binary, truth = f"{arch} binary", arm_name(arch, AuxiliarySource.ground_truth)
            conditions[binary] = {s: self.baseline(arch, "binary", s).metrics for s in seeds}
            for source in self.profile.auxiliary_sources:
                conditions[arm_name(arch, source)] = {s: self.backsplit_arm(arch, source, s).metrics for s in seeds}
                comparisons.append((arm_name(arch, source), binary))
            if self.profile.control:
                control = f"{arch} control (0 %)"
                conditions[control] = {s: self.control(arch, s).metrics for s in seeds}
                comparisons += [(truth, control), (control, binary)]
            comparisons += [(arm_name(arch, s), truth) for s in self.profile.auxiliary_sources
                            if s != AuxiliarySource.ground_truth and truth in conditions]
        result = _tabulate(conditions, comparisons)
        if self.profile.size_bins:
            result["size_bins"] = _size_bins(conditions, comparisons, self.profile.size_bins)
        return result

    def experiment2(self) -> dict:
        conditions: dict[str, dict[int, dict]] = {}
        for seed in self.profile.seeds:
            binary = self.baseline("unet", "binary", seed)
            conditions.setdefault("binary (reference)", {})[seed] = binary.metrics
            conditions.setdefault("backsplit (reference)", {})[seed] = self.baseline("unet", "backsplit", seed).metrics
            for k in self.profile.finetune_iterations:
                for mode, label, folder in (("backsplit", "fine-tuned", "finetune"),
                                            ("binary", "binary continued", "continued")):
                    if k == 0:  # step 0 of fine-tuning predicts exactly what the binary model predicts
                        metrics = binary.metrics
                    else:
                        metrics = self.condition(f"{folder}/{k}/seed{seed}", self.train_source.root,
                                                 self._config(mode, "unet", seed, iterations=k, finetune=True),
                                                 base_run=binary.run).metrics
                    conditions.setdefault(f"{label} {k} it", {})[seed] = metrics
        last = max(self.profile.finetune_iterations)
        # The control is the binary model continued for the same iterations (equal budget), not the base model.
        comparisons = [(f"fine-tuned {last} it", f"binary continued {last} it"),
                       (f"fine-tuned {last} it", "binary (reference)"),
                       (f"fine-tuned {last} it", "backsplit (reference)")]
        result = _tabulate(conditions, comparisons)
        result["iterations"] = list(self.profile.finetune_iterations)
        return result

    def experiment3(self) -> dict:
        conditions: dict[str, dict[int, dict]] = {}
        fractions = self.profile.partial_fractions
        for seed in self.profile.seeds:
            for fraction in fractions:
                percent = int(round(100 * fraction))
                for mode in self.profile.partial_modes:
                    if fraction >= 1:  # every case labelled: both losses are the plain BackSplit loss
                        metrics = self.baseline("unet", "backsplit", seed).metrics
                    else:
                        data = self.variant(f"partial{percent}_seed{seed}", lambda p, f=fraction, s=seed:
                                            variants.partial_variant(self.train_source, p, f, s))
                        metrics = self.condition(f"partial/{percent}/{mode}/seed{seed}", data,
                                                 self._config("backsplit", "unet", seed, partial=mode)).metrics
                    conditions.setdefault(f"{mode} {percent}%", {})[seed] = metrics
        comparisons = [(f"marginal {int(round(100 * f))}%", f"naive {int(round(100 * f))}%")
                       for f in fractions if f < 1 and {"marginal", "naive"} <= set(self.profile.partial_modes)]
        result = _tabulate(conditions, comparisons)
        result["fractions"] = list(fractions)
        result["modes"] = list(self.profile.partial_modes)
        return result

    def experiment4(self) -> dict:
        names = self.source.schema.auxiliary_names
        counts = self.profile.counts(len(names))
        conditions: dict[str, dict[int, dict]] = {}
        for seed in self.profile.seeds:
            for k in counts:
                if k == 0:
                    metrics = self.baseline("unet", "binary", seed).metrics
                elif k == len(names):
                    metrics = self.baseline("unet", "backsplit", seed).metrics
                else:
                    data = self.variant(f"first{k}", lambda p, k=k: variants.subset_variant(self.train_source, p, names[:k]))
                    metrics = self.condition(f"structures/first{k}/seed{seed}", data,
                                             self._config("backsplit", "unet", seed)).metrics
                conditions.setdefault(f"{k} structures", {})[seed] = metrics
            if self.profile.leave_one_out:
                for name in names:
                    rest = [n for n in names if n != name]
                    data = self.variant(f"without_{name}", lambda p, r=tuple(rest): variants.subset_variant(self.train_source, p, r))
                    conditions.setdefault(f"all but {name}", {})[seed] = self.condition(
                        f"structures/without_{name}/seed{seed}", data, self._config("backsplit", "unet", seed)).metrics
        comparisons = [(f"{len(names)} structures", "0 structures")]
        if self.profile.leave_one_out:
            comparisons += [(f"{len(names)} structures", f"all but {n}") for n in names]
        result = _tabulate(conditions, comparisons)
        result["counts"] = counts
        result["order"] = names
        result["leave_one_out"] = names if self.profile.leave_one_out else []
        return result

    def experiment5(self) -> dict:
        conditions: dict[str, dict[int, dict]] = {}
        for seed in self.profile.seeds:
            conditions.setdefault("binary", {})[seed] = self.baseline("unet", "binary", seed).metrics
            conditions.setdefault("clean organ labels", {})[seed] = self.baseline("unet", "backsplit", seed).metrics
            for kind, voxels in self.profile.noise:
                data = self.variant(f"{kind}{voxels}", lambda p, k=kind, v=voxels:
                                    variants.noisy_variant(self.train_source, p, k, v, seed=0))
                conditions.setdefault(f"{kind} {voxels} vox", {})[seed] = self.condition(
                    f"noise/{kind}{voxels}/seed{seed}", data, self._config("backsplit", "unet", seed)).metrics
            if self.profile.tissue_classes:
                data = self.variant("ct_tissue", lambda p: variants.tissue_variant(self.train_source, p))
                conditions.setdefault("CT tissue classes", {})[seed] = self.condition(
                    f"noise/ct_tissue/seed{seed}", data, self._config("backsplit", "unet", seed)).metrics
        noisy = [c for c in conditions if c not in ("binary", "clean organ labels")]
        comparisons = [(c, "binary") for c in noisy] + [(c, "clean organ labels") for c in noisy]
        return _tabulate(conditions, comparisons)

    def experiment6(self) -> dict:
        from BackSplitLib.fisher import measure_run

        images = [c.image for c in self.source.test]
        per_seed, spectrum = {}, None
        for seed in self.profile.seeds:
            run = self.baseline("unet", "backsplit", seed).run
            measured = measure_run(run, images, self.profile.fisher_voxels, seed=seed, device="cpu")
            per_seed[seed] = measured["blocks"]
            spectrum = spectrum or {**measured["spectrum"], "seed": seed}
            self.log(f"  Fisher seed {seed}: head trace ratio {measured['blocks']['head']['trace_ratio']:.2f}, "
                     f"features {measured['blocks']['features']['trace_ratio']:.2f}")
        blocks = {}
        for block in next(iter(per_seed.values())):
            keys = ("trace_split", "trace_binary", "trace_ratio", "min_eig_split", "min_eig_binary",
                    "min_eig_difference", "rank_split", "rank_binary")
            blocks[block] = {
                "dimension": next(iter(per_seed.values()))[block]["dimension"],
                **{k: stats.summarise({s: per_seed[s][block][k] for s in per_seed}) for k in keys},
                "trace_gain": stats.paired({s: per_seed[s][block]["trace_split"] for s in per_seed},
                                           {s: per_seed[s][block]["trace_binary"] for s in per_seed}),
            }
        return {"per_seed": per_seed, "blocks": blocks, "spectrum": spectrum}

    # ------------------------------------------------------------------ everything
    def run(self) -> dict:
        """Run the profile's experiments; write results.json, report.md and the figures; return the results."""
        from BackSplitLib.bench.figures import draw_experiment
        from BackSplitLib.bench.report import write_report

        self._check_options()
        if self.profile.train_cases and self.train_subset is None:
            return self.learning_curve()
        self.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        runs = self.profile.training_runs(len(self.source.schema.auxiliary_names))
        self.log(f"profile {self.profile.name}: experiments {list(self.profile.experiments)}, "
                 f"{len(self.profile.seeds)} seeds, about {runs} trainings of <= {self.profile.iterations} iterations")
        results = {"profile": _jsonable(asdict(self.profile)), "dataset": str(self.source.root),
                   "train_cases": self.train_subset or len(self.source.training), "machine": machine(),
                   "device": self.device, "experiments": {}}
        for number in self.profile.experiments:
            if number not in EXPERIMENTS:
                raise BenchError(f"unknown experiment {number}", f"choose from {sorted(EXPERIMENTS)}")
            tic = time.perf_counter()
            self.log(f"experiment {number}: {EXPERIMENTS[number]}")
            result = getattr(self, f"experiment{number}")()
            result["title"] = EXPERIMENTS[number]
            result["wall_s"] = time.perf_counter() - tic
            result["figure"] = draw_experiment(number, result, self.out).name
            results["experiments"][str(number)] = result
            results["wall_s"] = time.perf_counter() - started
            _write_json(self.out / "results.json", results)  # partial results survive an interruption
        results["wall_s"] = time.perf_counter() - started
        results["targets"] = targets.check(results)
        _write_json(self.out / "results.json", results)
        write_report(results, self.out / "report.md")
        return results

    def _check_options(self) -> None:
        """Refuse what cannot run before anything trains."""
        available = len(self.source.training)
        too_many = [n for n in self.profile.train_cases if n > available]
        if too_many:
            raise BenchError(f"{self.source.root} has {available} training cases, --train-cases asks for {too_many}",
                             "write the phantom with more cases (--cases N, in a new --out) or ask for fewer")
        if AuxiliarySource.ct_tissues in self.profile.auxiliary_sources and self.source.normalization != "CT":
            raise BenchError(f"{self.source.root} is not CT (channel_names), so --auxiliary-source ct-tissues does "
                             "not apply", "use ground-truth or degraded")

    def learning_curve(self) -> dict:
        """The profile once per training-set size n (the first n cases) into OUT/n<n>; then each arm's lesion
        Dice and experiment 1's paired gaps per n in results.json, report.md and learning_curve.png."""
        from BackSplitLib.bench.figures import draw_learning_curve, draw_validation_curves
        from BackSplitLib.bench.learning_curve import learning_curve, validation_curves
        from BackSplitLib.bench.report import write_learning_curve_report

        self.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        sizes = sorted(set(self.profile.train_cases))
        results = {"profile": _jsonable(asdict(self.profile)), "dataset": str(self.source.root),
                   "train_cases": sizes, "machine": machine(), "device": self.device, "cells": {}, "targets": []}
        for n in sizes:
            self.log(f"learning curve: the first {n} of {len(self.source.training)} training cases -> {self.out / f'n{n}'}")
            cell = QualityBench(self.dataset, self.out / f"n{n}", replace(self.profile, train_cases=()), self.device,
                                self.log, train_subset=n).run()
            results["cells"][str(n)] = {"folder": f"n{n}", "experiments": cell["experiments"]}
            results["targets"] += [{**t, "experiment": f"{t['experiment']}, n = {n}"} for t in cell["targets"]]
            results["learning_curve"] = learning_curve(results["cells"])
            results["wall_s"] = time.perf_counter() - started
            _write_json(self.out / "results.json", results)  # partial results survive an interruption
        others = self._other_sizes(sizes)
        if others:
            self.log(f"learning curve: also n = {', '.join(others)}, finished earlier in {self.out}")
            results["cells"] = dict(sorted({**results["cells"], **others}.items(), key=lambda item: int(item[0])))
            results["train_cases"] = [int(n) for n in results["cells"]]
            results["learning_curve"] = learning_curve(results["cells"])
        results["validation"] = validation_curves(self.out, results["cells"])
        results["figure"] = draw_learning_curve(results, self.out).name
        results["validation_figure"] = draw_validation_curves(results["validation"], self.out).name
        _write_json(self.out / "results.json", results)
        write_learning_curve_report(results, self.out / "report.md")
        return results

    def _other_sizes(self, sizes: list[int]) -> dict[str, dict]:
        """Learning-curve points another command left in OUT (``OUT/n<n>/results.json``) with the same
        dataset, seeds and budget: two processes may share one OUT with different ``--train-cases``, and a
        later command (e.g. ``--control`` at some n) adds to the curve instead of replacing it."""
        found = {}
        for path in sorted(self.out.glob("n*/results.json")):
            try:
                cell = json.loads(path.read_text())
            except ValueError:
                continue
            n = cell.get("train_cases")
            same = (cell.get("dataset") == str(self.source.root) and
                    all(cell["profile"].get(k) == _jsonable(getattr(self.profile, k)) for k in ("seeds", "iterations")))
            if isinstance(n, int) and n not in sizes and path.parent.name == f"n{n}" and same and "1" in cell["experiments"]:
                found[str(n)] = {"folder": f"n{n}", "experiments": cell["experiments"]}
        return found


def arm_name(arch: str, source: str) -> str:
    """Experiment 1's name for the BackSplit arm trained with auxiliary labels from ``source``."""
    return f"{arch} backsplit" if source == AuxiliarySource.ground_truth else f"{arch} backsplit ({source})"


def _has_lesion_records(evaluation: Path) -> bool:
    cases = json.loads(evaluation.read_text()).get("cases", {})
    return all("lesions" in case for case in cases.values())


def _size_bins(conditions: dict[str, dict[int, dict]], comparisons: list[tuple[str, str]],
               edges: tuple[int, ...]) -> dict:
    """Per size bin: each condition's lesion-wise sensitivity and per-lesion Dice (mean ± std over seeds) and
    the paired differences of ``comparisons``; bins with fewer than MIN_LESIONS_TO_TEST lesions are not tested."""
    from BackSplitLib.metrics import size_bin_labels

    labels = size_bin_labels(edges)
    any_seed = next(iter(next(iter(conditions.values())).values()))
    lesions = {label: any_seed["size_bins"][label]["lesions"] for label in labels}  # the same test set for all
    table = {name: {label: {metric: stats.summarise({s: m["size_bins"][label][metric] for s, m in per_seed.items()})
                            for metric in SIZE_BIN_METRICS} for label in labels}
             for name, per_seed in conditions.items()}
    paired = []
    for a, b in comparisons:
        for label in labels:
            tested = lesions[label] >= MIN_LESIONS_TO_TEST
            for metric in SIZE_BIN_METRICS:
                diff = stats.paired({s: m["size_bins"][label][metric] for s, m in conditions[a].items()},
                                    {s: m["size_bins"][label][metric] for s, m in conditions[b].items()})
                if not tested:
                    diff.update(p_value=None, significant=False)
                paired.append({"a": a, "b": b, "bin": label, "metric": metric, "lesions": lesions[label],
                               "tested": tested, **diff})
    return {"edges": list(edges), "bins": labels, "lesions": lesions, "conditions": table, "comparisons": paired,
            "min_lesions_to_test": MIN_LESIONS_TO_TEST}


#: TrainConfig fields that say where or how often, not what is trained: a run may be reused across them.
_NOT_COMPARED = {"device", "amp", "compile", "log_every", "checkpoint_every_s", "cache_workers"}
#: Fields a two-class (binary) loss does not read: it has no auxiliary part and no unlabelled classes.
_NO_EFFECT_ON_BINARY = {"auxiliary_weight", "partial"}


def _check_same_settings(run: Path, stored: dict | None, config) -> None:
    """A run under OUT is reused or resumed only if it was trained with the settings asked for now (a rerun
    with another ``--recipe`` or budget into the same OUT must not silently score the old runs)."""
    if stored is None:
        return
    wanted = _jsonable(asdict(config))
    for name, value in wanted.items():
        # None asks for the trainer's default, which the run stores resolved (arch_params, warm-up, ...)
        if name in _NOT_COMPARED or value is None or (config.mode == "binary" and name in _NO_EFFECT_ON_BINARY):
            continue
        if name in stored and _jsonable(stored[name]) != value:
            raise BenchError(f"{run} was trained with {name} = {stored[name]!r}, this benchmark asks for {value!r}",
                             "use another --out for another recipe (finished runs are reused only with the "
                             "same settings), or delete that run folder")


def _tabulate(conditions: dict[str, dict[int, dict]], comparisons: list[tuple[str, str]]) -> dict:
    """Per condition: per-seed metrics and their mean +- std; per comparison and metric: paired difference."""
    table = {}
    for name, per_seed in conditions.items():
        table[name] = {"per_seed": {str(s): m for s, m in per_seed.items()},
                       "summary": {k: stats.summarise({s: m.get(k) for s, m in per_seed.items()})
                                   for k in (*METRICS, "train_s_per_iteration")}}
    paired = []
    for a, b in comparisons:
        if a not in conditions or b not in conditions:
            continue
        for metric, (_, higher) in METRICS.items():
            diff = stats.paired({s: m[metric] for s, m in conditions[a].items()},
                                {s: m[metric] for s, m in conditions[b].items()})
            paired.append({"a": a, "b": b, "metric": metric, **diff,
                           "verdict": stats.verdict(a, b, metric, diff, higher)})
    return {"conditions": table, "comparisons": paired}


def machine() -> dict:
    """Where the numbers were measured."""
    import torch

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: Path, data: dict) -> None:
    write_json_atomic(path, _jsonable(data))


def prepare_dataset(dataset: Path | None, out: Path, profile: Profile, seed: int = 0) -> Path:
    """The dataset to benchmark: the given folder, or the profile's phantom family sized by the profile
    (dataset seed 0 for every profile and family: fixed before the first ablation)."""
    if dataset is not None:
        return dataset
    from BackSplitLib.phantom import write_phantom_dataset
    from BackSplitLib.phantom_families import phantom_family

    family = phantom_family(profile.family)
    path = out / ("phantom" if family.name == "ct" else f"phantom_{family.name}")
    if (path / "dataset.json").is_file():
        written = json.loads((path / "dataset.json").read_text()).get("phantom", {})
        asked = {"cases": profile.cases, "test_cases": profile.test_cases}
        if any(key in written and written[key] != value for key, value in asked.items()):
            raise BenchError(f"{path} was written with {written.get('cases')} training and {written.get('test_cases')} "
                             f"test cases, this benchmark asks for {profile.cases} and {profile.test_cases}",
                             "use another --out (its runs were trained on that phantom), or delete the folder")
    else:
        write_phantom_dataset(path, cases=profile.cases, test_cases=profile.test_cases, seed=seed,
                              shape=profile.family_shapes.get(family.name, profile.shape), family=family)
    return path
