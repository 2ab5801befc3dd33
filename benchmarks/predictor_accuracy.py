"""Predictor accuracy against whole subnets measured end to end on this host.

profile the space's blocks (fresh processes per trial) -> build the table -> fit the whole-model
correction on K calibration subnets -> measure N held-out subnets with the same runtime, threads and
trial protocol -> report LUT, LUT + correction, FLOPs-linear (and any registered predictor).
Target (issue 9): LUT + correction within +-5 % for >= 95 % of held-out subnets, MAPE <= 2 %.

    .venv/bin/python benchmarks/predictor_accuracy.py --space tiny --samples 50 --calibrate 10 --trials 20
    .venv/bin/python benchmarks/predictor_accuracy.py --space elasticvit --resolution 128 \
        --subnet-blocks --calibrate 6 --samples 20 --trials 10
    .venv/bin/python benchmarks/predictor_accuracy.py --space elasticvit --resolution 128 \
        --subnet-blocks --runtime tflite --precision int8 --calibrate 10 --samples 50 --trials 10

`--subnet-blocks` profiles only the blocks of the sampled subnets (all of them), not the whole plan.
`--pace` times every invoke next to the pace model (profile-device --pace) and adds "-paced" to the
result's file name.
`--cache cold-l2` (the default) evicts L2 before every timed run of blocks and subnets alike: a
block timed back to back keeps its weights in L2, which it never does inside a whole model, and the
raw LUT sum came out 17-21 % under whole subnets (benchmarks/results/lut_gap.json); `--cache warm`
measures as benchmark_model on a phone does; `--cache cold-llc` flushes every cache level before
each timed run and, with `--pace`, before each pace invoke (the pace model's time then does not
depend on the model before it, which it does after cold-l2 runs of 100 MiB subnets). The cache
state is part of the result's file name.

The store and model cache persist under --work, so a rerun reuses every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from lutnas.device_agents.base import RunSettings, parse_cores
from lutnas.device_agents.factory import open_agent
from lutnas.predictors.evaluate import scatter_plot
from lutnas.predictors.lut import LutPredictor
from lutnas.profiler.export import ModelCache, tool_versions
from lutnas.profiler.run import QualitySettings, run_profile
from lutnas.profiler.subnets import calibrate, evaluate_on_device
from lutnas.tables.store import MeasurementStore
from lutnas.tables.table import build_table

RESULTS = Path(__file__).parent / "results"
WEIGHTED = "LUT + correction + weights"


def weight_mib(space, configs, precision: str) -> list[float]:
    """Each subnet's weights in MiB (lutnas.space.complexity.weight_mib, as the predictors charge)."""
    from lutnas.space.complexity import weight_mib as subnet_weight_mib

    return [subnet_weight_mib(space.blocks_of(c), precision) for c in configs]


def _add_refit(result, lut, correction: dict, name: str, invoke_ms: float | None,
               mib: tuple[list[float], list[float]] | None = None) -> dict:
    """Refit the table's correction on its own calibration subnets (`correction`: `calibrate`'s
    record) with `invoke_ms` fixed (None: fitted) and, with `mib` (calibration, held-out weight
    MiB), the weight term as a candidate; add its predictions of the held-out subnets to `result`
    under `name`; returns the refit as a dict."""
    import numpy as np

    from lutnas.predictors.correction import Correction
    from lutnas.predictors.metrics import accuracy
    from lutnas.space import SubnetConfig

    sums, _, blocks = lut.block_sums([SubnetConfig.from_dict(c) for c in correction["configs"]])
    fit = Correction.fit(sums, correction["measured_ms"], blocks, invoke_ms,
                         weight_mib=mib[0] if mib else None)
    sums, _, blocks = lut.block_sums(result.configs)
    predicted = np.asarray(fit.apply(sums, blocks, mib[1] if mib else None), dtype=float)
    result.predictions[name] = predicted
    result.reports.append(accuracy(name, predicted, result.measured_ms))
    return fit.to_dict()


def with_weight_term(result, lut, space, correction: dict, precision: str) -> dict:
    """Adds the WEIGHTED predictor to `result` (held-out subnets): a Correction with the weight term
    (lutnas.predictors.correction) fitted on the same calibration subnets, block sums and measured
    invoke as the table's correction; returns it as a dict."""
    from lutnas.space import SubnetConfig

    cal = [SubnetConfig.from_dict(c) for c in correction["configs"]]
    invoke = correction["invoke_ms"] if correction.get("invoke_measured") else None
    return _add_refit(result, lut, correction, WEIGHTED, invoke,
                      (weight_mib(space, cal, precision), weight_mib(space, result.configs, precision)))


MEASURED_INVOKE = "LUT + correction, measured invoke"


