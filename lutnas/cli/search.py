"""`lutnas search`: the most accurate subnet under a millisecond target, exported and optionally
measured on the device. Parsing and printing only; the steps live in `lutnas.search.pipeline`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from lutnas.cli._common import (
    SPACE_HELP,
    add_host_change_flag,
    add_json_flag,
    console,
    err_console,
    json_aware,
    positive_int,
    print_json,
    require,
    space_of_table,
)
from lutnas.cli.device_options import (
    DEVICE_FORMS,
    add_accelerator_flag,
    add_device_flags,
    agent_options,
    check_table_accelerator,
)
from lutnas.errors import SearchError
from lutnas.search.evolution import Candidate
from lutnas.search.pipeline import FILLS, PREDICTORS, Exporter, Outcome, SearchJob


def _targets(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ms, "
                                         f"e.g. 5,10,20") from None
    if not values:
        raise argparse.ArgumentTypeError("--targets needs at least one value")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("search", help="evolutionary search for the best subnet under a "
                                             "latency target")
    p.add_argument("--space", help=f"{SPACE_HELP} (default: the space the table embeds)")
    p.add_argument("--table", required=True, type=Path, help="latency table (.parquet)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                   help="refuse a table of another precision (default: the table's)")
    add_accelerator_flag(p, "refuse a table of another accelerator (default: the table's; --verify-on "
                            "measures the winner under the table's settings)")
    p.add_argument("--predictor", default="lut", choices=PREDICTORS)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-ms", type=float, help="latency cap in milliseconds")
    target.add_argument("--targets", type=_targets, metavar="MS,MS,...",
                        help="one search per target (e.g. 5,10,20) and one plot of the winners")
    p.add_argument("--window-ms", type=float, default=0.5,
                   help="predicted latency must lie in [target - window, target] (default 0.5)")
    p.add_argument("--fill", default="analytic", choices=FILLS,
                   help="price blocks the table lacks with this predictor, fitted on the table "
                        "(default analytic; none: a missing block is an error)")
    p.add_argument("--max-params", help="hard cap on parameters, e.g. 5M or 800k")
    p.add_argument("--max-mmacs", help="hard cap on MMACs (millions of multiply-accumulates), e.g. 300")
    p.add_argument("--supernet", type=Path, metavar="CKPT",
                   help="trained supernet (train-supernet output); without it a proxy is maximised")
    p.add_argument("--data", default="builtin:digits",
                   help="data of the supernet's held-out split (default builtin:digits)")
    p.add_argument("--calib-batches", type=positive_int, default=4,
                   help="training batches for BN recalibration per candidate (default 4)")
    p.add_argument("--eval-threads", type=positive_int, default=1,
                   help="torch threads for supernet evaluation (default 1; more threads thrash on "
                        "a busy small host)")
    p.add_argument("--proxy", default="mmacs", choices=("mmacs", "params"),
                   help="proxy objective without --supernet (default mmacs; labelled as a proxy)")
    p.add_argument("--population", type=positive_int, default=512, help="default 512")
    p.add_argument("--generations", type=positive_int, default=40, help="default 40")
    p.add_argument("--parents", type=positive_int,
                   help="parents kept per generation (default: half the population)")
    p.add_argument("--mutations", type=int,
                   help="mutated children per generation (default: half of the rest)")
    p.add_argument("--crossovers", type=int,
                   help="crossover children per generation (default: the rest)")
    p.add_argument("--mutate-prob", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--no-export", action="store_true", help="skip the .tflite/.onnx export")
    p.add_argument("--verify-on", metavar="DEVICE",
                   help=f"measure the exported winner end to end: {DEVICE_FORMS}")
    p.add_argument("--verify-trials", type=positive_int, default=5,
                   help="fresh-process trials for --verify-on (default 5)")
    add_host_change_flag(p)
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="model cache (default $LUTNAS_CACHE, else ~/.cache/lutnas/models)")
    add_device_flags(p, "--verify-on device options")
    add_json_flag(p, "each target's winner (target, predicted ms, score, MMACs, params, config)")
    p.set_defaults(handler=json_aware(run_search))


def run_search(args: argparse.Namespace) -> int:
    from lutnas.search.constraints import CostModel, parse_count
    from lutnas.search.evolution import EvolutionSettings
    from lutnas.search.objectives import ProxyObjective, supernet_objective
    from lutnas.search.pipeline import load_latency_model, run_target
    from lutnas.search.report import plot_winners
    from lutnas.tables.table import LatencyTable

    require(args.table.is_file(), f"--table {args.table}: no such file; build one with "
                                  f"`lutnas build-table --out {args.table}`")
    require(not (args.verify_on and args.no_export), "--verify-on needs the export; drop --no-export")
    space = space_of_table(LatencyTable.load(args.table), args.space)
    settings = EvolutionSettings(args.population, args.generations, args.parents, args.mutations,
                                 args.crossovers, args.mutate_prob, args.seed)
    max_params = parse_count(args.max_params, "--max-params") if args.max_params else None
    max_mmacs = parse_count(args.max_mmacs, "--max-mmacs") if args.max_mmacs else None
    targets = args.targets or [args.target_ms]
    predictor, table, estimated = load_latency_model(args.table, args.predictor, space, args.fill)
    require(args.precision in (None, table.precision),
            f"--precision {args.precision}: {args.table} holds {table.precision} latencies; build a "
            f"table with build-table --precision {args.precision}")
    check_table_accelerator(args.accelerator, table, args.table)
    if estimated:
        err_console.print(f"[yellow]{len(estimated)} of the space's blocks are not in the table; "
                          f"{args.fill} estimates them (e.g. {estimated[0]})[/]")
    bundle = None
    if args.supernet:
        bundle = supernet_objective(str(args.supernet), args.data, space, args.calib_batches,
                                    threads=args.eval_threads)
        objective = bundle.objective
    else:
        objective = ProxyObjective(args.proxy)
        err_console.print(f"[yellow]no --supernet: maximising a PROXY ({objective.label}); "
                          f"train one with `lutnas train-supernet` for accuracy[/]")
    label = f"{table.describe_settings()} [{args.predictor}]"
    job = SearchJob(space, CostModel(space, predictor), objective, settings, args.window_ms,
                    max_params, max_mmacs, label, bundle, frozenset(estimated))
    outcomes = []
    for target in targets:
        out = args.out if len(targets) == 1 else args.out / f"target-{target:g}ms"
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[best]}"), TimeElapsedColumn(),
                      console=err_console, transient=True) as bar:
            task = bar.add_task(f"search {target:g} ms", total=settings.generations, best="")

            def progress(done: int, total: int, best: Candidate, task: TaskID = task) -> None:
                bar.update(task, completed=done,
                           best=f"best {best.score:.4g} at {best.latency_ms:.3f} ms")

            outcome = run_target(job, target, out, progress,
                                 export=None if args.no_export else _exporter(job, args.cache))
        outcomes.append(outcome)
        _print_outcome(outcome, job)
        if args.verify_on:
            _verify(args, job, table, outcome)
    if len(outcomes) > 1:
        plot = plot_winners([o.result for o in outcomes], args.out / "pareto.png",
                            f"{space.name}: winners per target ({label})")
        summary = [{"target_ms": o.result.constraints.target_ms, "out": str(o.out),
                    "predicted_ms": o.result.best.latency_ms, o.result.objective_name: o.result.best.score,
                    "mmacs": o.result.best.mmacs, "params": int(o.result.best.params)}
                   for o in outcomes]
        (args.out / "winners.json").write_text(json.dumps(summary, indent=2) + "\n")
        console.print(f"winners plot: {plot}")
    if args.json:
        print_json([_summary(o) for o in outcomes])
    return 0


def _summary(outcome: Outcome) -> dict[str, object]:
    """One target's winner for `--json` (best.json holds the same and more)."""
    result, best = outcome.result, outcome.result.best
    return {"target_ms": result.constraints.target_ms, "out": str(outcome.out),
            "predicted_ms": best.latency_ms, "objective": result.objective_name,
            "is_proxy": result.is_proxy, "score": best.score, "mmacs": best.mmacs,
            "params": int(best.params), "config": best.config.to_dict()}


