"""``backsplit bench``: the paper's experiments (quality) and what BackSplit costs (cost)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from BackSplitLib.cli.app import app, console
from BackSplitLib.vocabulary import AUXILIARY_SOURCES

bench_app = typer.Typer(help="Benchmarks: quality (the paper's experiments), cost (time, memory) and server (overheads).",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


class ProfileName(str, Enum):
    quick = "quick"
    full = "full"
    effect = "effect"
    robustness = "robustness"


def _family_names() -> type[Enum]:
    from BackSplitLib.phantom_families import FAMILIES  # torch-free, cheap

    return Enum("FamilyName", {name: name for name in FAMILIES}, type=str)


FamilyName = _family_names()


def _log(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _integers(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    from BackSplitLib.bench.profiles import BenchError

    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise BenchError(f"cannot read {what} '{text}'", "write them comma-separated, e.g. 0,1,2") from None


@bench_app.command()
def quality(
    dataset: Path = typer.Argument(None, help="Dataset folder with a labelled test set (default: the built-in phantom)."),
    out: Path = typer.Option(..., "--out", help="Output folder: results.json, report.md, figures, runs (reused on rerun)."),
    profile: ProfileName = typer.Option(ProfileName.quick, "--profile", help="quick: ~30 min on 2 CPU cores; full: all experiments, sized for one GPU; effect: experiment 1, 5 seeds, 12 test cases (<= 30 min per family on 2 free cores); robustness: both arms on every family at 300 and 1000 iterations, when each lesion channel started (issue 20)."),
    family: FamilyName = typer.Option("ct", "--family", help="Built-in phantom family when no DATASET is given: ct (cysts in liver/kidneys), mr (metastases in liver/vertebrae/adrenals), liver (six classes, faint metastases), lung (five classes, small nodules)."),
    recipe: str = typer.Option(None, "--recipe", help="TrainConfig fields for every run of both arms, e.g. 'head_prior=0.01,learning_rate=0.001' (an ablation)."),
    finetune_recipe: str = typer.Option(None, "--finetune-recipe", help="TrainConfig fields over the engine's fine-tune recipe for experiment 2's fine-tuned and continued runs alike, e.g. 'auxiliary_weight=1' (an ablation)."),
    seeds: str = typer.Option(None, "--seeds", help="Comma-separated seeds (default: the profile's)."),
    experiments: str = typer.Option(None, "--experiments", help="Comma-separated experiment numbers 1-6 (default: the profile's; effect: 1)."),
    iterations: int = typer.Option(None, "--iterations", min=1, help="Training iterations per run (default: the profile's)."),
    val_every: int = typer.Option(None, "--val-every", min=1, help="Validate every N iterations (default: the profile's; the validation curves go into each run's model.json)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch CPU threads (on a busy shared machine 1 can be much faster)."),
    families: str = typer.Option(None, "--families", help="robustness profile: comma-separated families to run (default: all); two processes may share one --out with different families."),
    budgets: str = typer.Option(None, "--budgets", help="robustness profile: comma-separated iteration budgets (default: 300,1000)."),
    train_cases: str = typer.Option(None, "--train-cases", help="Learning curve: comma-separated training-set sizes, e.g. 4,8,16,32; the profile runs once per n on the first n training cases (nested, the same test cases) into OUT/n<n>, and OUT/report.md gives the paired gaps per n."),
    size_bins: str = typer.Option(None, "--size-bins", help="Lesion-size bin edges in voxels of true lesion volume, e.g. 50,500 (bins < 50, 50-500, >= 500): lesion-wise sensitivity and per-lesion Dice per bin for experiment 1's arms, and their paired gaps."),
    auxiliary_source: str = typer.Option(None, "--auxiliary-source", help=f"Experiment 1's BackSplit arms, by the auxiliary labels they train with (comma-separated): {', '.join(AUXILIARY_SOURCES)} (default: ground-truth). Each is compared with binary and with ground-truth."),
    control: bool = typer.Option(False, "--control", help="Add experiment 1's 0 % control: the BackSplit run with its auxiliary terms never on (auxiliary_weight=0, the binary loss on the many-channel head)."),
    cases: int = typer.Option(None, "--cases", min=1, help="Built-in phantom: training cases (default: the profile's, at least the largest --train-cases)."),
    test_cases: int = typer.Option(None, "--test-cases", min=1, help="Built-in phantom: test cases (default: the profile's; test case j is the same whatever the count)."),
) -> None:
    """Run the BackSplit paper's experiments: mean ± std over seeds, paired differences, one figure each."""
    from BackSplitLib.bench.profiles import get_profile, parse_recipe
    from BackSplitLib.bench.quality import QualityBench, prepare_dataset

    _set_threads(threads)
    sources = tuple(s.strip() for s in auxiliary_source.split(",") if s.strip()) if auxiliary_source is not None else None
    chosen = get_profile(profile.value, seeds=_integers(seeds, "seeds"), iterations=iterations, family=family.value,
                         experiments=_integers(experiments, "experiments"), recipe=parse_recipe(recipe),
                         finetune_recipe=parse_recipe(finetune_recipe), budgets=_integers(budgets, "budgets"),
                         train_cases=_integers(train_cases, "training-set sizes"),
                         size_bins=_integers(size_bins, "size bin edges"), auxiliary_sources=sources,
                         control=control or None, cases=cases, test_cases=test_cases, val_every=val_every)
    if chosen.budgets:
        _robustness(out, chosen, families, device)
        return
    data = prepare_dataset(dataset, out, chosen)
    results = QualityBench(data, out, chosen, device=device, log=_log).run()
    if "learning_curve" in results:
        _print_learning_curve(out, results)
        return
    table = Table(title=f"bench quality ({chosen.name}): lesion Dice, mean ± std over seeds")
    for column in ("experiment", "condition", "lesion Dice", "FP comp./case"):
        table.add_column(column)
    from BackSplitLib.bench.stats import fmt

    for number, result in results["experiments"].items():
        for name, entry in result.get("conditions", {}).items():
            table.add_row(number, name, fmt(entry["summary"]["dice"]), fmt(entry["summary"]["fp_per_case"], 2))
    console.print(table)
    from BackSplitLib.bench.targets import VERDICTS

    colours = {True: "green", False: "red", None: "default"}
    for target in results["targets"]:
        console.print(f"target (experiment {target['experiment']}): {target['target']}: {target['measured']}: "
                      f"[{colours[target['met']]}]{VERDICTS[target['met']]}[/]")
    console.print(f"wrote {out / 'results.json'}, {out / 'report.md'} and the figures in "
                  f"{results['wall_s'] / 60:.1f} min")


