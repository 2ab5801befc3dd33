"""Accuracy of the learned, analytic, adaptive and transfer predictors on this host (issue 6).

Companion of `predictor_accuracy.py` (the LUT's benchmark, another owner): this script reports
- learned and analytic predictors trained on 10/25/50% of a plan's blocks: block MAPE on the rest,
  and whole subnets measured end to end (share within ±10%, MAPE, Spearman) from the table completed
  by the predictor (measured where measured, predicted elsewhere), with the whole-model correction
  (the one `Correction` of every block-sum predictor) fitted on calibration subnets;
- adaptive profiling against random sampling at equal numbers of measured blocks (device time);
- transfer tflite -> onnxruntime on this host (two runtimes standing in for two devices).

Timing is in-process (one onnxruntime / LiteRT session per model, rounds interleaved in a shuffled
order, median of round medians): fast enough for a benchmark under ten minutes on 2 shared cores,
but one process's offset is shared by every block, unlike the profiling loop's fresh-process trials.

    .venv/bin/python benchmarks/predictor_accuracy_learned.py --space tiny --out results.json
    .venv/bin/python benchmarks/predictor_accuracy_learned.py --ofa /work/shared/tables/ofa-note10
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from lutnas.predictors.adaptive import covering_sample
from lutnas.predictors.analytic import AnalyticPredictor
from lutnas.predictors.blocksum import BlockSumPredictor
from lutnas.predictors.learned import LearnedPredictor
from lutnas.predictors.transfer import TransferPredictor, choose_samples, transfer_report
from lutnas.profiler.adaptive_run import _runner_for, measure_in_process, run_adaptive
from lutnas.profiler.export import RUNTIME_FORMATS, ModelCache, export_subnet
from lutnas.space import SearchSpace, SubnetConfig


def measure_subnets(space: SearchSpace, configs: list[SubnetConfig], runtime: str, cache: ModelCache,
                    runs: int, rounds: int) -> np.ndarray:
    """Whole subnets timed like the blocks (same process, same protocol)."""
    from lutnas.space import BlockSpec

    runners = []
    for config in configs:
        exported = export_subnet(space, config, RUNTIME_FORMATS[runtime], cache)
        # A stand-in spec with the subnet's input shape lets _runner_for build the feed.
        stem = space.blocks_of(config)[0]
        runners.append(_runner_for(runtime, exported.path, BlockSpec.parse(stem.key)))
    for run in runners:
        for _ in range(3):
            run()
    per_round: list[list[float]] = [[] for _ in runners]
    order = list(range(len(runners)))
    rng = random.Random(1)
    for _ in range(rounds):
        rng.shuffle(order)
        for i in order:
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                runners[i]()
                samples.append((time.perf_counter() - start) * 1e3)
            per_round[i].append(statistics.median(samples))
    return np.array([statistics.median(v) for v in per_round])


def whole_subnet_scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    rel = np.abs(predicted - measured) / measured
    return {"within_10pct": float(np.mean(rel <= 0.10)), "mape": float(rel.mean()),
            "spearman": float(spearmanr(predicted, measured).statistic)}


class CompletedTable(BlockSumPredictor):
    """LUT over a table completed by a predictor: measured where measured, predicted elsewhere."""

    name = "completed"
    fitted_attributes = ()  # nothing to learn: the table is given

    def __init__(self, space: SearchSpace, measured: dict[str, float], fill: Any | None) -> None:
        super().__init__(space)
        self.measured, self.fill = measured, fill

    def _predict_blocks(self, specs, use_measured=True):
        specs = list(specs)
        missing = [s for s in specs if getattr(s, "key", s) not in self.measured]
        filled = {}
        if missing:
            ms = self.fill.predict_blocks(missing)
            filled = {getattr(s, "key", s): m for s, m in zip(missing, ms)}
        out = np.array([self.measured.get(getattr(s, "key", s), filled.get(getattr(s, "key", s), np.nan))
                        for s in specs])
        return out, np.zeros(len(out))


def evaluate_completion(space, measured_all, train_keys, fill, cal, cal_ms, test, test_ms) -> dict[str, Any]:
    predictor = CompletedTable(space, {k: measured_all[k] for k in train_keys}, fill)
    predictor.calibrate(cal, cal_ms)
    return whole_subnet_scores(predictor.predict(test), test_ms)


def recorded_ofa(directory: Path, seeds: int, out: Path) -> None:
    """The learned block predictor on real phone measurements (OFA's Note10 lookup tables, imported
    as lutnas MBConv/conv blocks): fit on 10/25/50% of the blocks, per share `seeds` random splits;
    held-out share within +-5/10%, MAPE and the empirical coverage of the 90% conformal interval.
    No measuring: these numbers repeat exactly, unlike the host's in-process timings."""
    from lutnas.predictors.features import measured_latencies
    from lutnas.tables.ofa import import_ofa_yaml

    latencies = measured_latencies(import_ofa_yaml(sorted(directory.glob("*_lookup_table.yaml")),
                                                   keep_unmapped=False))
    keys = np.array(sorted(latencies.index))
    rows = []
    print(f"OFA Note10: {len(keys)} blocks\nshare seed  +-5%  +-10%  MAPE  cov90  width  methods")
    for share in (0.10, 0.25, 0.50):
        for seed in range(seeds):
            train = np.random.default_rng(seed).random(len(keys)) < share
            start = time.perf_counter()
            predictor = LearnedPredictor(random_state=seed).fit({k: latencies[k] for k in keys[train]})
            ms, lower, upper = predictor.predict_blocks(list(keys[~train]), interval=0.9, use_measured=False)
            truth = latencies[keys[~train]].to_numpy()
            error = np.abs(ms / truth - 1.0)
            row = {"share": share, "seed": seed, "train_blocks": int(train.sum()),
                   "within5": float(np.mean(error <= 0.05)), "within10": float(np.mean(error <= 0.10)),
                   "mape": float(error.mean()),
                   "coverage90": float(np.mean((lower <= truth) & (truth <= upper))),
                   "width90": float(np.mean((upper - lower) / ms)), "fit_s": time.perf_counter() - start,
                   "methods": {k: v["method"] for k, v in predictor.methods().items()}}
            rows.append(row)
            print(f"{share:5.0%} {seed:4d} {row['within5']:5.1%} {row['within10']:5.1%} {row['mape']:5.1%} "
                  f"{row['coverage90']:5.1%} {row['width90']:5.1%}  {row['methods']}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"source": str(directory), "blocks": len(keys), "rows": rows}, indent=1))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--resolution", type=int, help="one resolution of the space (default all)")
    parser.add_argument("--subnets", type=int, default=40, help="subnets measured end to end")
    parser.add_argument("--calibration", type=int, default=10, help="of which fit the overhead")
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--transfer-from", default="tflite", help="source runtime ('' to skip)")
    parser.add_argument("--transfer-samples", type=int, default=50)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache", type=Path, help="model cache (default $LUTNAS_CACHE)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the measurements saved beside --out by a previous run")
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/predictor_accuracy_learned.json"))
    parser.add_argument("--ofa", type=Path, help="instead of measuring: the learned predictor on OFA "
                        "lookup tables in this folder (real phone data), written beside --out")
    args = parser.parse_args()
    if args.ofa:
        recorded_ofa(args.ofa, 3, args.out.with_name(args.out.stem + "_ofa_note10.json"))
    else:
        measure_and_report(args)


