"""``report.md``: one section per experiment with tables (mean ± std over seeds) and paired differences."""

from __future__ import annotations

from pathlib import Path

from BackSplitLib.atomic import write_text_atomic
from BackSplitLib.bench.stats import fmt
from BackSplitLib.bench.targets import targets_table

_COLUMNS = (("dice", "lesion Dice", 3), ("fp_per_case", "FP comp./case", 2), ("sensitivity", "lesion sens.", 2),
            ("hd95", "HD95 (mm)", 1))


def condition_table(result: dict) -> list[str]:
    lines = ["| condition | " + " | ".join(c[1] for c in _COLUMNS) + " | seeds |",
             "|---|" + "---|" * (len(_COLUMNS) + 1)]
    for name, entry in result["conditions"].items():
        cells = [fmt(entry["summary"][k], d) for k, _, d in _COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {entry['summary']['dice']['n']} |")
    return lines


def comparison_table(result: dict) -> list[str]:
    if not result["comparisons"]:
        return []
    lines = ["", "Paired differences (A − B, same seed):", "",
             "| A | B | metric | mean diff ± std | p (paired t) |", "|---|---|---|---|---|"]
    for c in result["comparisons"]:
        diff = "n/a" if c["mean_diff"] is None else f"{c['mean_diff']:+.3f} ± {c['std_diff']:.3f}"
        p = "n/a" if c["p_value"] is None else f"{c['p_value']:.3f}"
        lines.append(f"| {c['a']} | {c['b']} | {c['metric']} | {diff} | {p} |")
    dice = [c["verdict"] for c in result["comparisons"] if c["metric"] == "dice"]
    fp = [c["verdict"] for c in result["comparisons"] if c["metric"] == "fp_per_case"]
    lines += ["", *[f"- {v}" for v in dice + fp]]
    return lines


def fisher_table(result: dict) -> list[str]:
    lines = ["| block | dim | trace split | trace binary | ratio | λmin split | λmin binary | λmin(split − binary) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, b in result["blocks"].items():
        lines.append(f"| {name} | {b['dimension']} | {fmt(b['trace_split'], 4)} | {fmt(b['trace_binary'], 4)} | "
                     f"{fmt(b['trace_ratio'], 2)} | {b['min_eig_split']['mean']:.2e} | {b['min_eig_binary']['mean']:.2e} | "
                     f"{b['min_eig_difference']['mean']:.1e} |")
    lines += ["", "λmin split / binary: smallest eigenvalue on the subspace the split labels identify (the range of "
              "I_split). The target row's two Fisher matrices are equal by construction (its score depends only on "
              "lesion vs not); the gain of split labels is in the parameters shared with the other classes: the "
              "other head rows and the features that feed the head (the body)."]
    return lines


def write_report(results: dict, path: Path) -> Path:
    profile = results["profile"]
    m = results["machine"]
    lines = [f"# BackSplit benchmark: quality ({profile['name']} profile)", "",
             f"Dataset `{results['dataset']}`; seeds {profile['seeds']}; {profile['iterations']} training iterations "
             f"per run, batch {profile['batch_size']}. Machine: {m['processor']}, {m['cpu_count']} CPUs"
             f"{', ' + m['cuda'] if m.get('cuda') else ' (no GPU)'}, torch {m['torch']}. "
             f"Wall time {results.get('wall_s', 0) / 60:.1f} min.", "",
             "Every number is the mean ± sample std over seeds; differences are paired by seed "
             "(same data, same initial weights, one thing changed) with a two-sided paired t-test. With "
             f"{len(profile['seeds'])} seeds only large, consistent differences reach p < 0.05: a difference called "
             "not significant may still be real, it is just not shown by this run.", ""]
    lines += targets_table(results.get("targets", []))
    for number, result in results["experiments"].items():
        lines += [f"## Experiment {number}: {result['title']}", "", f"![experiment {number}]({result['figure']})", ""]
        if number == "6":
            lines += fisher_table(result)
        else:
            lines += condition_table(result) + comparison_table(result)
        lines += ["", f"_Wall time {result['wall_s'] / 60:.1f} min._", ""]
    return write_text_atomic(path, "\n".join(lines) + "\n")
