"""Search speed on a REAL table: `lutnas predict`, `lutnas table show` and a default `lutnas search`
on `elasticvit`, timed as a user runs them (fresh processes, wall and CPU), plus where an in-process
search spends its time and evolution against random search at the same number of evaluations.

The table is ElasticViT's Pixel 1 table (the nn-Meter excerpt shipped with the tests, imported by
`lutnas table import-nnmeter`): 112 of elasticvit's 3,070 blocks measured on the phone, the rest
priced by the search's default `--fill analytic`, fitted on those. `--table` takes any other table
(e.g. one profiled on this host). Issue 13's targets: predict <= 0.5 s, table show <= 1 s, default
search <= 10 s. This host is shared: each run records the load average and the CPU time.

    .venv/bin/python benchmarks/search_speed.py                 # defaults of `lutnas search`
    .venv/bin/python benchmarks/search_speed.py --repeats 1 --seeds 1   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
EXCERPT = ROOT / "tests" / "tables" / "data" / "nnmeter_pixel1_excerpt.json"
LUTNAS = [str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "lutnas")]


def timed_command(argv: list[str], repeats: int) -> dict[str, Any]:
    """Wall and CPU seconds (children's user + system) of `lutnas ARGV`, `repeats` fresh processes."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run(LUTNAS + argv, capture_output=True, text=True, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if result.returncode:
            raise SystemExit(f"lutnas {' '.join(argv)} failed: {result.stderr.strip()[-400:]}")
    return {"argv": argv, "wall_s": walls, "cpu_s": cpus, "wall_min_s": min(walls),
            "wall_median_s": statistics.median(walls), "cpu_median_s": statistics.median(cpus),
            "load_avg_1min_after": os.getloadavg()[0]}


def in_process(table: Path, target_ms: float, seeds: int, compare_random: bool) -> dict[str, Any]:
    """Where a default search spends its time (one process: model, cost grids, then per seed)."""
    from lutnas.search.constraints import Constraints, CostModel
    from lutnas.search.evolution import EvolutionSettings, evolve, random_search
    from lutnas.search.objectives import ProxyObjective
    from lutnas.search.pipeline import load_latency_model
    from lutnas.space import SearchSpace

    clock = [time.perf_counter(), time.process_time()]

    def lap() -> dict[str, float]:
        now = [time.perf_counter(), time.process_time()]
        out = {"wall_s": now[0] - clock[0], "cpu_s": now[1] - clock[1]}
        clock[:] = now
        return out

    space = SearchSpace.load("elasticvit")
    predictor, _, estimated = load_latency_model(table, "lut", space, "analytic")
    steps = {"latency model (table, analytic fill)": lap()}
    cost_model = CostModel(space, predictor)
    cost_model.costs([space.smallest()])  # the LUT index is built on first use
    steps["cost model (LUT, MACs and params grids)"] = lap()
    runs = []
    for seed in range(seeds):
        fresh = CostModel.__new__(CostModel)  # same grids, empty memo: every seed pays its pricing
        fresh.__dict__.update(cost_model.__dict__)
        fresh._memo, fresh.latency_calls, fresh.configs_priced = {}, 0, 0
        lap()
        result = evolve(space, fresh, ProxyObjective("mmacs"), Constraints(target_ms, 0.5),
                        EvolutionSettings(seed=seed))
        run = {"seed": seed, "evolve": lap(), "evaluations": result.evaluations,
               "best_mmacs": result.best.score, "best_ms": result.best.latency_ms,
               "stats": result.stats}
        if compare_random:
            rand = random_search(space, cost_model, ProxyObjective("mmacs"),
                                 Constraints(target_ms, 0.5), result.evaluations, seed=seed)
            run.update(random=lap(), random_best_mmacs=rand.best.score)
        runs.append(run)
    return {"steps": steps, "runs": runs, "blocks_estimated": len(estimated)}


def imported_table(folder: Path) -> Path:
    out = folder / "pixel1.parquet"
    timed_command(["table", "import-nnmeter", str(EXCERPT), "--space", "elasticvit", "--device-name",
                   "pixel1", "--runtime", "tflite", "--out", str(out)], 1)
    return out


def report(console: Console, commands: dict[str, Any], inner: dict[str, Any]) -> None:
    summary = Table(title="elasticvit on ElasticViT's Pixel 1 table (+ analytic fill)")
    for column in ("measure", "wall median (s)", "wall min (s)", "CPU median (s)", "target (s)"):
        summary.add_column(column, justify="left" if column == "measure" else "right")
    for name, (timing, target) in commands.items():
        summary.add_row(name, f"{timing['wall_median_s']:.2f}", f"{timing['wall_min_s']:.2f}",
                        f"{timing['cpu_median_s']:.2f}", f"{target:g}")
    for name, step in inner["steps"].items():
        summary.add_row(f"  in process: {name}", f"{step['wall_s']:.2f}", "", f"{step['cpu_s']:.2f}", "")
    for run in inner["runs"]:
        line = (f"  in process: evolve, seed {run['seed']} ({run['evaluations']} evaluations, best "
                f"{run['best_mmacs']:.1f} MMACs")
        if "random_best_mmacs" in run:
            line += f"; random {run['random_best_mmacs']:.1f}"
        summary.add_row(line + ")", f"{run['evolve']['wall_s']:.2f}", "", f"{run['evolve']['cpu_s']:.2f}", "")
    console.print(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, help="a table of elasticvit (default: the Pixel 1 "
                                                   "excerpt, imported now)")
    parser.add_argument("--target-ms", type=float, default=40.0)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per command")
    parser.add_argument("--seeds", type=int, default=3, help="in-process searches")
    parser.add_argument("--no-random", action="store_true", help="skip the random-search baseline")
    args = parser.parse_args()
    console = Console(width=150)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        table = args.table or imported_table(Path(tmp))
        out = Path(tmp) / "search"
        commands = {
            "lutnas predict --config elasticvit:S1": (timed_command(
                ["predict", "--table", str(table), "--config", "elasticvit:S1"], args.repeats), 0.5),
            "lutnas table show": (timed_command(["table", "show", str(table)], args.repeats), 1.0),
            f"lutnas search (defaults, --target-ms {args.target_ms:g}, --no-export)": (timed_command(
                ["search", "--space", "elasticvit", "--table", str(table), "--target-ms",
                 f"{args.target_ms:g}", "--no-export", "--out", str(out)], args.repeats), 10.0),
        }
        shutil.rmtree(out, ignore_errors=True)
        inner = in_process(table, args.target_ms, args.seeds, not args.no_random)
    report(console, commands, inner)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "search_speed.json"
    path.write_text(json.dumps({
        "space": "elasticvit",
        "table": str(args.table) if args.table else "nn-Meter Pixel 1 excerpt (338 keys, 112 blocks of "
                                                    "elasticvit) + analytic fill",
        "target_ms": args.target_ms,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg())},
        "commands": {name: {**timing, "target_s": target} for name, (timing, target) in commands.items()},
        "in_process": inner,
        "evolution_beats_random": (None if args.no_random else int(np.sum(
            [r["best_mmacs"] > r["random_best_mmacs"] for r in inner["runs"]]))),
    }, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
