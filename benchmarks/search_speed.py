"""Search speed: vectorised latency evaluations per second, wall time of a default search, and
evolution against random search at the same number of evaluations (best objective, several seeds).

The elasticvit table here is SYNTHETIC: every block's latency is 20 us + MACs at 20 GMAC/s + bytes
moved at 10 GB/s (complexity-scaled, no device measured it), because profiling elasticvit's 3,454
blocks takes hours on this host. Speed figures do not depend on where the numbers came from; the
search-quality comparison uses the proxy objective (MMACs), so no supernet is needed.

    .venv/bin/python benchmarks/search_speed.py                     # defaults of `lutnas search`
    .venv/bin/python benchmarks/search_speed.py --generations 10 --seeds 3   # quicker
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lutnas.device_agents.base import DeviceInfo
from lutnas.predictors.lut import LutPredictor
from lutnas.search.constraints import Constraints, CostModel, achievable_range
from lutnas.search.evolution import EvolutionSettings, evolve, random_search
from lutnas.search.objectives import ProxyObjective
from lutnas.space import SearchSpace, block_complexity
from lutnas.tables.table import LatencyTable

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_table(space: SearchSpace, path: Path) -> Path:
    rows = {}
    for spec in space.unique_blocks():
        cost = block_complexity(spec)
        ms = 0.02 + cost.macs / 2e7 + cost.bytes_moved / 1e7
        rows[spec.key] = {"median_ms": ms, "mean_ms": ms, "std_ms": 0.0, "min_ms": ms, "p90_ms": ms,
                          "trials": 1, "cv": 0.0, "flag": "settled", "kind": spec.kind,
                          "source": "synthetic:complexity", "operator_ms": None}
    device = DeviceInfo(device_id="synthetic-complexity", kind="host", model="complexity model")
    settings = {"device_id": device.device_id, "runtime": "tflite", "threads": 1, "core_mask": "all",
                "accelerator": "cpu"}
    LatencyTable.from_latencies(rows, device, settings, space.name, {"synthetic": True}).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="elasticvit")
    parser.add_argument("--population", type=int, default=512)
    parser.add_argument("--generations", type=int, default=40)
    parser.add_argument("--parents", type=int, default=256)
    parser.add_argument("--mutations", type=int, default=128)
    parser.add_argument("--crossovers", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--target-fraction", type=float, default=0.35,
                        help="target = fastest + fraction x (slowest - fastest)")
    parser.add_argument("--batch", type=int, default=10_000, help="configs per latency batch")
    args = parser.parse_args()
    console = Console()
    space = SearchSpace.load(args.space)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        table_path = synthetic_table(space, Path(tmp) / "synthetic.parquet")
        table_seconds = time.perf_counter() - started
        started = time.perf_counter()
        predictor = LutPredictor.load(table_path, space)
        index_seconds = time.perf_counter() - started

    rng = random.Random(0)
    configs = [space.sample(rng) for _ in range(args.batch)]
    predictor.predict(configs[:10])
    timings, encoded_timings = [], []
    for _ in range(3):
        t = time.perf_counter()
        ms = predictor.predict(configs)
        timings.append(time.perf_counter() - t)
    encoded = predictor.index_.encode(configs)
    for _ in range(3):
        t = time.perf_counter()
        predictor.predict_encoded(encoded)
        encoded_timings.append(time.perf_counter() - t)
    per_s = args.batch / min(timings)
    per_s_encoded = args.batch / min(encoded_timings)

    started = time.perf_counter()
    cost_model = CostModel(space, predictor)
    cost_model_seconds = time.perf_counter() - started
    span = achievable_range(space, cost_model, random.Random(0))
    target = span.fastest_ms + args.target_fraction * (span.slowest_ms - span.fastest_ms)
    window = 0.05 * target
    constraints = Constraints(target, window)
    objective = ProxyObjective("mmacs")

    rows = []
    for seed in range(args.seeds):
        settings = EvolutionSettings(args.population, args.generations, args.parents, args.mutations,
                                     args.crossovers, 0.2, seed)
        fresh = CostModel.__new__(CostModel)  # same grids, empty memo: every seed pays its pricing
        fresh.__dict__.update(cost_model.__dict__)
        fresh._memo, fresh.latency_calls, fresh.configs_priced = {}, 0, 0
        t = time.perf_counter()
        evo = evolve(space, fresh, objective, constraints, settings)
        evo_seconds = time.perf_counter() - t
        t = time.perf_counter()
        rand = random_search(space, cost_model, objective, constraints, evo.evaluations, seed=seed)
        rand_seconds = time.perf_counter() - t
        rows.append({"seed": seed, "evaluations": evo.evaluations, "evolution_best": evo.best.score,
                     "random_best": rand.best.score, "evolution_seconds": evo_seconds,
                     "random_seconds": rand_seconds, "evolution_stats": evo.stats})
        console.print(f"seed {seed}: evolution {evo.best.score:.1f} vs random {rand.best.score:.1f} "
                      f"MMACs over {evo.evaluations} evaluations ({evo_seconds:.1f} s)")

    summary = Table(title=f"search speed on {args.space} (SYNTHETIC complexity-scaled table)")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("LUT index build (s)", f"{index_seconds:.2f}")
    summary.add_row("cost model build: params/MMACs grids (s)", f"{cost_model_seconds:.2f}")
    summary.add_row(f"predict(list of {args.batch} configs), evals/s", f"{per_s:,.0f}")
    summary.add_row(f"predict_encoded({args.batch}), evals/s", f"{per_s_encoded:,.0f}")
    summary.add_row("target / window (ms)", f"{target:.2f} / {window:.2f}")
    summary.add_row("default search wall time, median over seeds (s)",
                    f"{statistics.median(r['evolution_seconds'] for r in rows):.1f}")
    summary.add_row("evaluations per search", f"{rows[0]['evaluations']}")
    evo_best = [r["evolution_best"] for r in rows]
    rand_best = [r["random_best"] for r in rows]
    summary.add_row("best proxy MMACs, evolution (mean ± sd)",
                    f"{np.mean(evo_best):.1f} ± {np.std(evo_best):.1f}")
    summary.add_row("best proxy MMACs, random (mean ± sd)",
                    f"{np.mean(rand_best):.1f} ± {np.std(rand_best):.1f}")
    summary.add_row("seeds where evolution > random", f"{sum(e > r for e, r in zip(evo_best, rand_best))}"
                                                      f"/{len(rows)}")
    console.print(summary)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "search_speed.json"
    out.write_text(json.dumps({
        "space": args.space, "table": "synthetic: 20 us + MACs at 20 GMAC/s + bytes at 10 GB/s per block",
        "host": platform.processor() or platform.machine(), "table_build_seconds": table_seconds,
        "lut_index_seconds": index_seconds, "cost_model_seconds": cost_model_seconds,
        "batch": args.batch, "predict_evals_per_s": per_s, "predict_encoded_evals_per_s": per_s_encoded,
        "latency_range_ms": [span.fastest_ms, span.slowest_ms], "target_ms": target,
        "window_ms": window, "predicted_sample_ms_median": float(np.median(ms)),
        "settings": vars(args), "runs": rows,
    }, indent=2, default=str) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
