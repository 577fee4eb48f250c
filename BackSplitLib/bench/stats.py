"""Mean +- std over seeds and paired differences (same seed, same data, one thing changed)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

#: Paired differences with a two-sided p-value below this are called significant in the report.
ALPHA = 0.05


def summarise(values: Mapping[int, float | None]) -> dict:
    """``{"mean", "std", "n"}`` of the defined values (sample std; 0 for one value, None for none)."""
    defined = [float(v) for v in values.values() if v is not None and math.isfinite(v)]
    if not defined:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(defined)), "std": float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0,
            "n": len(defined)}


def paired(a: Mapping[int, float | None], b: Mapping[int, float | None]) -> dict:
    """``a - b`` over the seeds both define: mean, std, n and the paired t-test's two-sided p-value
    (None below 2 pairs, or when every difference is the same so the test is undefined)."""
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    diffs = np.array([float(a[s]) - float(b[s]) for s in seeds])
    result = {"mean_diff": None, "std_diff": None, "n": len(seeds), "p_value": None, "significant": False}
    if not len(diffs):
        return result
    result["mean_diff"] = float(diffs.mean())
    result["std_diff"] = float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0
    if len(diffs) > 1 and result["std_diff"] > 0:
        from scipy import stats

        p = float(stats.ttest_rel([float(a[s]) for s in seeds], [float(b[s]) for s in seeds]).pvalue)
        result["p_value"] = p
        result["significant"] = p < ALPHA
    return result


def verdict(name_a: str, name_b: str, metric: str, diff: dict, higher_is_better: bool = True) -> str:
    """One honest sentence about a paired difference."""
    if diff["mean_diff"] is None:
        return f"{metric}: no seed defines both {name_a} and {name_b}."
    d, n, p = diff["mean_diff"], diff["n"], diff["p_value"]
    better = (d > 0) == higher_is_better
    direction = "better" if better else "worse"
    if d == 0:
        return f"{metric}: {name_a} and {name_b} are identical on all {n} seeds."
    if p is None:
        return (f"{metric}: {name_a} is {direction} than {name_b} by {abs(d):.3g}, but with {n} seed(s) "
                "and no spread the difference cannot be tested.")
    if p < ALPHA:
        return f"{metric}: {name_a} is {direction} than {name_b} by {abs(d):.3g} (paired t-test p = {p:.3f}, {n} seeds)."
    return (f"{metric}: {name_a} is {direction} than {name_b} by {abs(d):.3g}, which is not significant "
            f"(paired t-test p = {p:.2f}, {n} seeds).")


def fmt(summary: dict, digits: int = 3) -> str:
    """``0.512 ± 0.031`` (or ``n/a``)."""
    if summary.get("mean") is None:
        return "n/a"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def meets(targets: Mapping[str, tuple[str, float]], name: str, value: float) -> str:
    """'1.018 (meets <= 1.05)': a measured ratio against its target from ``targets`` (name -> (op, limit))."""
    op, limit = targets[name]
    ok = value <= limit if op == "<=" else value >= limit
    return f"{value:.3f} ({'meets' if ok else 'misses'} {op} {limit:g})"
