"""`lutnas profile-device` (also the `profile-device` script): measure a space's blocks on devices."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from lutnas.cli._common import SPACE_HELP, console, err_console, require
from lutnas.cli.device_options import (
    DEVICE_FORMS,
    add_accelerator_flag,
    add_device_flags,
    agent_options,
)
from lutnas.cli.stopping import interrupted_exit_code
from lutnas.device_agents.base import CACHE_STATES, RUNTIMES, RunSettings, parse_cores
from lutnas.device_agents.kernel import CORE_NAMES
from lutnas.errors import BadInputError
from lutnas.profiler.plan import GRANULARITIES
from lutnas.space import SearchSpace

if TYPE_CHECKING:  # the profiler imports torch: loaded by the handler, not to register the command
    from lutnas.device_agents.factory import AgentOptions
    from lutnas.profiler.run import KeysResult, ProfileSummary, QualitySettings
    from lutnas.profiler.run import Progress as LoopProgress

__all__ = ["parse_cores", "profile_device", "register"]  # parse_cores: cli/table.py reads --cores too

DEFAULT_STORE = "measurements.sqlite"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile-device", help="measure every block of a space on a device",
        epilog="Environment: LUTNAS_CACHE moves the exported-model cache (default "
               "~/.cache/lutnas/models; see `lutnas cache info`); LUTNAS_ADB_KEY names the ADB key "
               "(default ~/.android/adbkey, created when missing).")
    p.add_argument("--device", action="append", metavar="ADDRESS",
                   help=f"{DEVICE_FORMS}; repeat for several (default: local)")
    p.add_argument("--space", required=True, help=SPACE_HELP)
    p.add_argument("--runtime", default="tflite", help=f"one of {', '.join(RUNTIMES)} (default tflite)")
    p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    p.add_argument("--precision", default="fp32",
                   help="fp32, fp16 (weights) or int8 (full-integer TFLite) (default fp32)")
    p.add_argument("--calibration-data", type=Path, metavar="DIR",
                   help="ImageFolder whose images calibrate int8 models of whole subnets and stems "
                        "(default: seeded random inputs)")
    p.add_argument("--cores", help="pin to a cluster (big, little, prime; all = not pinned), read from "
                                   "each device's cpufreq, or a core list, e.g. 0 or 0,1 or 6-7 "
                                   "(default: not pinned)")
    add_accelerator_flag(p, "where the runner runs the model (default cpu); a delegate the runner "
                            "does not apply fails the trial", default="cpu")
    p.add_argument("--cache-state", default="warm", choices=CACHE_STATES,
                   help="cache state each timed run starts from: warm (back to back, as benchmark_model "
                        "times), cold-l2 (the host worker evicts L2 before every run) or cold-llc (all "
                        "caches, and before every pace invoke too; both local only); "
                        "a store keeps one state per device and settings (default warm)")
    p.add_argument("--pace", action="store_true",
                   help="time every invoke next to one of a fixed pace model and normalise by it, so "
                        "the host's changes of speed cancel (a shared or virtual host: trial-to-trial "
                        "CV 16%% -> 3-4%% on a 2-core VM); local only; tables, calibration and "
                        "evaluation follow the store (default off)")
    p.add_argument("--trials", type=int, default=5, help="fresh processes per block (default 5)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per trial (default 10)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per trial (default 50)")
    p.add_argument("--granularity", default="block",
                   help=f"one of {', '.join(GRANULARITIES)} (default block)")
    p.add_argument("--resolution", type=int, action="append", metavar="R", help="only these resolutions")
    p.add_argument("--limit", type=int, help="profile N blocks (a seeded, stage-spanning subset)")
    p.add_argument("--sample", type=float, metavar="FRACTION", help="profile this share of the blocks")
    p.add_argument("--seed", type=int, default=0, help="seed of --limit/--sample and the order (default 0)")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"measurement store (default {DEFAULT_STORE})")
    p.add_argument("--op-profiling", action="store_true",
                   help="also record per-operator times where the runtime gives them (onnxruntime)")
    p.add_argument("--ci-bound", type=float, default=0.02,
                   help="add trials until the 95%% interval of a block's median is within +- this "
                        "share of it (default 0.02)")
    p.add_argument("--max-trials", type=int, default=20, help="trials a block may get in all (default 20)")
    # Before the interval: a CV bound (now read as the interval bound) and re-measure rounds.
    p.add_argument("--cv-bound", type=float, dest="ci_bound", help=argparse.SUPPRESS)
    p.add_argument("--max-remeasure", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan's size, export time left (cache aware) and projected device "
                        "minutes, then stop")
    p.add_argument("--probe", action="store_true",
                   help="with --dry-run: first time the plan's median block and an empty model on each "
                        "device (runner start per batch and per model, cost per run) and project from "
                        "those (a few trials, nothing stored)")
    p.add_argument("--reference-every", type=int, default=8, metavar="N",
                   help="re-measure a reference block every N blocks to detect drift (default 8)")
    p.add_argument("--drift-bound", type=float, default=0.25,
                   help="re-measure blocks next to a reference that moved more than this (default 0.25)")
    p.add_argument("--batch-size", type=int, default=64, help="blocks per worker process (default 64)")
    p.add_argument("--export-workers", type=int, default=2, help="export processes (default 2)")
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="model cache (default $LUTNAS_CACHE, else ~/.cache/lutnas/models)")
    add_device_flags(p)
    adaptive = p.add_argument_group("adaptive profiling (measure a covering sample, then where the "
                                    "learned predictor is least sure)")
    adaptive.add_argument("--adaptive", action="store_true",
                          help="stop when the budget is spent or the held-out block error is below "
                               "--error-bound (needs --budget-minutes)")
    adaptive.add_argument("--budget-minutes", type=float, metavar="M", help="device minutes per device")
    adaptive.add_argument("--error-bound", type=float, default=0.05, metavar="E",
                          help="stop below this held-out block error, a fraction (default 0.05)")
    adaptive.add_argument("--table-out", type=Path, metavar="PATH",
                          help="write the completed table (measured + predicted entries, marked) and "
                               "the learned predictor beside it")
    p.set_defaults(handler=profile_device)


def _settings(args: argparse.Namespace) -> RunSettings:
    """The run settings (RunSettings checks its own values) after the flags that are not settings."""
    require(args.trials >= 1, f"--trials must be at least 1, got {args.trials}")
    require(args.granularity in GRANULARITIES,
            f"--granularity {args.granularity!r} is not one of {', '.join(GRANULARITIES)}")
    require(args.batch_size >= 1 and args.reference_every >= 1 and args.export_workers >= 1,
            "--batch-size, --reference-every and --export-workers must be at least 1")
    require(0 < args.ci_bound and 0 < args.drift_bound and args.max_trials >= 1,
            "--ci-bound and --drift-bound must be positive, --max-trials at least 1")
    store = Path(args.store)
    require(store.parent.is_dir(), f"--store {store}: directory {store.parent} does not exist; create it "
                                   f"or choose another path")
    # A cluster name is resolved per device once its clusters are read (`_pin_cores`).
    cores = parse_cores(args.cores) if args.cores and args.cores not in CORE_NAMES else None
    return RunSettings(runtime=args.runtime, threads=args.threads, cores=cores, warmup=args.warmup,
                       runs=args.runs, op_profiling=args.op_profiling, precision=args.precision,
                       accelerator=args.accelerator, cache=args.cache_state, pace=args.pace)


def _pin_cores(args: argparse.Namespace, settings: RunSettings, options: AgentOptions) -> RunSettings:
    """--cores big|little|prime|all|LIST against each device's cpufreq clusters.

    One warning per device whose clusters a LIST spans; BadInputError when a name means different
    cores on two devices (run them apart) or names a cluster a device lacks."""
    import dataclasses

    from lutnas.device_agents.factory import open_agent
    from lutnas.device_agents.kernel import resolve_cores

    if not args.cores:
        return settings
    chosen: dict[str, tuple[int, ...] | None] = {}
    for address in args.device or ["local"]:
        with open_agent(address, options) as agent:
            info = agent.info()
            cores, warning = resolve_cores(args.cores, info.clusters, info.model or address)
        if warning:
            err_console.print(f"[yellow]warning: {warning}[/]")
        chosen[address] = cores
    if len(set(chosen.values())) > 1:
        raise BadInputError(f"--cores {args.cores} means different cores on "
                            + ", ".join(f"{a} ({c})" for a, c in chosen.items())
                            + ": profile these devices in separate runs")
    return dataclasses.replace(settings, cores=next(iter(chosen.values())))


class _RichProgress:
    """One bar per device (measurements taken / expected, ETA, current CV) and one for the export."""

    def __init__(self, progress: Any) -> None:  # a rich.progress.Progress
        self.bars = progress
        self.tasks: dict[str, int] = {}
        self.started = False

    def stop(self) -> None:
        """Stop the bars if an event started them (rich's stop prints a line even when not started)."""
        if self.started:
            self.bars.stop()
            self.started = False

    def __call__(self, event: LoopProgress) -> None:
        if not self.started:  # at the first event: a run refused before any draws no empty line
            self.bars.start()
            self.started = True
        if event.device not in self.tasks:
            label = "export models" if event.phase == "export" else event.device
            self.tasks[event.device] = self.bars.add_task(label, total=None, cv="")
        task = self.tasks[event.device]
        if event.phase == "export":
            self.bars.update(task, completed=event.keys_done, total=event.keys_total)
            return
        cv = f"cv {event.current_cv:.1%}" if event.current_cv is not None else ""
        self.bars.update(task, completed=event.measurements_done,
                         total=max(event.measurements_expected, event.measurements_done, 1),
                         description=f"{event.device} blocks {event.keys_done}/{event.keys_total}", cv=cv)
        if event.message:
            self.bars.console.print(f"[yellow]{event.device}: {event.message}[/]")


def print_summary(summary: ProfileSummary, qc: QualitySettings | None = None) -> None:
    """The run's table, one line per device with failed keys, and one line of advice per device
    with never-settled blocks (`qc`: the bounds they missed; left out, the advice names none)."""
    table = Table(title=f"profiled into {summary.store}")
    for column in ("device", "run", "measured", "skipped", "re-measured", "flagged", "failed",
                   "measurements", "drift events", "median CV", "wall s"):
        table.add_column(column, justify="left" if column == "device" else "right")
    for device, result in summary.devices.items():
        s = result.summary()
        table.add_row(device, str(summary.run_ids.get(device, "-")), str(result.measured),
                      str(result.skipped), str(result.re_measured), str(result.flagged),
                      str(len(result.failed)), str(result.measurements), str(result.drift_events),
                      f"{s['cv_median']:.1%}" if s["cv_median"] is not None else "-", f"{result.wall_s:.1f}")
    console.print(table)
    console.print(f"plan: {summary.plan_keys} keys; exported/cached {summary.exported} models in "
                  f"{summary.export_s:.1f} s; wall time {summary.wall_s:.1f} s")
    for device, result in summary.devices.items():
        if result.failed:
            first = escape(getattr(result, "first_error", "") or result.failed[0])
            console.print(f"[red]{device}: {len(result.failed)} key(s) failed, the first with "
                          f"{first}; see `lutnas measurements --device {device} --all`[/]",
                          soft_wrap=True)
        advice = qc_advice(device, result, qc)
        if advice:
            console.print(f"[yellow]{escape(advice)}[/]", soft_wrap=True)


# Trials per block past which the advice stops offering more trials: each is a fresh process, and
# 100 a block is 20x the default 5 (a plan of 400 blocks would take days on a phone).
PRACTICAL_TRIALS = 100


def qc_advice(device: str, result: KeysResult, qc: QualitySettings | None = None) -> str | None:
    """What to do about `result`'s never-settled blocks (README, "Measurements you can trust"), as
    one line; None when none. With the settings, the line says how many trials the bound would need
    at the flagged blocks' median trial CV (`trials_for_half_width`): on a host whose trials vary by
    5%, a ±2% interval needs ~42, which no rerun with the same --max-trials reaches; past
    PRACTICAL_TRIALS it says more trials will not do. Below-resolution blocks need nothing (fine
    inside a sum)."""
    if not result.flagged:
        return None
    bound = need = ""
    more = ("then rerun the same command with a larger --trials (and --max-trials), or accept a looser "
            "--ci-bound")
    if qc:
        bound = f" (95% interval wider than ±{qc.ci_bound * 100:g}% after up to {qc.max_trials} trials)"
        cv = result.flagged_cv_median()
        if cv is not None:
            from lutnas.tables.store import trials_for_half_width

            trials = trials_for_half_width(cv, qc.ci_bound)
            need = (f"; their trials vary by {cv:.1%} (median CV), so ±{qc.ci_bound * 100:g}% needs "
                    f"~{trials} trials")
            if trials > PRACTICAL_TRIALS:
                more = "then rerun the same command: more trials will not settle blocks this noisy"
    return (f"{device}: {result.flagged} block(s) never settled{bound}{need}: quiet the device (stop "
            f"other jobs, let a phone cool, pin --cores), {more}; `lutnas measurements "
            f"--device {device}` flags them never-settled")


def profile_device(args: argparse.Namespace) -> int:
    """`profile-device`: the profiling loop over every --device, a progress bar each, a summary."""
    # Bad flags and an unknown space are refused before the profiler (and torch) is imported: ~5 s.
    settings = _settings(args)
    SearchSpace.load(args.space)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from lutnas.profiler.export import ModelCache
    from lutnas.profiler.run import QualitySettings, run_profile

    if args.calibration_data:
        from lutnas.profiler.quantize import use_calibration_data

        use_calibration_data(args.calibration_data)
    if args.dry_run:
        return _dry_run(args, settings)
    options = agent_options(args)
    settings = _pin_cores(args, settings, options)
    if args.adaptive:
        return profile_adaptive_command(args, settings)
    require(args.budget_minutes is None and args.table_out is None,
            "--budget-minutes and --table-out belong to adaptive profiling; add --adaptive")
    max_trials = args.max_trials if args.max_remeasure is None else args.trials * (1 + args.max_remeasure)
    qc = QualitySettings(ci_bound=args.ci_bound, max_trials=max_trials,
                         reference_every=args.reference_every, drift_bound=args.drift_bound,
                         batch_size=args.batch_size)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[cv]}"))
    progress = _RichProgress(Progress(*columns, console=err_console, transient=False))
    try:
        summary = run_profile(
            args.device or ["local"], args.space, settings, args.store, trials=args.trials,
            granularity=args.granularity, resolutions=args.resolution, limit=args.limit,
            sample_fraction=args.sample, seed=args.seed,
            cache=ModelCache(args.cache) if args.cache else None, export_workers=args.export_workers,
            qc=qc, agent_options=options, argv=sys.argv[1:], progress=progress)
    except KeyboardInterrupt:
        progress.stop()
        print(f"stopped during export; nothing measured was lost. Run the same command again to "
              f"resume (store {args.store}).", file=sys.stderr)
        return interrupted_exit_code()
    finally:
        progress.stop()
    print_summary(summary, qc)
    if summary.interrupted:
        print(f"stopped: every measurement taken is in {args.store}; run the same command again to "
              f"resume where it stopped.", file=sys.stderr)
        return interrupted_exit_code()
    # 0: every key measured; 1: some key ended failed (named above); 2 (bad input) is raised earlier.
    return 1 if any(result.failed for result in summary.devices.values()) else 0


