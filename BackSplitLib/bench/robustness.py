"""``backsplit bench quality --profile robustness``: does each arm's lesion channel start, on every phantom
family and at every budget? (issue 20)

For every family of the profile (``families``; the CLI's ``--families`` picks some) and every budget
(``budgets``), experiment 1's two arms (unet, binary and BackSplit) at every seed, through
:class:`~BackSplitLib.bench.quality.QualityBench` (so runs are reused and interrupted ones resumed under
``OUT/<family>/<budget>``; the family's dataset is ``OUT/<family>/phantom_<family>``, dataset seed 0). Budgets
go in the outer loop: the short budget, where the stall was seen, finishes first for every family.

Per family and budget it reports, for each arm and seed, the iteration at which the lesion channel started
(the trainer's lesion watch: the first validation with a predicted lesion voxel) and the test lesion Dice;
(and the iteration after which a training batch's hard lesion Dice first reached
``auxiliary_share.AUXILIARY_START_DICE``, where BackSplit's auxiliary terms switch on); it counts the runs where
BackSplit never started (target 0) and where it ended more than
:data:`BEHIND_MARGIN` below binary. Two processes may share one OUT when they run different families
(``--families``); each writes ``robustness-<families>.json`` and ``robustness-<families>.md``, and a later
run over every family reuses all their runs and writes the combined ``robustness.json`` / ``.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from BackSplitLib.bench import stats
from BackSplitLib.bench.profiles import BenchError, Profile
from BackSplitLib.bench.quality import QualityBench, _write_json, machine, prepare_dataset

#: A BackSplit run ending this much below binary's test lesion Dice (same seed) counts as behind.
BEHIND_MARGIN = 0.05
ARMS = ("binary", "backsplit")


@dataclass
class RobustnessBench:
    """Runs the robustness profile into ``out`` for ``families`` (default: the profile's)."""

    out: Path
    profile: Profile
    families: tuple[str, ...] = ()
    device: str = "auto"
    log: Callable[[str], None] = print

    def run(self) -> dict:
        from BackSplitLib.phantom_families import phantom_family

        families = self.families or self.profile.families
        for name in families:
            phantom_family(name)  # an unknown name fails before any training
        if not self.profile.budgets:
            raise BenchError(f"profile {self.profile.name} has no budgets", "use --profile robustness")
        self.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        runs = len(families) * len(self.profile.budgets) * len(self.profile.seeds) * len(ARMS)
        self.log(f"profile {self.profile.name}: families {', '.join(families)}, budgets {list(self.profile.budgets)}, "
                 f"{len(self.profile.seeds)} seeds, {runs} trainings")
        suffix = "" if set(families) == set(self.profile.families) else "-" + "-".join(families)
        results = {"profile": self.profile.name, "families": list(families), "budgets": list(self.profile.budgets),
                   "seeds": list(self.profile.seeds), "behind_margin": BEHIND_MARGIN, "machine": machine(),
                   "device": self.device, "cells": {}}
        for budget in self.profile.budgets:
            for name in families:
                results["cells"][f"{name}/{budget}"] = self.cell(name, budget)
                results["wall_s"] = time.perf_counter() - started
                results["totals"] = totals(results["cells"])
                _write_json(self.out / f"robustness{suffix}.json", results)  # partial results survive
        (self.out / f"robustness{suffix}.md").write_text(report(results))
        return results

    def cell(self, family: str, budget: int) -> dict:
        """Both arms at every seed for one family and budget."""
        from BackSplitLib.runs import load_run

        profile = replace(self.profile, family=family, iterations=budget)
        data = prepare_dataset(None, self.out / family, profile)
        bench = QualityBench(data, self.out / family / str(budget), profile, device=self.device, log=self.log)
        per_seed: dict[str, dict] = {}
        for seed in profile.seeds:
            entry = {}
            for mode in ARMS:
                outcome = bench.baseline("unet", mode, seed)
                meta = load_run(outcome.run).meta
                lesion = meta.get("lesion") or {}
                entry[mode] = {"started_at": lesion.get("started_at"), "found": lesion.get("found"),
                               "started_in_training_at": meta.get("lesion_from_batch"),
                               "dice_reached_at": reached(meta.get("history") or [], TAKEN_OFF_DICE),
                               "relapsed": relapsed(meta.get("history") or []),
                               "dice": outcome.metrics["dice"], "fp_per_case": outcome.metrics["fp_per_case"],
                               "best_val_dice": meta.get("best_val_dice")}
            per_seed[str(seed)] = entry
            self.log(f"  {family} {budget} it seed {seed}: started binary {_it(entry['binary']['started_at'])}, "
                     f"BackSplit {_it(entry['backsplit']['started_at'])}; Dice {entry['binary']['dice']:.3f} / "
                     f"{entry['backsplit']['dice']:.3f}")
        return summarise_cell(per_seed)


#: A lesion channel has taken off when a validation's lesion Dice reaches this (reported beside "started").
TAKEN_OFF_DICE = 0.1


def reached(history: list[dict], dice: float) -> int | None:
    """The first validation iteration whose lesion Dice reached ``dice`` (None if none did)."""
    return next((int(r["iteration"]) for r in history if (r.get("val_dice") or 0) >= dice), None)


def relapsed(history: list[dict]) -> bool:
    """True when a validation predicted no lesion voxel after an earlier one had predicted some: the lesion
    channel started, then went silent again (seen after BackSplit's auxiliary terms switched on)."""
    voxels = [r["val_lesion_voxels"] for r in history if "val_lesion_voxels" in r]
    first = next((i for i, v in enumerate(voxels) if v > 0), None)
    return first is not None and any(v == 0 for v in voxels[first:])


def summarise_cell(per_seed: dict[str, dict]) -> dict:
    """Counts and summaries of one family and budget from its per-seed entries."""
    def values(mode: str, key: str) -> dict:
        return {int(s): e[mode][key] for s, e in per_seed.items()}

    never = [s for s, e in per_seed.items() if e["backsplit"]["started_at"] is None]
    behind = [s for s, e in per_seed.items() if e["backsplit"]["dice"] < e["binary"]["dice"] - BEHIND_MARGIN]
    later = [s for s, e in per_seed.items()
             if e["binary"]["started_at"] is not None
             and (e["backsplit"]["started_at"] is None or e["backsplit"]["started_at"] > e["binary"]["started_at"])]
    return {"per_seed": per_seed, "backsplit_never_started": never, "backsplit_behind": behind,
            "backsplit_relapsed": [s for s, e in per_seed.items() if e["backsplit"].get("relapsed")],
            "binary_relapsed": [s for s, e in per_seed.items() if e["binary"].get("relapsed")],
            "backsplit_started_later": later,
            "binary_never_started": [s for s, e in per_seed.items() if e["binary"]["started_at"] is None],
            "dice": {m: stats.summarise(values(m, "dice")) for m in ARMS},
            "dice_diff": stats.paired(values("backsplit", "dice"), values("binary", "dice"))}


def totals(cells: dict[str, dict]) -> dict:
    """The issue's two counts over every family and budget (targets: 0 never started)."""
    return {"runs_per_arm": sum(len(c["per_seed"]) for c in cells.values()),
            "backsplit_never_started": sum(len(c["backsplit_never_started"]) for c in cells.values()),
            "backsplit_behind": sum(len(c["backsplit_behind"]) for c in cells.values()),
            "backsplit_started_later": sum(len(c["backsplit_started_later"]) for c in cells.values()),
            "backsplit_relapsed": sum(len(c.get("backsplit_relapsed", [])) for c in cells.values()),
            "binary_relapsed": sum(len(c.get("binary_relapsed", [])) for c in cells.values()),
            "binary_never_started": sum(len(c["binary_never_started"]) for c in cells.values())}


def _it(value) -> str:
    return "never" if value is None else str(value)


def rows(results: dict) -> list[tuple[str, ...]]:
    """One row per family and budget: started (binary / BackSplit per seed), Dice, counts."""
    out = []
    for key, cell in results["cells"].items():
        family, budget = key.split("/")
        seeds = sorted(cell["per_seed"], key=int)
        start = " ".join(f"{_it(cell['per_seed'][s]['binary']['started_at'])}/"
                         f"{_it(cell['per_seed'][s]['backsplit']['started_at'])}" for s in seeds)
        took_off = " ".join(f"{_it(cell['per_seed'][s]['binary'].get('dice_reached_at'))}/"
                            f"{_it(cell['per_seed'][s]['backsplit'].get('dice_reached_at'))}" for s in seeds)
        dice = {m: cell["dice"][m] for m in ARMS}
        diff = cell["dice_diff"]
        out.append((family, budget, start, took_off, stats.fmt(dice["binary"]), stats.fmt(dice["backsplit"]),
                    "n/a" if diff["mean_diff"] is None else f"{diff['mean_diff']:+.3f}",
                    str(len(cell["backsplit_never_started"])), str(len(cell["backsplit_behind"])),
                    str(len(cell.get("backsplit_relapsed", [])))))
    return out


COLUMNS = ("family", "iterations", "lesion started at, binary/BackSplit per seed",
           f"validation Dice >= {TAKEN_OFF_DICE} at", "binary Dice", "BackSplit Dice", "BackSplit - binary",
           "BackSplit never started", f"BackSplit > {BEHIND_MARGIN} behind", "BackSplit relapsed")


def report(results: dict) -> str:
    t = results.get("totals", {})
    lines = [f"# bench quality --profile robustness ({', '.join(results['families'])})", "",
             f"Seeds {results['seeds']}, budgets {results['budgets']}; lesion started = the first validation with a "
             "predicted lesion voxel (the trainer's lesion watch).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    lines += ["", f"BackSplit never started: {t.get('backsplit_never_started')} of {t.get('runs_per_arm')} runs "
              f"(target 0); ended more than {BEHIND_MARGIN} below binary: {t.get('backsplit_behind')}; started later "
              f"than binary: {t.get('backsplit_started_later')}; binary never started: {t.get('binary_never_started')}; "
              f"relapsed (predicted lesion voxels, then none at a later validation): BackSplit "
              f"{t.get('backsplit_relapsed')}, binary {t.get('binary_relapsed')}.",
              f"Wall time {results.get('wall_s', 0) / 60:.1f} min."]
    return "\n".join(lines) + "\n"
