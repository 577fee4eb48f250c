"""One PNG per experiment (matplotlib, headless): mean +- std over seeds, each seed as a dot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from BackSplitLib.report import plt  # the project's headless (Agg) pyplot

FIGURE_NAMES = {1: "experiment1_backsplit_vs_binary.png", 2: "experiment2_finetuning.png",
                3: "experiment3_partial_labels.png", 4: "experiment4_structures.png",
                5: "experiment5_noisy_labels.png", 6: "experiment6_fisher.png"}
_LABELS = {"dice": "lesion Dice", "fp_per_case": "FP components / case", "sensitivity": "lesion sensitivity",
           "hd95": "HD95 (mm)"}
_COLORS = {"binary": "tab:red", "backsplit": "tab:green", "marginal": "tab:green", "naive": "tab:orange"}


def _values(result: dict, condition: str, metric: str) -> list[float]:
    seeds = result["conditions"][condition]["per_seed"].values()
    return [m[metric] for m in seeds if m.get(metric) is not None]


def _mean_std(result: dict, condition: str, metric: str) -> tuple[float, float]:
    s = result["conditions"][condition]["summary"][metric]
    return (np.nan, 0.0) if s["mean"] is None else (s["mean"], s["std"])


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _bars(ax, result: dict, conditions: list[str], metric: str, colors: list[str]) -> None:
    x = np.arange(len(conditions))
    for i, (name, color) in enumerate(zip(conditions, colors)):
        mean, std = _mean_std(result, name, metric)
        ax.bar(i, mean, 0.7, yerr=std, color=color, alpha=0.75, capsize=3)
        values = _values(result, name, metric)
        ax.scatter(np.full(len(values), i), values, color="k", s=8, zorder=3)
    ax.set_xticks(x, conditions, rotation=30, ha="right", fontsize=7)
    ax.set_title(_LABELS[metric], fontsize=9)


def experiment1(result: dict, path: Path) -> Path:
    conditions = list(result["conditions"])
    colors = [_COLORS["binary" if c.endswith("binary") else "backsplit"] for c in conditions]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    for ax, metric in zip(axes, _LABELS):
        _bars(ax, result, conditions, metric, colors)
    fig.suptitle("BackSplit vs binary (mean ± std over seeds, dots = seeds)", fontsize=10)
    return _save(fig, path)


def _line(ax, xs, result: dict, names: list[str], label: str, color: str, metric: str = "dice") -> None:
    means = np.array([_mean_std(result, n, metric)[0] for n in names])
    stds = np.array([_mean_std(result, n, metric)[1] for n in names])
    ax.plot(xs, means, "o-", color=color, label=label)
    ax.fill_between(xs, means - stds, means + stds, color=color, alpha=0.2)


def _reference(ax, result: dict, name: str, label: str, color: str, metric: str = "dice") -> None:
    mean, std = _mean_std(result, name, metric)
    ax.axhline(mean, color=color, linestyle="--", label=f"{label} {mean:.3f}")
    ax.axhspan(mean - std, mean + std, color=color, alpha=0.08)


def experiment2(result: dict, path: Path) -> Path:
    its = result["iterations"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    _line(ax, its, result, [f"fine-tuned {k} it" for k in its], "binary model fine-tuned with BackSplit", "tab:blue")
    _line(ax, its, result, [f"binary continued {k} it" for k in its], "binary model continued in binary mode",
          "tab:gray")
    _reference(ax, result, "backsplit (reference)", "BackSplit from scratch", _COLORS["backsplit"])
    _reference(ax, result, "binary (reference)", "binary", _COLORS["binary"])
    ax.set_xlabel("fine-tuning iterations")
    ax.set_ylabel("lesion Dice")
    ax.legend(fontsize=7)
    ax.set_title("Fine-tuning a trained binary model", fontsize=10)
    return _save(fig, path)


def experiment3(result: dict, path: Path) -> Path:
    percents = [int(round(100 * f)) for f in result["fractions"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for mode in result["modes"]:
        _line(ax, percents, result, [f"{mode} {p}%" for p in percents], f"{mode} loss", _COLORS.get(mode, "tab:blue"))
    ax.set_xlabel("training cases with auxiliary labels (%)")
    ax.set_ylabel("lesion Dice")
    ax.legend(fontsize=7)
    ax.set_title("Partial auxiliary supervision", fontsize=10)
    return _save(fig, path)


def experiment4(result: dict, path: Path) -> Path:
    counts = result["counts"]
    left_out = result.get("leave_one_out") or []
    fig, axes = plt.subplots(1, 2 if left_out else 1, figsize=(11 if left_out else 5.5, 3.6), squeeze=False)
    ax = axes[0, 0]
    _line(ax, counts, result, [f"{k} structures" for k in counts], "BackSplit", _COLORS["backsplit"])
    ax.set_xlabel(f"auxiliary structures (added in order: {', '.join(result['order'][:4])}, ...)", fontsize=8)
    ax.set_ylabel("lesion Dice")
    ax.set_title("Adding structures one at a time", fontsize=10)
    if left_out:
        ax = axes[0, 1]
        full = f"{len(result['order'])} structures"
        drops = []
        for name in left_out:
            diff = next(c for c in result["comparisons"] if c["a"] == full and c["b"] == f"all but {name}"
                        and c["metric"] == "dice")
            drops.append((diff["mean_diff"] or 0.0, diff["std_diff"] or 0.0))
        ax.bar(range(len(left_out)), [d for d, _ in drops], yerr=[s for _, s in drops], color="tab:purple",
               alpha=0.75, capsize=3)
        ax.set_xticks(range(len(left_out)), left_out, rotation=35, ha="right", fontsize=7)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_ylabel("Dice lost without it")
        ax.set_title("Which structures matter (leave one out)", fontsize=10)
    return _save(fig, path)


def experiment5(result: dict, path: Path) -> Path:
    conditions = list(result["conditions"])
    colors = [_COLORS["binary"] if c == "binary" else _COLORS["backsplit"] if c == "clean organ labels"
              else "tab:blue" for c in conditions]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    _bars(axes[0], result, conditions, "dice", colors)
    _bars(axes[1], result, conditions, "fp_per_case", colors)
    fig.suptitle("Noisy and automatic auxiliary labels", fontsize=10)
    return _save(fig, path)


def experiment6(result: dict, path: Path) -> Path:
    blocks = list(result["blocks"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    ax = axes[0]
    x = np.arange(len(blocks))
    for offset, kind, color in ((-0.2, "split", _COLORS["backsplit"]), (0.2, "binary", _COLORS["binary"])):
        s = [result["blocks"][b][f"trace_{kind}"] for b in blocks]
        ax.bar(x + offset, [v["mean"] for v in s], 0.4, yerr=[v["std"] for v in s], color=color, alpha=0.75,
               capsize=3, label=f"{kind} labels")
    ax.set_xticks(x, [f"{b}\n(dim {result['blocks'][b]['dimension']})" for b in blocks], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("trace of the expected Fisher")
    ax.legend(fontsize=7)
    ax.set_title("Fisher information per parameter block", fontsize=10)
    ax = axes[1]
    spectrum = result["spectrum"]
    for kind, color in (("split", _COLORS["backsplit"]), ("binary", _COLORS["binary"])):
        values = np.maximum(np.asarray(spectrum[kind]), 1e-16)
        ax.semilogy(np.arange(1, len(values) + 1), values, "o-", color=color, label=f"{kind} labels", markersize=3)
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("eigenvalue")
    ax.legend(fontsize=7)
    ax.set_title(f"Spectrum of the head-input (features) block, seed {spectrum['seed']}", fontsize=10)
    return _save(fig, path)


def draw_experiment(number: int, result: dict, out: Path) -> Path:
    """Draw experiment ``number``'s figure into ``out`` and return its path."""
    drawers = {1: experiment1, 2: experiment2, 3: experiment3, 4: experiment4, 5: experiment5, 6: experiment6}
    return drawers[number](result, Path(out) / FIGURE_NAMES[number])


