"""Export throughput: warm blocks per minute per format, cold start apart, and whole 128 px subnets.

Exports `--blocks` of the plan's blocks into a fresh cache with the shared export pool, as
`profile-device` does, in two orders: a seeded random sample with every kind represented (few
neighbours share widths, so the converter's memo of JAX lowerings rarely helps: a pessimistic
rate), and a seeded window of consecutive plan blocks (the order profile-device exports a whole
plan in). Each file's sha256 is recorded, so a run with LUTNAS_EXPORT_SPEEDUPS=off can be compared
with one without, file by file. Cold start (spawning the workers, importing
torch and the converter) is timed on its own and then excluded from the warm rate; the end-to-end
rate (cold start included) is reported next to it. Then, for .tflite, whole subnets once their
blocks are exported (as after profiling): one, then `--workers` in parallel, stitched from the
block files (profiler/stitch.py). Every file is checked against PyTorch
as in real use. The host's load average is recorded next to every figure: on a shared 2-core host
the figures move with it.

    .venv/bin/python benchmarks/export_throughput.py --space elasticvit --blocks 100 --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lutnas.profiler.export import (
    FORMATS,
    ModelCache,
    export_many,
    export_subnets,
    shutdown_export_pool,
    tool_versions,
    warm_export_pool,
)
from lutnas.profiler.export_speedups import SWITCH_ENV
from lutnas.profiler.plan import make_plan
from lutnas.space import SearchSpace


def stratified_sample(specs: list, count: int, seed: int) -> list:
    rng = random.Random(seed)
    by_kind: dict[str, list] = {}
    for spec in specs:
        by_kind.setdefault(spec.kind, []).append(spec)
    sample = [rng.choice(group) for group in by_kind.values()]
    rest = [s for s in specs if s not in sample]
    sample += rng.sample(rest, max(0, min(len(rest), count - len(sample))))
    return sample


def plan_window(specs: list, count: int, seed: int) -> list:
    """`count` consecutive blocks of the plan from a seeded start: the order profile-device exports
    a plan in (by resolution, then stage), where neighbours share widths and so lowerings."""
    start = random.Random(seed).randrange(max(1, len(specs) - count + 1))
    return specs[start:start + count]


def load() -> float:
    """The 1-minute load average (runnable processes; this host has os.cpu_count() cores)."""
    return round(os.getloadavg()[0], 2)


def block_rates(sample: list, order: str, fmt: str, workers: int,
                plan_blocks: int) -> dict[str, object]:
    """Cold start, then the warm export of `sample` into a fresh cache; with each file's sha256,
    so runs with and without LUTNAS_EXPORT_SPEEDUPS=off can be compared file by file."""
    shutdown_export_pool()  # each row pays its own cold start and starts with empty memos
    with tempfile.TemporaryDirectory() as tmp:
        load_before = load()
        cold = warm_export_pool(workers, fmt)
        start = time.perf_counter()
        entries = export_many(sample, fmt, ModelCache(Path(tmp)), workers=workers)
        seconds = time.perf_counter() - start
    per_minute = len(sample) / seconds * 60
    return {
        "format": fmt, "order": order, "blocks": len(sample), "workers": workers,
        "cold_start_s": round(cold, 2), "warm_seconds": round(seconds, 2),
        "blocks_per_minute": round(per_minute, 1),
        "blocks_per_minute_with_cold_start": round(len(sample) / (seconds + cold) * 60, 1),
        "plan_blocks": plan_blocks,
        "projected_plan_minutes": round(plan_blocks / per_minute, 1),
        "load_before": load_before, "load_after": load(),
        "sha256": {key: entry.sha256 for key, entry in sorted(entries.items())},
    }


def subnet_times(space: SearchSpace, resolution: int, workers: int, seed: int) -> dict[str, object]:
    """Whole .tflite subnets once their blocks are exported (as after profiling): one subnet, then
    `workers` others in parallel, each stitched from its block files and checked against PyTorch
    (export_subnet). The blocks' own export is timed apart. Converting a subnet whole instead is
    benchmarks/subnet_stitch.py's comparison."""
    rng = random.Random(seed)
    configs = [dataclasses.replace(space.sample(rng), resolution=resolution)
               for _ in range(1 + workers)]
    blocks = [len(space.blocks_of(c)) for c in configs]
    with tempfile.TemporaryDirectory() as tmp:
        cache = ModelCache(Path(tmp))
        unique = list({s.key: s for c in configs for s in space.blocks_of(c)}.values())
        start = time.perf_counter()
        export_many(unique, "tflite", cache, workers=workers)
        blocks_s = time.perf_counter() - start
        load_before = load()
        start = time.perf_counter()
        export_subnets(space, configs[:1], "tflite", cache, workers)
        single = time.perf_counter() - start
        load_between = load()
        start = time.perf_counter()
        export_subnets(space, configs[1:], "tflite", cache, workers)
        parallel = time.perf_counter() - start
    return {
        "format": "tflite", "resolution": resolution, "assembly": "stitched",
        "unique_blocks": len(unique), "blocks_export_s": round(blocks_s, 1),
        "single_subnet_blocks": blocks[0], "single_subnet_seconds": round(single, 2),
        "parallel_subnets": workers, "parallel_subnet_blocks": blocks[1:],
        "parallel_seconds": round(parallel, 2),
        "parallel_seconds_per_subnet": round(parallel / workers, 2),
        "load_before": load_before, "load_between": load_between, "load_after": load(),
    }


def show(title: str, rows: list[dict[str, object]]) -> None:
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="elasticvit")
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--formats", nargs="+", default=["onnx", "tflite"], choices=list(FORMATS))
    parser.add_argument("--subnet-resolution", type=int, default=128,
                        help="resolution of the whole subnets exported (0: skip them)")
    parser.add_argument("--order", nargs="+", default=["sample", "plan"], choices=["sample", "plan"],
                        help="sample: one block of every kind, the rest at random (a pessimistic "
                             "order); plan: consecutive blocks as profile-device exports them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="benchmarks/results/export_throughput.json")
    args = parser.parse_args()

    space = SearchSpace.load(args.space)
    plan = make_plan(space)
    orders = {"sample": stratified_sample(list(plan.blocks), args.blocks, args.seed),
              "plan": plan_window(list(plan.blocks), args.blocks, args.seed)}
    rows = [block_rates(orders[order], order, fmt, args.workers, len(plan.blocks))
            for fmt in args.formats for order in args.order]
    show(f"block export, {args.space}, {args.workers} workers, {os.cpu_count()} cores",
         [{k: v for k, v in row.items() if k != "sha256"} for row in rows])
    subnets = None
    if args.subnet_resolution and "tflite" in args.formats:
        subnets = subnet_times(space, args.subnet_resolution, args.workers, args.seed)
        show("whole subnets (.tflite, stitched from cached blocks)", [subnets])
    shutdown_export_pool()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(
        {"space": args.space, "workers": args.workers, "cpu_count": os.cpu_count(),
         "speedups": os.environ.get(SWITCH_ENV, "on") or "on",
         "versions": tool_versions(), "results": rows, "subnets": subnets}, indent=2) + "\n")


if __name__ == "__main__":
    main()