def _print_outcome(outcome: Outcome, job: SearchJob) -> None:
    from lutnas.search.report import nearest_released

    result = outcome.result
    best, c = result.best, result.constraints
    table = Table(title=f"winner under {c.target_ms:g} ms  (window {c.low_ms:.3f}..{c.high_ms:.3f} ms)")
    table.add_column("predicted ms", justify="right")
    table.add_column("proxy" if result.is_proxy else "top-1 %", justify="right")
    table.add_column("MMACs", justify="right")
    table.add_column("params", justify="right")
    table.add_column("evaluated", justify="right")
    table.add_row(f"{best.latency_ms:.3f}", f"{best.score:.4g}", f"{best.mmacs:.1f}",
                  f"{best.params / 1e6:.3f}M", str(result.evaluations))
    console.print(table)
    if job.estimated_keys:
        blocks = [b.key for b in job.space.blocks_of(best.config)]
        estimated = sum(key in job.estimated_keys for key in blocks)
        console.print(f"{estimated} of the winner's {len(blocks)} blocks are estimated (not in the "
                      f"table); best.json lists them")
    released = nearest_released(job.space, job.cost_model, best.latency_ms)
    if released is not None:
        console.print(f"winner {best.mmacs:.1f} MMACs at {best.latency_ms:.3f} ms; nearest released "
                      f"model by latency: {released.name} {released.mmacs:.1f} MMACs at "
                      f"{released.latency_ms:.3f} ms (same table)")
    if result.is_proxy:
        console.print(f"objective: {result.objective_label}")
    console.print(f"config: {best.config.to_json()}", markup=False)  # JSON: never wrapped (pipe) or styled
    console.print(f"outputs: {', '.join(str(p) for p in outcome.files.values())}")


