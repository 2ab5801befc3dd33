"""Stitched against converted whole subnets: the same ops, the same latency, in a fraction of the time.

For `--subnets` seeded `elasticvit` subnets at `--resolution` px: their blocks are exported (.tflite,
the shared pool, as profiling does), then each subnet is stitched from those files
(export_subnet, blocks cached) and converted whole by litert-torch (the same static model, no
block files). Reported per subnet: both export times, the op counts of both files (they must be
equal) and their sizes, and both files' latency on this host's LiteRT (1 thread, XNNPACK): in each
of `--sets` sets of fresh interpreters, `--rounds` rounds of one invoke each after `--warmup`, in a
random order each round; per file the median of each set, and the geometric mean of the per-set
ratios. A copy of the converted file is timed beside them as the control (its ratio is the
timing's own noise), and the same model converted with one weight tensor per block key
(`build_subnet(as_blocks=True)`: what lutnas converted before, the converter merging a repeated
block's equal weights) shows what the merge did to latency. The stitched file repeats a block
file's weights where a block comes again, the converted model gives each position its own
(build_subnet); the values of these float models' weights do not change their latency.

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
    DISTINCT,
    ModelCache,
    build_subnet,
    export_many,
    export_module,
    export_subnet,
    shutdown_export_pool,
    tool_versions,
)
from lutnas.space import SearchSpace, SubnetConfig, subnet_key


def _interpreters(paths: list[Path], feed: np.ndarray, rng: random.Random) -> list[object]:
    """A fresh interpreter per file, created in a random order, input set."""
    interpreters: list[object] = [None] * len(paths)
    for i in rng.sample(range(len(paths)), len(paths)):
        interpreter = load_tflite_interpreter(str(paths[i]), threads=1)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], feed)
        interpreters[i] = interpreter
    return interpreters


def interleaved_ms(paths: list[Path], resolution: int, rounds: int, warmup: int,
                   sets: int) -> list[list[float]]:
    """Per file, the median ms per invoke in each of `sets` sets of fresh interpreters.

    Within a set the files are invoked in turn (host drift hits all) in a seeded random order each
    round: a file that runs right after itself runs faster than one that follows another, so a
    fixed or reversed order favours some files. Each set is created anew in a random order: one
    interpreter's speed depends on where its packed weights landed in memory, stable within a
    process but not across instances (a copy of one 42-block file read 0.976-1.022 of it over 8
    sets, 1.04-1.05 in three rounds of one set): one set per file cannot tell 2% apart."""
    feed = np.random.default_rng(0).standard_normal((1, resolution, resolution, 3), dtype=np.float32)
    rng = random.Random(0)
    medians: list[list[float]] = [[] for _ in paths]
    for _ in range(sets):
        interpreters = _interpreters(paths, feed, rng)
        times: list[list[float]] = [[] for _ in paths]
        for round_ in range(warmup + rounds):
            for i in rng.sample(range(len(paths)), len(paths)):
                start = time.perf_counter()
                interpreters[i].invoke()
                if round_ >= warmup:
                    times[i].append((time.perf_counter() - start) * 1e3)
        for sink, t in zip(medians, times):
            sink.append(float(np.median(t)))
        del interpreters
    return medians


def _ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Geometric mean of the per-set ratios a/b, and their range."""
    ratios = np.asarray(a) / np.asarray(b)
    return float(np.exp(np.log(ratios).mean())), float(ratios.min()), float(ratios.max())


def one_subnet(space: SearchSpace, config: SubnetConfig, cache: ModelCache, whole_cache: ModelCache,
               rounds: int, warmup: int, sets: int) -> dict[str, object]:
    start = time.perf_counter()
    stitched = export_subnet(space, config, "tflite", cache)
    stitch_s = time.perf_counter() - start
    example = torch.randn(1, 3, config.resolution, config.resolution,
                          generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    converted = export_module(subnet_key(space, config), build_subnet(space, config), example, True,
                              "tflite", whole_cache, assembly=DISTINCT)
    convert_s = time.perf_counter() - start
    ops_stitched, ops_converted = stitch.op_counts(stitched.path), stitch.op_counts(converted.path)
    merged = export_module(subnet_key(space, config), build_subnet(space, config, as_blocks=True),
                           example, True, "tflite", whole_cache)
    twin = converted.path.with_name("twin.tflite")  # the control: a file timed against its copy
    shutil.copyfile(converted.path, twin)
    stitched_ms, converted_ms, twin_ms, merged_ms = interleaved_ms(
        [stitched.path, converted.path, twin, merged.path], config.resolution, rounds, warmup, sets)
    ratio, control = _ratio(stitched_ms, converted_ms), _ratio(twin_ms, converted_ms)
    merge = _ratio(merged_ms, converted_ms)
    return {"blocks": len(space.blocks_of(config)), "stitch_s": round(stitch_s, 2),
            "convert_s": round(convert_s, 2), "ops_stitched": sum(ops_stitched.values()),
            "ops_converted": sum(ops_converted.values()), "same_ops": ops_stitched == ops_converted,
            "bytes_stitched": stitched.path.stat().st_size, "bytes_converted": converted.path.stat().st_size,
            "stitched_ms": round(float(np.median(stitched_ms)), 3),
            "converted_ms": round(float(np.median(converted_ms)), 3),
            "ratio": round(ratio[0], 4), "ratio_range": [round(r, 4) for r in ratio[1:]],
            "control_ratio": round(control[0], 4), "control_range": [round(r, 4) for r in control[1:]],
            "bytes_merged": merged.path.stat().st_size, "merged_ratio": round(merge[0], 4),
            "merged_range": [round(r, 4) for r in merge[1:]], "max_abs_error": stitched.max_abs_error,
            "load": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="elasticvit")
    parser.add_argument("--subnets", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--sets", type=int, default=8, help="fresh interpreter sets per subnet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="benchmarks/results/subnet_stitch.json")
    args = parser.parse_args()
    load_before = round(os.getloadavg()[0], 2)
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
        rows = [one_subnet(space, c, cache, whole_cache, args.rounds, args.warmup, args.sets)
                for c in configs]
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
                                       max(r["control_ratio"] for r in rows)],
               "merged_ratio_range": [min(r["merged_ratio"] for r in rows),
                                      max(r["merged_ratio"] for r in rows)]}
    Console().print(summary)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(
        {"space": args.space, "resolution": args.resolution, "cpu_count": os.cpu_count(),
         "versions": tool_versions(), "rounds": args.rounds, "sets": args.sets,
         "load_before": load_before, "summary": summary, "subnets": rows},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
