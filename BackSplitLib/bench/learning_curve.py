"""The learning curve of ``backsplit bench quality --train-cases`` (issue 20, part B), from the per-n results:
each arm's lesion Dice and experiment 1's paired gaps per training-set size, and every run's validation curve
with whether it plateaued (the plan's check that the budget has converged)."""

from __future__ import annotations

import json
from pathlib import Path


def learning_curve(cells: dict[str, dict]) -> dict:
    """From the per-n results (``cells``: n -> {"experiments"}): ``arms`` (condition -> n -> lesion Dice
    summary) and ``gaps`` (one per experiment-1 comparison and metric: a, b, metric, ``per_n``: n -> paired
    difference), for every n that ran experiment 1."""
    arms: dict[str, dict] = {}
    gaps: dict[tuple[str, str, str], dict] = {}
    for n, cell in cells.items():
        first = cell["experiments"].get("1")
        if first is None:
            continue
        for name, entry in first["conditions"].items():
            arms.setdefault(name, {})[n] = entry["summary"]["dice"]
        for c in first["comparisons"]:
            gap = gaps.setdefault((c["a"], c["b"], c["metric"]), {"a": c["a"], "b": c["b"], "metric": c["metric"],
                                                                   "per_n": {}})
            gap["per_n"][n] = {k: c[k] for k in ("mean_diff", "std_diff", "n", "p_value", "significant", "verdict")}
    return {"arms": arms, "gaps": list(gaps.values())}


#: A run's validation curve has plateaued when its last PLATEAU_VALIDATIONS validation Dice values are all
#: within PLATEAU_TOLERANCE of its best (issue 20 part B's "converged budget").
PLATEAU_VALIDATIONS = 5
PLATEAU_TOLERANCE = 0.02


def plateaued(history: list[dict]) -> bool | None:
    """Whether a run's validation Dice has plateaued (see PLATEAU_VALIDATIONS); None with too few validations."""
    dice = [h["val_dice"] for h in history if h.get("val_dice") is not None]
    if len(dice) < PLATEAU_VALIDATIONS:
        return None
    return all(d >= max(dice) - PLATEAU_TOLERANCE for d in dice[-PLATEAU_VALIDATIONS:])


def validation_curves(out: Path, cells: dict[str, dict]) -> dict:
    """Per n and run folder of experiment 1 (``OUT/n<n>/runs/<arch>/<arm>``): the validation Dice per seed
    (iterations, values), how many runs plateaued and how many had too few validations to tell, read from
    each run's model.json history."""
    curves: dict[str, dict] = {}
    for n, cell in cells.items():
        for meta_path in sorted((out / cell["folder"] / "runs").glob("*/*/seed*/model.json")):
            arm = f"{meta_path.parent.parent.parent.name}/{meta_path.parent.parent.name}"
            if arm.split("/")[0] in ("finetune", "continued", "structures", "noise"):
                continue  # other experiments' runs
            history = json.loads(meta_path.read_text()).get("history", [])
            entry = curves.setdefault(n, {}).setdefault(arm, {"seeds": {}, "plateaued": 0, "runs": 0,
                                                               "too_few_validations": 0})
            entry["seeds"][meta_path.parent.name] = [[h["iteration"], h["val_dice"]] for h in history
                                                     if h.get("val_dice") is not None]
            entry["runs"] += 1
            flat = plateaued(history)
            entry["plateaued"] += bool(flat)
            entry["too_few_validations"] += flat is None
    return curves