def _print_learning_curve(out: Path, results: dict) -> None:
    sizes = [str(n) for n in results["train_cases"]]
    rows = []
    for gap in results["learning_curve"]["gaps"]:
        if gap["metric"] != "dice":
            continue
        for n in sizes:
            d = gap["per_n"].get(n)
            if d is None or d["mean_diff"] is None:
                continue
            p = "n/a" if d["p_value"] is None else f"{d['p_value']:.3f}"
            rows.append((n, f"{gap['a']} − {gap['b']}", f"{d['mean_diff']:+.3f} ± {d['std_diff']:.3f}", p))
    _print_table("bench quality --train-cases: paired lesion-Dice gaps per number of training cases",
                 ("n", "comparison", "gap (mean ± std over seeds)", "p (paired t)"), rows)
    console.print(f"wrote {out / 'results.json'}, {out / 'report.md'} and {out / results['figure']} "
                  f"(each n under {out}/n<n>) in {results['wall_s'] / 60:.1f} min")


def _robustness(out: Path, profile, families: str | None, device: str) -> None:
    from BackSplitLib.bench.robustness import COLUMNS, RobustnessBench, rows

    chosen = tuple(f.strip() for f in families.split(",") if f.strip()) if families else ()
    results = RobustnessBench(out, profile, chosen, device=device, log=_log).run()
    _print_table("bench quality (robustness): when each arm's lesion channel started", COLUMNS, rows(results))
    t = results["totals"]
    colour = "green" if t["backsplit_never_started"] == 0 else "red"
    console.print(f"BackSplit never started: [{colour}]{t['backsplit_never_started']}[/] of {t['runs_per_arm']} runs "
                  f"(target 0); ended more than 0.05 below binary: {t['backsplit_behind']}; wrote "
                  f"{out} in {results['wall_s'] / 60:.1f} min")


@bench_app.command()
def cost(
    out: Path = typer.Option(..., "--out", help="Output folder: cost.json, cost.md."),
    repeats: int = typer.Option(None, "--repeats", min=1, help="Repeats per measurement (median reported; default 5)."),
    train_iterations: int = typer.Option(None, "--train-iterations", min=3, help="Timed training iterations per run (default 10)."),
    scale: bool = typer.Option(True, "--scale/--no-scale", help="Predict a 512x512x200 CT-sized volume on the CPU (minutes)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's choice)."),
) -> None:
    """Time and memory: inference and training BackSplit vs binary, pipeline overhead, scale, data pipeline."""
    from BackSplitLib.bench.cost import CostSettings, cost_rows, run_cost, settings_with

    settings = settings_with(repeats=repeats, train_iterations=train_iterations, device=device, threads=threads)
    if not scale:
        settings.scale_shape = None
    assert isinstance(settings, CostSettings)
    results = run_cost(out, settings, log=_log)
    _print_table("bench cost: BackSplit vs binary (medians)",
                 ("measurement", "BackSplit / binary (or value)", "ratio (target)"), cost_rows(results))
    console.print(f"wrote {out / 'cost.json'} and {out / 'cost.md'} in {results['wall_s'] / 60:.1f} min")


