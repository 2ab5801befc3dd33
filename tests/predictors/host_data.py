"""Real host latency data for the predictor tests, measured once per test process.

A few dozen blocks of the `tiny` space, exported to ONNX and TorchScript and timed in-process with
onnxruntime and torch (seconds). Two runtimes of one host stand in for two devices.
"""

from __future__ import annotations

import functools
import math
import random

import pandas as pd

from lutnas.device_agents.base import DeviceInfo
from lutnas.profiler.adaptive_run import measure_in_process
from lutnas.profiler.export import ModelCache
from lutnas.space import BlockSpec, SearchSpace
from lutnas.tables.table import COLUMNS, LatencyTable

BLOCKS = 48


@functools.cache
def tiny_specs() -> tuple[BlockSpec, ...]:
    blocks = SearchSpace.load("tiny").unique_blocks()
    rng = random.Random(0)
    by_kind: dict[str, list[BlockSpec]] = {}
    for spec in blocks:
        by_kind.setdefault(spec.kind, []).append(spec)
    chosen = [s for group in by_kind.values() if len(group) <= 4 for s in group]
    rest = [s for group in by_kind.values() if len(group) > 4 for s in group]
    chosen += rng.sample(rest, BLOCKS - len(chosen))
    return tuple(chosen)


@functools.cache
def host_latencies(runtime: str) -> dict[str, float]:
    """key -> ms of `tiny_specs()` on this host with `runtime` (onnxruntime or torch)."""
    return measure_in_process(list(tiny_specs()), runtime, ModelCache(), runs=9, rounds=3)


def as_table(latencies: dict[str, float], runtime: str, device_id: str = "host-test") -> LatencyTable:
    rows = pd.DataFrame(index=pd.Index(sorted(latencies), name="key"), columns=list(COLUMNS))
    rows["median_ms"] = [latencies[k] for k in rows.index]
    for column in ("mean_ms", "min_ms", "p90_ms"):
        rows[column] = rows["median_ms"]
    rows["std_ms"] = 0.0
    rows["cv"] = math.nan
    rows["trials"] = 3
    rows["flag"] = "unrated"
    rows["kind"] = [k.partition(":")[0] for k in rows.index]
    rows["source"] = "measured"
    rows["operator_ms"] = None
    device = DeviceInfo(device_id=device_id, kind="host", model="test host")
    settings = {"device_id": device_id, "runtime": runtime, "threads": 1, "core_mask": "all",
                "accelerator": "cpu"}
    return LatencyTable(rows, device, settings, "tiny", {"correction": None})