def _sample_configs(space: SearchSpace, count: int, resolution: int | None, seed: int) -> list:
    """`count` distinct random subnets (at `resolution` when given)."""
    rng = random.Random(seed)
    configs, seen = [], set()
    while len(configs) < count:
        config = space.sample(rng)
        if resolution:
            config = SubnetConfig(resolution, config.stem, config.stages)
        if config.to_json() not in seen:
            seen.add(config.to_json())
            configs.append(config)
    return configs


def _measure_or_reuse(args: argparse.Namespace, space: SearchSpace, configs: list, plan: list,
                      cache: ModelCache) -> dict[str, Any]:
    """Blocks (key -> ms), per-block seconds and subnet ms: measured, or reused with --reuse."""
    saved_path = args.out.with_suffix(".measurements.json")
    saved = json.loads(saved_path.read_text()) if args.reuse and saved_path.is_file() else {}
    if saved.get("plan") == [b.key for b in plan]:
        print(f"reusing measurements of {saved_path}", flush=True)
        return saved
    t0 = time.time()
    blocks = measure_in_process(plan, args.runtime, cache, runs=args.runs, rounds=args.rounds)
    block_seconds = (time.time() - t0) / len(plan)
    subnet_ms = measure_subnets(space, configs, args.runtime, cache, args.runs, args.rounds)
    saved = {"plan": [b.key for b in plan], "blocks": blocks, "block_seconds": block_seconds,
             "subnet_ms": subnet_ms.tolist()}
    saved_path.write_text(json.dumps(saved))
    return saved