@bench_app.command()
def server(
    out: Path = typer.Option(..., "--out", help="Output folder: server_bench.json, server_report.md."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Repeats per measurement (median reported)."),
    iterations: int = typer.Option(4, "--iterations", min=1, help="Training iterations of the tiny model (and of each timed fine-tune)."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch CPU threads, here and in the server (default: torch's choice)."),
    shape: str = typer.Option("64,128,128", "--shape", help="Phantom volume z,y,x (the issue's 128x128x64 by default)."),
    database: str = typer.Option(None, "--database", help="Instead: the job queue on SQLite and on this database "
                                                          "(postgresql://...), side by side: claim latency, tiny-job "
                                                          "throughput with 1/2/4 workers, GET /jobs under 20 clients."),
    jobs: int = typer.Option(100, "--jobs", min=10, help="Jobs per queue measurement (with --database)."),
) -> None:
    """Through a real local server: prediction vs in-process, upload MB/s, fine-tune to first progress."""
    from BackSplitLib.bench.server import ServerBenchSettings, parse_shape, run_server_bench, server_rows

    if database is not None:
        from BackSplitLib.bench.queue import queue_rows, run_queue_bench

        results = run_queue_bench(out, database, jobs, log=_log)
        _print_table("bench server --database: the job queue (loopback, this machine)",
                     ("measurement", "SQLite", "PostgreSQL"), queue_rows(results))
        console.print(f"wrote {out / 'queue_bench.json'} and {out / 'queue_report.md'} in "
                      f"{results['wall_s'] / 60:.1f} min")
        return

    settings = ServerBenchSettings(shape=parse_shape(shape), repeats=repeats, iterations=iterations, threads=threads)
    results = run_server_bench(out, settings, log=_log)
    _print_table(f"bench server: loopback, medians of {repeats}", ("measurement", "value", "ratio / rate (target)"),
                 server_rows(results))
    console.print(f"wrote {out / 'server_bench.json'} and {out / 'server_report.md'} in {results['wall_s'] / 60:.1f} min")


def _print_table(title: str, columns: tuple[str, ...], rows) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@bench_app.command()
def paint(
    out: Path = typer.Option(None, "--out", help="Optional folder for paint_bench.json (and the profile)."),
    strokes: int = typer.Option(20, "--strokes", min=3, help="Timed strokes (after one warm-up)."),
    shape: str = typer.Option("61,512,512", "--shape", help="Volume z,y,x (default: the issue's chest CT)."),
    profile: bool = typer.Option(False, "--profile", help="Also write a cProfile of the strokes (paint.prof in --out)."),
) -> None:
    """One paint stroke in the browser app, end to end on the app's side: events -> painted segment -> frames."""
    import json

    from BackSplitLib.bench.server import parse_shape

    try:
        from BackSplitWeb.paint_bench import GOAL_S, PaintBenchSettings, paint_rows, run_paint_bench
    except ImportError as e:
        from BackSplitLib.errors import BackSplitError

        raise BackSplitError(f"the web app's packages are not installed ({e.name})",
                             "install the web extra (README, 'BackSplit in the browser')") from None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    settings = PaintBenchSettings(shape=parse_shape(shape), strokes=strokes,
                                  profile_to=(out / "paint.prof") if (profile and out is not None) else None)
    results = run_paint_bench(settings, log=_log)
    _print_table(f"bench paint: {strokes} strokes on {shape} voxels (z,y,x), load {results['load_average'][0]:.1f} "
                 f"on {results['cpus']} CPUs", ("part", "median", "95th percentile"), paint_rows(results))
    if out is not None:
        (out / "paint_bench.json").write_text(json.dumps(results, indent=2))
    asked = results["frame_requests_per_stroke"]
    console.print(f"frames asked for per stroke: {asked['painted_view']:.0f} by the painted view, "
                  f"{asked['other_views']:.0f} by the other slice views")
    shown = results["shown"]
    verdict = "under" if shown["median_s"] < GOAL_S else "OVER"
    console.print(f"paint stroke shown: median {shown['median_s'] * 1000:.0f} ms, p95 {shown['p95_s'] * 1000:.0f} ms "
                  f"({verdict} the {GOAL_S:.0f} s goal; load {results['load_average'][0]:.1f} on "
                  f"{results['cpus']} CPUs)")