def _exporter(job: SearchJob, cache: Path | None) -> Exporter:
    """Writes the winner's model files (the profiler's export) into its output folder."""
    from lutnas.profiler.subnets import export_winner
    from lutnas.search.pipeline import winner_module

    return lambda config, out: export_winner(job.space, config, out, winner_module(job, config), cache)


def _print_verify_context(check: Any) -> None:
    """What tells a prediction error apart: the host check and the seeded-weights twin."""
    host = check.host_check
    if host is not None:
        state = (f"normalised from {check.raw_ms:.3f} ms" if host.normalised
                 else f"within ±{host.tolerance:.0%}, not normalised")
        # up to three references; those under HOST_CHECK_MIN_MS (timer steps) are left out
        count = len(host.ratios) or host.reference.count(";") + 1
        many = count > 1
        console.print(f"  host check: {count} reference block{'s' if many else ''} of the table "
                      f"({host.reference}) ran x{host.ratio:.3f} of {'their' if many else 'its'} table "
                      f"figure{'s (median; ' if many else ' ('}{state})")
    if check.static_ms is not None:
        console.print(f"  the same subnet with the table's seeded weights: {check.static_ms:.3f} ms "
                      f"(trained weights x{check.measured_ms / check.static_ms:.3f})")


def _verify(args: argparse.Namespace, job: SearchJob, table: object, outcome: Outcome) -> None:
    from lutnas.profiler.subnets import verify_winner
    from lutnas.search.pipeline import winner_module

    options = agent_options(args)
    result = outcome.result
    with console.status(f"measuring the winner on {args.verify_on} "
                        f"({args.verify_trials} trials)..."):
        check = verify_winner(job.space, table, result.best.config, result.best.latency_ms,
                              outcome.out, args.verify_on, args.verify_trials,
                              agent_options=options, cache_root=args.cache,
                              module=winner_module(job, result.best.config),
                              max_host_change=args.max_host_change)
    console.print(f"verify on {check.device} ({check.runtime}, {check.trials} trials): predicted "
                  f"{check.predicted_ms:.3f} ms, measured {check.measured_ms:.3f} ms, "
                  f"prediction error {check.error_pct:+.1f}%")
    _print_verify_context(check)
    if not check.same_device:
        err_console.print(f"[yellow]warning: the table was measured on {check.table_device}, not on "
                          f"{check.device}; the comparison crosses devices[/]")
    best_path = outcome.out / "best.json"
    body = json.loads(best_path.read_text())
    body["verification"] = check.to_dict()
    best_path.write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n")
    if not (check.measured_ms > 0):
        raise SearchError("the device returned no latency for the winner")