def _fraction_rows(space: SearchSpace, plan: list, blocks: dict[str, float], seed: int,
                   split: tuple) -> list[dict[str, Any]]:
    """Learned and analytic predictors fitted on 10/25/50% of the blocks (random or covering)."""
    rows = []
    for share in (0.10, 0.25, 0.50):
        n = max(5, round(share * len(plan)))
        for sampling in ("random", "covering"):
            if sampling == "random":
                train = random.Random(seed).sample([b.key for b in plan], n)
            else:
                train = [b.key for b in covering_sample(plan, n, seed)]
            held = [b.key for b in plan if b.key not in set(train)]
            truth = np.array([blocks[k] for k in held])
            for name, maker in (("learned", LearnedPredictor), ("analytic", AnalyticPredictor)):
                predictor = maker(space).fit({k: blocks[k] for k in train})
                block_pred = predictor.predict_blocks(held, use_measured=False)
                row = {"share": share, "sampling": sampling, "predictor": name, "measured": n,
                       "block_mape": float(np.mean(np.abs(block_pred - truth) / truth))}
                row.update(evaluate_completion(space, blocks, train, predictor, *split))
                rows.append(row)
    return rows


def _adaptive_rows(space: SearchSpace, plan: list, blocks: dict[str, float], block_seconds: float,
                   seed: int, split: tuple) -> list[dict[str, Any]]:
    """Adaptive vs covering-then-random at equal measured-block budgets (device time charged per
    block at this run's in-process cost; a phone's fresh-process protocol costs far more per block)."""
    rows = []
    for share in (0.10, 0.25):
        n = max(8, round(share * len(plan)))
        clock = {"now": 0.0}

        def measure(specs, clock=clock):
            clock["now"] += block_seconds * len(specs)
            return {s.key: blocks[s.key] for s in specs}

        result = run_adaptive(plan, measure, budget_minutes=n * block_seconds / 60 + 1e-9,
                              error_bound=0.001, initial=max(10, n // 2), batch=max(2, n // 10),
                              seed=seed, clock=lambda clock=clock: clock["now"])
        row = {"share": share, "measured": len(result.measured), "device_s": clock["now"],
               "stop": result.decision.reason}
        row.update(evaluate_completion(space, blocks, list(result.measured), result.predictor, *split))
        rows.append(row)
    return rows


def _transfer(args: argparse.Namespace, space: SearchSpace, plan: list, blocks: dict[str, float],
              saved: dict[str, Any], cache: ModelCache, split: tuple) -> dict[str, Any]:
    """Transfer from another runtime's measurements with K blocks of this one, vs a global scale."""
    cal, cal_ms, test, test_ms = split
    print(f"transfer: measuring the plan with {args.transfer_from} ...", flush=True)
    source = saved.get(f"source_{args.transfer_from}")
    if source is None:
        source = measure_in_process(plan, args.transfer_from, cache, runs=args.runs, rounds=args.rounds)
        saved[f"source_{args.transfer_from}"] = source
        args.out.with_suffix(".measurements.json").write_text(json.dumps(saved))
    k = min(args.transfer_samples, len(plan) - 5)
    picked = {s.key: blocks[s.key] for s in choose_samples(source, k, args.seed)}
    transfer = TransferPredictor(space, random_state=args.seed).fit(source, picked)
    report = transfer_report(transfer, blocks)
    transfer.calibrate(cal, cal_ms)
    report["whole_subnet"] = whole_subnet_scores(transfer.predict(test), test_ms)
    # Naive transfer for comparison: one global scale from the same K blocks.
    ratio = float(np.median([blocks[key] / source[key] for key in picked]))
    naive = CompletedTable(space, {}, None)
    naive._predict_blocks = lambda specs, use_measured=True: (
        np.array([picked.get(str(s), source[str(s)] * ratio) for s in specs]), np.zeros(len(specs)))
    naive.calibrate(cal, cal_ms)
    report["whole_subnet_global_scale"] = whole_subnet_scores(naive.predict(test), test_ms)
    return {"from": args.transfer_from, "to": args.runtime, **report}


def measure_and_report(args: argparse.Namespace) -> None:
    """The host benchmark: measure blocks and subnets in-process, then score every predictor."""
    started = time.time()
    space = SearchSpace.load(args.space)
    cache = ModelCache(args.cache)
    configs = _sample_configs(space, args.subnets, args.resolution, args.seed)
    # The plan: every block these subnets execute (for a sampled large space, the relevant part).
    plan = list({b.key: b for c in configs for b in space.blocks_of(c)}.values())
    print(f"{args.space}: {len(plan)} unique blocks in {len(configs)} subnets; measuring "
          f"({args.runtime}, in-process) ...", flush=True)
    saved = _measure_or_reuse(args, space, configs, plan, cache)
    blocks, subnet_ms = saved["blocks"], np.array(saved["subnet_ms"])
    split = (configs[:args.calibration], subnet_ms[:args.calibration],
             configs[args.calibration:], subnet_ms[args.calibration:])
    results: dict[str, Any] = {"space": args.space, "runtime": args.runtime, "blocks": len(plan),
                               "subnets": len(configs), "calibration": args.calibration,
                               "subnet_ms_range": [float(subnet_ms.min()), float(subnet_ms.max())]}
    full = CompletedTable(space, blocks, None).calibrate(split[0], split[1])
    results["lut_all_blocks_measured"] = whole_subnet_scores(full.predict(split[2]), split[3])
    results["fractions"] = _fraction_rows(space, plan, blocks, args.seed, split)
    results["adaptive"] = _adaptive_rows(space, plan, blocks, saved["block_seconds"], args.seed, split)
    if args.transfer_from:
        results["transfer"] = _transfer(args, space, plan, blocks, saved, cache, split)
    results["wall_s"] = time.time() - started
    _print(results)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


def _print(r: dict[str, Any]) -> None:
    print(f"\n{r['space']} / {r['runtime']}: {r['blocks']} blocks, {r['subnets']} subnets "
          f"({r['calibration']} calibrate the overhead), subnet ms {r['subnet_ms_range']}")
    lut = r["lut_all_blocks_measured"]
    print(f"LUT, all blocks measured: within ±10% {lut['within_10pct']:.0%}  MAPE {lut['mape']:.1%}  "
          f"Spearman {lut['spearman']:.3f}")
    print(f"{'predictor':<9} {'sampling':<9} {'share':>5} {'blocks':>6} {'blockMAPE':>9} "
          f"{'±10%':>5} {'netMAPE':>7} {'Spearman':>8}")
    for row in r["fractions"]:
        print(f"{row['predictor']:<9} {row['sampling']:<9} {row['share']:>5.0%} {row['measured']:>6} "
              f"{row['block_mape']:>9.1%} {row['within_10pct']:>5.0%} {row['mape']:>7.1%} "
              f"{row['spearman']:>8.3f}")
    for row in r["adaptive"]:
        print(f"adaptive  {row['measured']:>4} blocks ({row['device_s']:.1f} device-s): within ±10% "
              f"{row['within_10pct']:.0%}  MAPE {row['mape']:.1%}  Spearman {row['spearman']:.3f}")
    if "transfer" in r:
        t = r["transfer"]
        print(f"transfer {t['from']} -> {t['to']} with {t['samples']} blocks: held-out block MAPE "
              f"{t['mape']:.1%}, within ±10% {t['within_10pct']:.0%}; whole subnets within ±10% "
              f"{t['whole_subnet']['within_10pct']:.0%} (global scale: "
              f"{t['whole_subnet_global_scale']['within_10pct']:.0%})")


if __name__ == "__main__":
    main()