def with_measured_invoke(result, lut, correction: dict) -> dict | None:
    """Adds MEASURED_INVOKE to `result`: the correction refitted on the same calibration subnets
    with the per-invoke cost fixed at the empty model's median from the calibration's host checks
    (what lutnas.profiler.subnets.measured_invoke uses for warm and cold-l2 tables, and fits
    otherwise). A comparison, never the table's correction: choosing between the two on the
    held-out subnets would tune the proof to them. None when no empty model was measured or the
    correction used it already."""
    import statistics

    invokes = [c["invoke_ms"] for c in correction.get("host_checks") or [] if c.get("invoke_ms")]
    if not invokes or correction.get("invoke_measured"):
        return None
    return _add_refit(result, lut, correction, MEASURED_INVOKE, float(statistics.median(invokes)))


def _subnet_blocks(args: argparse.Namespace) -> list:
    """The blocks of exactly the subnets calibrate and evaluate will sample (same seeds)."""
    from lutnas.profiler.subnets import sample_configs
    from lutnas.space import SearchSpace, subnet_key

    space = SearchSpace.load(args.space)
    cal = sample_configs(space, args.calibrate, args.seed + 1, resolutions=args.resolution)
    held = sample_configs(space, args.samples, args.seed + 2, resolutions=args.resolution,
                          exclude={subnet_key(space, c) for c in cal})
    return list({b.key: b for c in cal + held for b in space.blocks_of(c)}.values())


