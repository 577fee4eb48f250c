"""Issue 13's targets, checked on a quality benchmark's results: each one a measured number and a verdict.

The targets are the project's claim written as inequalities over the benchmark's own tables (means over
seeds, paired differences by seed), so a report says in one place whether a run shows the claim:

- experiment 1 (from scratch, per architecture): BackSplit >= binary + 0.05 mean lesion Dice with paired
  p < 0.05, and FP components per case <= 0.7 x binary's (or both <= 0.1);
- experiment 2 (fine-tuning): with gap = BackSplit(N) - binary(N), the binary model fine-tuned into
  BackSplit reaches binary(N) + 0.8 gap (checked only where the gap is >= 0.05), and beats the binary model
  continued in binary mode for the same iterations by >= 0.03 (paired mean);
- experiment 3 (partial supervision, marginal loss): Dice(100 %) >= Dice(50 %) - 0.02 >= Dice(0 %) - 0.04,
  and marginal beats naive at 50 % (paired mean > 0).

A target whose conditions are missing from the results (an experiment not run, fewer seeds) is reported
as not checked (``met: None``), never as met.
"""

from __future__ import annotations

DICE_GAIN = 0.05
FP_RATIO = 0.7
FP_FLOOR = 0.1
FINETUNE_SHARE_OF_GAP = 0.8
FINETUNE_OVER_CONTINUED = 0.03
MIN_SEEDS = 5
#: How a target's ``met`` reads in the report and on the command line.
VERDICTS = {True: "met", False: "missed", None: "not checked"}


def _mean(result: dict, condition: str, metric: str = "dice") -> float | None:
    entry = result.get("conditions", {}).get(condition)
    return None if entry is None else entry["summary"][metric]["mean"]


def _comparison(result: dict, a: str, b: str, metric: str = "dice") -> dict | None:
    return next((c for c in result.get("comparisons", ()) if (c["a"], c["b"], c["metric"]) == (a, b, metric)), None)


def _target(experiment: str, text: str, measured: str, met: bool | None, seeds: int | None = None) -> dict:
    if met is not None and seeds is not None and seeds < MIN_SEEDS:
        measured += f" (only {seeds} seeds: the target asks for >= {MIN_SEEDS})"
        met = None
    return {"experiment": experiment, "target": text, "measured": measured, "met": met}


def _p(value: float | None) -> str:
    return "p n/a" if value is None else f"p = {value:.3f}"


def experiment1_targets(result: dict) -> list[dict]:
    targets = []
    for name in result.get("conditions", {}):
        if not name.endswith(" backsplit"):
            continue
        arch = name[: -len(" backsplit")]
        diff = _comparison(result, name, f"{arch} binary")
        if diff is None or diff["mean_diff"] is None:
            continue
        targets.append(_target(
            "1", f"{arch}: BackSplit >= binary + {DICE_GAIN} lesion Dice, paired p < 0.05",
            f"{diff['mean_diff']:+.3f} ± {diff['std_diff']:.3f}, {_p(diff['p_value'])}",
            diff["mean_diff"] >= DICE_GAIN and diff["p_value"] is not None and diff["p_value"] < 0.05, diff["n"]))
        fp_split, fp_binary = _mean(result, name, "fp_per_case"), _mean(result, f"{arch} binary", "fp_per_case")
        if fp_split is not None and fp_binary is not None:
            both_low = fp_split <= FP_FLOOR and fp_binary <= FP_FLOOR
            targets.append(_target(
                "1", f"{arch}: FP components per case <= {FP_RATIO} x binary (or both <= {FP_FLOOR})",
                f"{fp_split:.2f} vs {fp_binary:.2f}"
                + (f" (ratio {fp_split / fp_binary:.2f})" if fp_binary > 0 else ""),
                both_low or fp_split <= FP_RATIO * fp_binary, diff["n"]))
    return targets


def experiment2_targets(result: dict) -> list[dict]:
    budgets = [k for k in result.get("iterations", ()) if k > 0]
    binary, split = _mean(result, "binary (reference)"), _mean(result, "backsplit (reference)")
    if not budgets or binary is None or split is None:
        return []
    k = max(budgets)
    tuned = _mean(result, f"fine-tuned {k} it")
    over = _comparison(result, f"fine-tuned {k} it", f"binary continued {k} it")
    seeds = over["n"] if over else None
    gap = split - binary
    targets = []
    if tuned is not None:
        wanted = binary + FINETUNE_SHARE_OF_GAP * gap
        targets.append(_target(
            "2", f"fine-tuned {k} it >= binary(N) + {FINETUNE_SHARE_OF_GAP} x gap (gap = BackSplit(N) − binary(N) "
            f"= {gap:+.3f}; checked where gap >= {DICE_GAIN})",
            f"{tuned:.3f} vs {wanted:.3f}", (tuned >= wanted) if gap >= DICE_GAIN else None, seeds))
    if over is not None and over["mean_diff"] is not None:
        targets.append(_target(
            "2", f"fine-tuned {k} it >= binary continued {k} it + {FINETUNE_OVER_CONTINUED} (paired)",
            f"{over['mean_diff']:+.3f} ± {over['std_diff']:.3f}, {_p(over['p_value'])}",
            over["mean_diff"] >= FINETUNE_OVER_CONTINUED, seeds))
    return targets


def experiment3_targets(result: dict) -> list[dict]:
    full, half, none = (_mean(result, f"marginal {p}%") for p in (100, 50, 0))
    targets = []
    seeds = result.get("conditions", {}).get("marginal 50%", {}).get("summary", {}).get("dice", {}).get("n")
    if None not in (full, half, none):
        targets.append(_target(
            "3", "marginal: Dice(100 %) >= Dice(50 %) − 0.02 >= Dice(0 %) − 0.04",
            f"{full:.3f} / {half:.3f} / {none:.3f}", full >= half - 0.02 >= none - 0.04, seeds))
    over = _comparison(result, "marginal 50%", "naive 50%")
    if over is not None and over["mean_diff"] is not None:
        targets.append(_target("3", "marginal beats naive at 50 % (paired)",
                               f"{over['mean_diff']:+.3f} ± {over['std_diff']:.3f}, {_p(over['p_value'])}",
                               over["mean_diff"] > 0, over["n"]))
    return targets


def check(results: dict) -> list[dict]:
    """Every target the results can check, in experiment order."""
    checks = {"1": experiment1_targets, "2": experiment2_targets, "3": experiment3_targets}
    targets = []
    for number, result in results.get("experiments", {}).items():
        if number in checks:
            targets += checks[number](result)
    return targets


def targets_table(targets: list[dict]) -> list[str]:
    if not targets:
        return []
    lines = ["## Targets (issue 13)", "", "| experiment | target | measured | verdict |", "|---|---|---|---|"]
    for t in targets:
        lines.append(f"| {t['experiment']} | {t['target']} | {t['measured']} | {VERDICTS[t['met']]} |")
    return lines + [""]
