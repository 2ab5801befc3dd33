"""Export throughput: blocks per minute for each format, and the projected time for a whole plan.

Exports a seeded random sample of the plan's blocks (every kind represented) into a fresh cache
with a process pool, so the figure includes worker start-up as a real `profile-device` pays it.

    .venv/bin/python benchmarks/export_throughput.py --space elasticvit --blocks 24 --workers 2
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lutnas.profiler.export import FORMATS, ModelCache, export_many, tool_versions
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="elasticvit")
    parser.add_argument("--blocks", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--formats", nargs="+", default=["onnx", "tflite"], choices=list(FORMATS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="benchmarks/results/export_throughput.json")
    args = parser.parse_args()

    space = SearchSpace.load(args.space)
    plan = make_plan(space)
    sample = stratified_sample(list(plan.blocks), args.blocks, args.seed)
    rows = []
    for fmt in args.formats:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            export_many(sample, fmt, ModelCache(Path(tmp)), workers=args.workers)
            seconds = time.perf_counter() - start
        per_minute = len(sample) / seconds * 60
        rows.append({
            "format": fmt, "blocks": len(sample), "seconds": round(seconds, 2),
            "blocks_per_minute": round(per_minute, 1),
            "plan_blocks": len(plan.blocks),
            "projected_plan_minutes": round(len(plan.blocks) / per_minute, 1),
        })
    table = Table(title=f"export throughput, {args.space}, {args.workers} workers")
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(
        {"space": args.space, "workers": args.workers, "versions": tool_versions(), "results": rows},
        indent=2))


if __name__ == "__main__":
    main()
