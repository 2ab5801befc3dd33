"""Stitched against converted whole subnets: the same ops, the same latency, in a fraction of the time.

For `--subnets` seeded `elasticvit` subnets at `--resolution` px: their blocks are exported (.tflite,
the shared pool, as profiling does), then each subnet is stitched from those files
(export_subnet, blocks cached) and converted whole by litert-torch (the same static model, no
block files). Reported per subnet: both export times, the op counts of both files (they must be
equal), and both files' latency on this host's LiteRT (1 thread, XNNPACK), timed interleaved in one
process (`--rounds` rounds of one invoke each after `--warmup`), as medians and their ratio; a copy
of the converted file is timed beside them as the control (its ratio is the timing's own noise). The
weights differ (each block file keeps its own seeded weights; the converted model is the same
composition); latency of these float models does not depend on weight values.

    .venv/bin/python benchmarks/subnet_stitch.py --subnets 4 --resolution 128
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from lutnas.device_agents.runtimes import load_tflite_interpreter
from lutnas.profiler import stitch
from lutnas.profiler.export import (
    ModelCache,
    build_subnet,
    export_many,
    export_module,
    export_subnet,
    shutdown_export_pool,
    tool_versions,
)
from lutnas.space import SearchSpace, subnet_key


def interleaved_ms(paths: list[Path], resolution: int, rounds: int, warmup: int) -> list[float]:
    """Median ms per invoke of each file, invoked in turn round after round (host drift hits all),
    the order reversed every other round: whichever file runs first after the other is ~2.6%
    slower here (two runs of one converted file in one order measured 1.013-1.031)."""
    feed = np.random.default_rng(0).standard_normal((1, resolution, resolution, 3), dtype=np.float32)
    interpreters = []
    for path in paths:
        interpreter = load_tflite_interpreter(str(path), threads=1)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], feed)
        interpreters.append(interpreter)
    times: list[list[float]] = [[] for _ in paths]
    for round_ in range(warmup + rounds):
        order = list(zip(interpreters, times))
        for interpreter, sink in (order if round_ % 2 else order[::-1]):
            start = time.perf_counter()
            interpreter.invoke()
            if round_ >= warmup:
                sink.append((time.perf_counter() - start) * 1e3)
    return [float(np.median(t)) for t in times]


def one_subnet(space: SearchSpace, config, cache: ModelCache, whole_cache: ModelCache,
               rounds: int, warmup: int) -> dict[str, object]:
    start = time.perf_counter()
    stitched = export_subnet(space, config, "tflite", cache)
    stitch_s = time.perf_counter() - start
    example = torch.randn(1, 3, config.resolution, config.resolution,
                          generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    converted = export_module(subnet_key(space, config), build_subnet(space, config), example, True,
                              "tflite", whole_cache)
    convert_s = time.perf_counter() - start
    ops_stitched, ops_converted = stitch.op_counts(stitched.path), stitch.op_counts(converted.path)
    twin = converted.path.with_name("twin.tflite")  # the control: a file timed against its copy
    shutil.copyfile(converted.path, twin)
    stitched_ms, converted_ms, twin_ms = interleaved_ms([stitched.path, converted.path, twin],
                                                        config.resolution, rounds, warmup)
    return {"blocks": len(space.blocks_of(config)), "stitch_s": round(stitch_s, 2),
            "convert_s": round(convert_s, 2), "ops_stitched": sum(ops_stitched.values()),
            "ops_converted": sum(ops_converted.values()), "same_ops": ops_stitched == ops_converted,
            "stitched_ms": round(stitched_ms, 3), "converted_ms": round(converted_ms, 3),
            "ratio": round(stitched_ms / converted_ms, 4),
            "control_ratio": round(twin_ms / converted_ms, 4), "max_abs_error": stitched.max_abs_error,
            "load": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="elasticvit")
    parser.add_argument("--subnets", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="benchmarks/results/subnet_stitch.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = SearchSpace.load(args.space)
    rng = random.Random(args.seed)
    configs = [dataclasses.replace(space.sample(rng), resolution=args.resolution)
               for _ in range(args.subnets)]
    with tempfile.TemporaryDirectory() as tmp:
        cache, whole_cache = ModelCache(Path(tmp) / "blocks"), ModelCache(Path(tmp) / "whole")
        specs = {s.key: s for c in configs for s in space.blocks_of(c)}
        start = time.perf_counter()
        export_many(list(specs.values()), "tflite", cache, workers=2)
        blocks_s = time.perf_counter() - start
        shutdown_export_pool()
        rows = [one_subnet(space, c, cache, whole_cache, args.rounds, args.warmup) for c in configs]
    table = Table(title=f"stitched vs converted, {args.space} {args.resolution} px, LiteRT 1 thread")
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)
    ratios = [r["ratio"] for r in rows]
    summary = {"block_export_s": round(blocks_s, 1), "unique_blocks": len(specs),
               "median_stitch_s": float(np.median([r["stitch_s"] for r in rows])),
               "median_convert_s": float(np.median([r["convert_s"] for r in rows])),
               "all_same_ops": all(r["same_ops"] for r in rows),
               "median_latency_ratio": float(np.median(ratios)),
               "latency_ratio_range": [min(ratios), max(ratios)],
               "control_ratio_range": [min(r["control_ratio"] for r in rows),
                                       max(r["control_ratio"] for r in rows)]}
    Console().print(summary)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(
        {"space": args.space, "resolution": args.resolution, "cpu_count": os.cpu_count(),
         "versions": tool_versions(), "rounds": args.rounds, "summary": summary, "subnets": rows},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