def _dry_run(args: argparse.Namespace, settings: RunSettings) -> int:
    """`profile-device --dry-run`: what the plan will cost, nothing exported or measured; with
    --probe, per device, from costs measured on it with the plan's median block and an empty model
    (`profiler.probe`)."""
    from lutnas.profiler.export import ModelCache, format_for
    from lutnas.profiler.plan import make_plan, run_overhead_ms
    from lutnas.space import SearchSpace

    plan = make_plan(SearchSpace.load(args.space), args.resolution, args.granularity, args.limit,
                     args.sample, args.seed)
    cache = ModelCache(args.cache) if args.cache else ModelCache()
    fmt = format_for(settings.runtime, settings.precision)
    core = settings.cores[0] if settings.cores else 0
    common = dict(fmt=fmt, is_cached=lambda key: cache.get(key, fmt) is not None, trials=args.trials,
                  max_trials=args.max_trials, warmup=settings.warmup, runs=settings.runs,
                  export_workers=args.export_workers, batch_size=args.batch_size,
                  reference_every=args.reference_every,
                  run_overhead_ms=run_overhead_ms(settings.cache, settings.pace, core))
    if not args.probe:
        _print_estimate(plan, common)
        return 0
    for device in args.device or ["local"]:
        costs, push = _probe_device(device, args, settings, cache, fmt, plan)
        console.print(costs.line(device))
        _print_estimate(plan, common, invoke_ms=costs.run_ms, per_key_s=costs.per_key_s,
                        process_start_s=costs.per_batch_s, per_session_s=costs.per_session_s,
                        session_size=costs.session_size, push=push, per_push_s=costs.per_push_s,
                        push_s_per_mib=costs.push_s_per_mib, push_batch_s=costs.push_batch_s)
    return 0


