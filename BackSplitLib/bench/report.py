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


def size_bin_table(sizes: dict) -> list[str]:
    """Per size bin: each condition's lesion-wise sensitivity and per-lesion Dice, then the paired gaps."""
    bins = sizes["bins"]
    lines = ["", f"Lesion size (true volume in voxels; bins fixed before the run: {sizes['edges']}). Sensitivity "
             "and mean per-lesion Dice (a missed lesion counts 0) per bin:", "",
             "| condition | " + " | ".join(f"{b} sens. | {b} Dice" for b in bins) + " |",
             "|---|" + "---|---|" * len(bins),
             "| lesions | " + " | ".join(f"{sizes['lesions'][b]} | " for b in bins) + " |"]
    for name, per_bin in sizes["conditions"].items():
        cells = [f"{fmt(per_bin[b]['sensitivity'], 2)} | {fmt(per_bin[b]['lesion_dice'], 3)}" for b in bins]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences per bin (A − B, same seed; a bin with fewer than "
              f"{sizes['min_lesions_to_test']} lesions is reported, not tested):", "",
              "| A | B | bin | lesions | metric | mean diff ± std | p (paired t) |", "|---|---|---|---|---|---|---|"]
    for c in sizes["comparisons"]:
        diff = "n/a" if c["mean_diff"] is None else f"{c['mean_diff']:+.3f} ± {c['std_diff']:.3f}"
        p = "not tested" if not c["tested"] else "n/a" if c["p_value"] is None else f"{c['p_value']:.3f}"
        lines.append(f"| {c['a']} | {c['b']} | {c['bin']} | {c['lesions']} | {c['metric']} | {diff} | {p} |")
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
             f"Dataset `{results['dataset']}`, trained on {results.get('train_cases', 'all')} training cases; seeds {profile['seeds']}; {profile['iterations']} training iterations "
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
        if "size_bins" in result:
            lines += size_bin_table(result["size_bins"])
        lines += ["", f"_Wall time {result['wall_s'] / 60:.1f} min._", ""]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def _size_bin_gaps(results: dict, sizes: list[str]) -> list[str]:
    """Per size bin and n: each arm's paired gap to binary (per-lesion Dice and sensitivity), with the lesion
    count; the per-n reports hold the full size tables."""
    rows: dict[tuple, dict] = {}
    for n in sizes:
        cell = results["cells"][n]["experiments"].get("1", {}).get("size_bins")
        for c in (cell or {}).get("comparisons", ()):
            if c["b"].endswith("binary"):
                rows.setdefault((c["a"], c["b"], c["bin"], c["lesions"], c["metric"]), {})[n] = c
    if not rows:
        return []
    lines = ["", "Lesion size: paired gaps to binary per bin of true lesion volume (voxels), mean ± std over seeds "
             "(p; 'not tested' below 10 lesions):", "",
             "| A | B | bin | lesions | metric | " + " | ".join(f"n = {n}" for n in sizes) + " |",
             "|---|---|---|---|---|" + "---|" * len(sizes)]
    for (a, b, label, lesions, metric), per_n in rows.items():
        cells = []
        for n in sizes:
            c = per_n.get(n)
            if c is None or c["mean_diff"] is None:
                cells.append("")
                continue
            p = "not tested" if not c["tested"] else "p n/a" if c["p_value"] is None else f"p {c['p_value']:.3f}"
            cells.append(f"{c['mean_diff']:+.3f} ± {c['std_diff']:.3f} ({p})")
        lines.append(f"| {a} | {b} | {label} | {lesions} | {metric} | " + " | ".join(cells) + " |")
    return lines


def _plateau_cell(entry: dict) -> str:
    few = entry["too_few_validations"]
    return f"{entry['plateaued']}/{entry['runs']}" + (f" ({few} with < 5 validations)" if few else "")


def write_learning_curve_report(results: dict, path: Path) -> Path:
    """``report.md`` of a ``--train-cases`` benchmark: each arm's lesion Dice and the paired gaps per n, with a
    link to each n's own report (every experiment, size bins)."""
    profile, curve = results["profile"], results["learning_curve"]
    sizes = [str(n) for n in results["train_cases"]]
    lines = [f"# BackSplit benchmark: learning curve ({profile['name']} profile)", "",
             f"Dataset `{results['dataset']}`; the first n of its training cases in dataset order (nested: each "
             f"set holds the smaller ones; the trainer holds out its validation share of each), n = "
             f"{', '.join(sizes)}; the same test cases for every n. Seeds {profile['seeds']}; "
             f"{profile['iterations']} iterations per run. Wall time {results.get('wall_s', 0) / 60:.1f} min.", "",
             f"![learning curve]({results.get('figure', 'learning_curve.png')})", "",
             "Lesion Dice (mean ± std over seeds):", "",
             "| condition | " + " | ".join(f"n = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for name, per_n in curve["arms"].items():
        lines.append(f"| {name} | " + " | ".join(fmt(per_n[n]) if n in per_n else "" for n in sizes) + " |")
    lines += ["", "Paired gaps (A − B, same seed), mean ± std over seeds, paired t-test p:", "",
              "| A | B | metric | " + " | ".join(f"n = {n}" for n in sizes) + " |", "|---|---|---|" + "---|" * len(sizes)]
    for gap in curve["gaps"]:
        cells = []
        for n in sizes:
            d = gap["per_n"].get(n)
            if d is None or d["mean_diff"] is None:
                cells.append("")
                continue
            p = "n/a" if d["p_value"] is None else f"{d['p_value']:.3f}"
            cells.append(f"{d['mean_diff']:+.3f} ± {d['std_diff']:.3f} (p {p})")
        lines.append(f"| {gap['a']} | {gap['b']} | {gap['metric']} | " + " | ".join(cells) + " |")
    lines += _size_bin_gaps(results, sizes)
    validation = results.get("validation", {})
    if validation:
        lines += ["", "Validation curves: runs whose last five validation Dice values are all within 0.02 of their best (plateaued), per n:", "",
                  f"![validation curves]({results.get('validation_figure', 'validation_curves.png')})", "",
                  "| run | " + " | ".join(f"n = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
        arms = sorted({arm for per_n in validation.values() for arm in per_n})
        for arm in arms:
            cells = [_plateau_cell(validation[n][arm]) if arm in validation.get(n, {}) else "" for n in sizes]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "Each n's runs, every experiment's tables and figures (and the size bins, with --size-bins): "
              + ", ".join(f"[n = {n}]({results['cells'][n]['folder']}/report.md)" for n in sizes) + "."]
    lines += [""] + targets_table(results.get("targets", []))
    return write_text_atomic(path, "\n".join(lines) + "\n")