LEARNING_CURVE_FIGURE = "learning_curve.png"
#: Colours of the arms that are not binary (red is binary's in every figure).
_ARM_COLORS = ("tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:gray", "tab:brown", "tab:cyan")


def _arm_color(name: str, index: int) -> str:
    return _COLORS["binary"] if name.endswith("binary") else _ARM_COLORS[index % len(_ARM_COLORS)]
VALIDATION_CURVES_FIGURE = "validation_curves.png"


def draw_learning_curve(results: dict, out: Path) -> Path:
    """The learning curve (``--train-cases``): each arm's lesion Dice against the number of training cases
    (mean ± std over seeds), and each arm's paired lesion-Dice gap to binary (mean ± std of the differences)."""
    curve = results["learning_curve"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    others = [name for name in curve["arms"] if not name.endswith("binary")]
    colors = {name: _arm_color(name, others.index(name) if name in others else 0) for name in curve["arms"]}
    for name, per_n in curve["arms"].items():
        ns = sorted(int(n) for n in per_n)
        means = np.array([np.nan if per_n[str(n)]["mean"] is None else per_n[str(n)]["mean"] for n in ns])
        stds = np.array([per_n[str(n)]["std"] or 0.0 for n in ns])
        axes[0].plot(ns, means, "o-", label=name, color=colors[name])
        axes[0].fill_between(ns, means - stds, means + stds, color=colors[name], alpha=0.15)
    axes[0].set_ylabel("lesion Dice")
    axes[0].set_title("Lesion Dice against training cases", fontsize=10)
    for gap in curve["gaps"]:
        if gap["metric"] != "dice" or not gap["b"].endswith("binary"):
            continue
        ns = sorted(int(n) for n in gap["per_n"])
        means = [np.nan if gap["per_n"][str(n)]["mean_diff"] is None else gap["per_n"][str(n)]["mean_diff"] for n in ns]
        stds = [gap["per_n"][str(n)]["std_diff"] or 0.0 for n in ns]
        axes[1].errorbar(ns, means, yerr=stds, fmt="o-", capsize=3, label=f"{gap['a']} − {gap['b']}",
                         color=colors.get(gap["a"]))
    axes[1].axhline(0, color="k", linewidth=0.8)
    axes[1].set_ylabel("paired lesion-Dice gap")
    axes[1].set_title("Gap to binary (same seed), mean ± std over seeds", fontsize=10)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ns = [int(n) for n in results["train_cases"]]
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("training cases (the first n, nested)")
        ax.legend(fontsize=7)
    return _save(fig, Path(out) / LEARNING_CURVE_FIGURE)


def draw_validation_curves(curves: dict, out: Path) -> Path:
    """One panel per training-set size: each arm's validation lesion Dice against iterations (thin: seeds,
    thick: their mean), to show whether the budget has converged."""
    sizes = sorted(curves, key=int)
    fig, axes = plt.subplots(1, max(1, len(sizes)), figsize=(3.6 * max(1, len(sizes)), 3.4), squeeze=False,
                             sharey=True)
    for ax, n in zip(axes[0], sizes):
        for i, (arm, entry) in enumerate(sorted(curves[n].items())):
            color = _arm_color(arm, i)
            series = [np.asarray(points, dtype=float) for points in entry["seeds"].values() if points]
            for points in series:
                ax.plot(points[:, 0], points[:, 1], color=color, alpha=0.25, linewidth=0.8)
            if series and all(len(p) == len(series[0]) for p in series):
                ax.plot(series[0][:, 0], np.mean([p[:, 1] for p in series], axis=0), color=color, linewidth=2,
                        label=f"{arm} ({entry['plateaued']}/{entry['runs']} plateaued)"
                        if entry["too_few_validations"] == 0 else arm)
        ax.set_title(f"n = {n} training cases", fontsize=10)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=6)
    axes[0, 0].set_ylabel("validation lesion Dice")
    return _save(fig, Path(out) / VALIDATION_CURVES_FIGURE)