def _print_estimate(plan: Any, common: dict[str, Any], **measured: Any) -> None:
    from lutnas.profiler.plan import estimate_plan

    for line in estimate_plan(plan, **common, **measured).lines():
        console.print(line)


def _probe_device(device: str, args: argparse.Namespace, settings: RunSettings, cache: Any, fmt: str,
                  plan: Any) -> tuple[Any, tuple[int, float]]:
    """(InvocationCosts of `device`, (files, MiB) the plan would push to it) (DeviceError /
    BadInputError as opening or running it raises)."""
    from lutnas.device_agents.factory import open_agent
    from lutnas.profiler.probe import files_to_push, probe, probe_files

    empty, sample = probe_files(plan, fmt, cache, args.resolution)
    options = agent_options(args)
    pinned = _pin_cores(args, settings, options)
    with open_agent(device, options) as agent:
        push = files_to_push(agent, plan, fmt, cache, settings.precision)
        return probe(agent, pinned, empty, sample), push


def _check_adaptive(args: argparse.Namespace) -> None:
    require(args.budget_minutes is not None,
            "--adaptive needs a budget: add --budget-minutes M (device minutes per device)")
    require(args.budget_minutes > 0, f"--budget-minutes must be positive, got {args.budget_minutes:g}")
    require(0 < args.error_bound < 1, f"--error-bound is a fraction in (0, 1), got {args.error_bound:g}")
    require(args.limit is None and args.sample is None,
            "--adaptive chooses which blocks to measure itself; drop --limit / --sample")
    require(args.granularity == "block", "--adaptive profiles blocks; drop --granularity")
    if args.table_out is not None:
        require(args.table_out.parent.is_dir(),
                f"--table-out {args.table_out}: directory {args.table_out.parent} does not exist")


