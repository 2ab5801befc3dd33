"""How fast the host profiles: blocks per minute per runtime, the spread of trial CVs, and the
projected time to profile all of `elasticvit` at one resolution and at every resolution.

Measures a seeded sample of elasticvit's blocks with the real loop (fresh worker process per batch,
shuffled trials) on this host, QC off (one set of trials per block) so the rate is the protocol's
own. Prints a table and writes benchmarks/results/profile_throughput.json.

    .venv/bin/python benchmarks/profile_throughput.py --blocks 8 --trials 5 --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lutnas.device_agents.base import ModelFile, RunSettings, parse_cores
from lutnas.device_agents.local import LocalAgent
from lutnas.profiler.export import RUNTIME_FORMATS, ModelCache, export_many
from lutnas.profiler.plan import make_plan
from lutnas.profiler.run import QualitySettings, measure_keys
from lutnas.space import SearchSpace
from lutnas.tables.store import MeasurementStore

OUT = Path(__file__).parent / "results" / "profile_throughput.json"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="elasticvit")
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime", "tflite", "torch"])
    parser.add_argument("--cores", default="0")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    space = SearchSpace.load(args.space)
    one_res = make_plan(space, [space.resolutions[0]]).blocks
    all_res = make_plan(space).blocks
    plan = make_plan(space, [space.resolutions[0]], limit=args.blocks, seed=args.seed)
    cache = ModelCache()
    agent = LocalAgent()
    cores = parse_cores(args.cores) if args.cores else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = MeasurementStore(Path(tmp) / "bench.sqlite")
        for runtime in args.runtimes:
            start = time.perf_counter()
            entries = export_many(plan.blocks, RUNTIME_FORMATS[runtime], cache, workers=2)
            export_s = time.perf_counter() - start
            files = {k: ModelFile(e.path, k, e.sha256) for k, e in entries.items()}
            settings = RunSettings(runtime=runtime, threads=1, cores=cores, warmup=args.warmup,
                                   runs=args.runs)
            run_id = store.start_run(agent.info().device_id, settings, space.name, "block", [])
            qc = QualitySettings(cv_bound=1e9, max_remeasure=0, reference_every=8)
            start = time.perf_counter()
            result = measure_keys(agent, files, {s.key: s.kind for s in plan.blocks}, settings, args.trials,
                                  store, run_id, qc)
            measure_s = time.perf_counter() - start
            cvs, figures = result.cvs, list(result.figures_ms.values())
            per_min = len(files) / (measure_s / 60)
            export_per_block = export_s / len(files)
            project = {name: (len(blocks) / per_min * 60 + export_per_block * len(blocks)) / 3600
                       for name, blocks in (("one_resolution", one_res), ("all_resolutions", all_res))}
            rows.append({
                "runtime": runtime, "blocks": len(files), "trials": args.trials, "runs": args.runs,
                "warmup": args.warmup, "measure_s": measure_s, "blocks_per_min": per_min,
                "export_s_per_block_cold_or_cached": export_per_block,
                "measurements": result.measurements, "drift_events": result.drift_events,
                "cv_median": statistics.median(result.cvs) if result.cvs else None,
                "cv_p10": percentile(result.cvs, 0.1), "cv_p90": percentile(result.cvs, 0.9),
                "cv_max": max(result.cvs) if result.cvs else None,
                "share_cv_above_5pct": sum(c > 0.05 for c in cvs) / len(cvs) if cvs else None,
                "median_block_ms": statistics.median(figures) if figures else None,
                "projected_hours_one_resolution": project["one_resolution"],
                "projected_hours_all_resolutions": project["all_resolutions"],
            })
    table = Table(title=f"profile throughput on {platform.node()} ({os.cpu_count()} cores), {space.name}: "
                        f"{len(one_res)} blocks at r={space.resolutions[0]}, "
                        f"{len(all_res)} at all resolutions")
    for column in ("runtime", "blocks", "blocks/min", "export s/block", "CV p10/median/p90", "CV>5%",
                   "median block ms", "h one res", "h all res"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["runtime"], str(r["blocks"]), f"{r['blocks_per_min']:.1f}",
                      f"{r['export_s_per_block_cold_or_cached']:.2f}",
                      f"{r['cv_p10']:.1%} / {r['cv_median']:.1%} / {r['cv_p90']:.1%}",
                      f"{r['share_cv_above_5pct']:.0%}", f"{r['median_block_ms']:.3f}",
                      f"{r['projected_hours_one_resolution']:.1f}",
                      f"{r['projected_hours_all_resolutions']:.1f}")
    Console(width=200).print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"space": space.name, "blocks_one_resolution": len(one_res),
                               "blocks_all_resolutions": len(all_res), "host_cores": os.cpu_count(),
                               "results": rows}, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