def result_tag(args: argparse.Namespace) -> str:
    """The name of a run's store and table in --work and of its result files: space, runtime,
    threads, resolutions, cache state, precision, paced."""
    return f"{args.space}-{args.runtime}-t{args.threads}" + (
        f"-r{'-'.join(map(str, args.resolution))}" if args.resolution else "") + (
        "-" + args.cache.replace("-", "") if args.cache != "warm" else "") + (
        f"-{args.precision}" if args.precision != "fp32" else "") + ("-paced" if args.pace else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """This script's flags (`argv`: sys.argv[1:] when None; heldout_noise.py passes a result's
    recorded command)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--resolution", type=int, action="append", help="profile/sample only these")
    parser.add_argument("--sample", type=float, help="profile this share of the plan (elasticvit)")
    parser.add_argument("--runtime", default="tflite")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                        help="fp16/int8 need --runtime tflite (issue 15's int8 proof)")
    parser.add_argument("--cores", help="pin to these cores, e.g. 0")
    parser.add_argument("--cache", default="cold-l2", choices=("warm", "cold-l2", "cold-llc"),
                        help="cache state each timed run starts from (RunSettings.cache)")
    parser.add_argument("--trials", type=int, default=20, help="fresh processes per block and subnet")
    parser.add_argument("--subnet-trials", type=int,
                        help="fresh processes per calibration and held-out subnet (default: --trials); "
                             "more trials make the held-out figures less noisy (heldout_noise.py)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per trial")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calibrate", type=int, default=10)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subnet-blocks", action="store_true",
                        help="profile exactly the blocks of the calibration and held-out subnets")
    parser.add_argument("--pace", action="store_true",
                        help="paced timing (profile-device --pace) for blocks and subnets alike")
    parser.add_argument("--ci-bound", type=float, default=0.02)
    parser.add_argument("--max-trials", type=int, default=20)
    parser.add_argument("--drift-bound", type=float, default=0.5,
                        help="reference drift bound; the profiler's 10 %% discards most trials on a "
                             "shared 2-core host")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "lutnas-predictor-accuracy",
                        help="store, tables and model cache (kept so reruns reuse measurements)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    console = Console(highlight=False, width=160)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LUTNAS_CACHE", str(args.work / "cache"))
    tag = result_tag(args)
    store_path = args.work / f"{tag}.sqlite"
    cores = parse_cores(args.cores) if args.cores else None
    settings = RunSettings(runtime=args.runtime, threads=args.threads, cores=cores, warmup=args.warmup,
                           runs=args.runs, cache=args.cache, precision=args.precision, pace=args.pace)
    qc = QualitySettings(ci_bound=args.ci_bound, max_trials=args.max_trials, drift_bound=args.drift_bound)
    timings = {}
    specs = _subnet_blocks(args) if args.subnet_blocks else None
    load_before = os.getloadavg()

    start = time.perf_counter()
    summary = run_profile(["local"], args.space, settings, store_path, trials=args.trials,
                          resolutions=args.resolution, sample_fraction=args.sample, seed=args.seed,
                          cache=ModelCache(), qc=qc, argv=["benchmarks/predictor_accuracy.py"],
                          specs=specs)
    device_result = next(iter(summary.devices.values()))
    timings["profile_s"] = time.perf_counter() - start
    console.print(f"profiled {summary.plan_keys} blocks in {timings['profile_s']:.0f} s")

    with MeasurementStore(store_path) as store, open_agent("local") as agent:
        table = build_table(store, runtime=args.runtime, threads=args.threads,
                            core_mask=settings.core_mask, precision=args.precision)
        space = table.load_space()
        start = time.perf_counter()
        subnet_trials = args.subnet_trials or args.trials
        correction = calibrate(agent, table, space, args.calibrate, args.seed + 1, store, subnet_trials,
                               resolutions=args.resolution)
        timings["calibrate_s"] = time.perf_counter() - start
        table.save(args.work / f"{tag}.parquet")
        start = time.perf_counter()
        eval_checks: list = []
        result = evaluate_on_device(agent, table, space, args.samples, args.seed + 2, store, subnet_trials,
                                    resolutions=args.resolution, checks=eval_checks)
        timings["evaluate_s"] = time.perf_counter() - start
        lut = LutPredictor(space).fit(table)
        weighted = with_weight_term(result, lut, space, correction, settings.precision)
        measured_invoke = with_measured_invoke(result, lut, correction)
        subnet_cv = store.quality_frame(device_id=table.device.device_id)
        subnet_cv = subnet_cv[subnet_cv["key"].str.startswith("subnet:")]["cv"].dropna()

    import lutnas.cli.evaluate as cli_eval
    from lutnas.cli.evaluate import print_reports

    cli_eval.console = console
    print_reports(result.reports, f"{args.samples} held-out {space.name} subnets, {args.runtime}, "
                                  f"{args.threads} thread(s), {args.trials} block / {subnet_trials} subnet "
                                  f"trials, correction from {correction['n']} subnets")
    block_cv = table.frame["cv"].dropna()
    console.print(f"trial-median CV: blocks median {block_cv.median():.3f} "
                  f"(p90 {block_cv.quantile(0.9):.3f}); "
                  f"subnets median {subnet_cv.median():.3f}; flags: "
                  + ", ".join(f"{k} {v}" for k, v in table.frame["flag"].value_counts().items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot = scatter_plot(RESULTS / f"predictor_accuracy_{tag}.png", result.measured_ms, result.predictions,
                        title=f"{space.name} on {table.device.device_id} ({args.runtime})")
    out = RESULTS / f"predictor_accuracy_{tag}.json"
    record = {
        # The command as run: the README's rows name the script, this names every flag.
        "command": " ".join(["benchmarks/predictor_accuracy.py", *sys.argv[1:]]),
        "space": args.space, "settings": settings.to_dict(), "trials": args.trials,
        "subnet_trials": subnet_trials,
        "calibrate": args.calibrate, "subnet_blocks": args.subnet_blocks, "samples": args.samples,
        "seed": args.seed,
        "drift_bound": args.drift_bound, "device": table.device.to_dict(), "host": platform.node(),
        "versions": tool_versions(), "table_keys": len(table), "correction": {
            k: correction[k] for k in ("scale", "intercept", "n", "rmse_ms")},
        "block_cv_median": float(block_cv.median()), "subnet_cv_median": float(subnet_cv.median()),
        "flags": {k: int(v) for k, v in table.frame["flag"].value_counts().items()},
        "timings_s": timings, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "qc": {"ci_bound": args.ci_bound, "max_trials": args.max_trials,
               "profile": device_result.summary()},
        "host_checks": correction.get("host_checks"),
        "evaluation_host_checks": [c.to_dict() for c in eval_checks],
        "bias_pct": {name: float(100 * ((p - result.measured_ms) / result.measured_ms).mean())
                     for name, p in result.predictions.items()},
        "correction_full": {k: v for k, v in correction.items() if k != "configs"},
        "correction_with_weights": weighted,
        "correction_with_measured_invoke": measured_invoke,
        "reports": [r.to_dict() for r in result.reports],
        "subnets": result.to_dict()["subnets"], "plot": plot.name,
        "target": {"within_5": 0.95, "mape": 2.0},
    }
    # How much of the held-out error is the held-out figures' own noise (heldout_noise.py).
    from heldout_noise import analyse

    record["heldout_noise"] = noise = analyse(record, args.work, tag)
    console.print(f"held-out figures' noise: SE {noise['figure_se_median_pct']:.2f}% (median); a "
                  f"perfect predictor would be within ±5% for {noise['within_5_perfect_predictor']:.0%}; "
                  f"the correction's own spread {noise['predictor_own_sd_pct']:.2f}%")
    out.write_text(json.dumps(record, indent=1))
    console.print(f"wrote {out} and {plot}")


if __name__ == "__main__":
    main()