def _table_path(table_out: Path, device: str, several: bool) -> Path:
    if not several:
        return table_out
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in device)
    return table_out.with_name(f"{table_out.stem}.{safe}{table_out.suffix}")


def profile_adaptive_command(args: argparse.Namespace, settings: RunSettings) -> int:
    """`profile-device --adaptive`: per device, `profile_adaptive`, then the completed table."""
    from lutnas.device_agents.factory import open_agent
    from lutnas.predictors.serialize import predictor_path, save_predictor
    from lutnas.profiler.adaptive_run import completed_table, profile_adaptive
    from lutnas.profiler.export import ModelCache
    from lutnas.profiler.plan import make_plan
    from lutnas.space import SearchSpace
    from lutnas.tables.store import MeasurementStore
    from lutnas.tables.table import build_table

    _check_adaptive(args)
    space = SearchSpace.load(args.space)
    options = agent_options(args)
    plan = make_plan(space, args.resolution).blocks
    devices = args.device or ["local"]
    cache = ModelCache(args.cache) if args.cache else None
    with MeasurementStore(args.store) as store:
        for address in devices:
            def on_step(step: dict[str, float], where: str = address) -> None:
                error = step["heldout_mape"]
                err_console.print(f"{where}: {int(step['measured'])}/{len(plan)} blocks measured, "
                                  f"{step['elapsed_s']:.0f} s, held-out block error "
                                  + ("-" if error != error else f"{error:.1%}"))

            with open_agent(address, options) as agent:
                device_id = agent.info().device_id
                result = profile_adaptive(agent, space, settings, store, args.budget_minutes,
                                          args.error_bound, trials=args.trials,
                                          resolutions=args.resolution, cache=cache, seed=args.seed,
                                          argv=sys.argv[1:], on_step=on_step)
            console.print(f"{address}: measured {len(result.measured)} of {len(plan)} blocks; "
                          f"stopped: {result.decision.reason}")
            if args.table_out is None:
                continue
            measured = build_table(store, device_id=device_id, runtime=settings.runtime,
                                   threads=settings.threads, core_mask=settings.core_mask,
                                   accelerator=settings.accelerator, space=args.space,
                                   precision=settings.precision)
            table = completed_table(measured, result, plan)
            out = table.save(_table_path(args.table_out, device_id, len(devices) > 1))
            sources = table.frame["source"].value_counts()
            saved = save_predictor(result.predictor, predictor_path(out, "learned"),
                                   extra={"table": str(out), "device_id": device_id,
                                          "adaptive": table.metadata.get("adaptive")})
            console.print(f"wrote {out}: {len(table)} keys ("
                          + ", ".join(f"{n} {k}" for k, n in sources.items())
                          + f"); learned predictor {saved}")
    return 0
