"""Helpers for predictor tests: synthetic tables over a space's unique blocks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from lutnas.device_agents.base import DeviceInfo
from lutnas.space import BlockSpec, SearchSpace
from lutnas.tables.table import LatencyTable, make_frame


def table_for(space: SearchSpace, value_of: Callable[[BlockSpec], float],
              drop: Sequence[str] = ()) -> LatencyTable:
    rows = {}
    for spec in space.unique_blocks():
        if spec.key in drop:
            continue
        ms = float(value_of(spec))
        rows[spec.key] = {"median_ms": ms, "mean_ms": ms, "std_ms": 0.0, "min_ms": ms, "p90_ms": ms,
                          "trials": 3, "cv": 0.0, "flag": "settled", "kind": spec.kind,
                          "source": "measured", "operator_ms": None}
    settings = {"device_id": "host-t", "runtime": "tflite", "threads": 1, "core_mask": "all",
                "accelerator": "cpu"}
    return LatencyTable(make_frame(rows), DeviceInfo("host-t", "host", "t"), settings, space.name,
                        {"correction": None})


def random_values(seed: int = 0) -> Callable[[BlockSpec], float]:
    rng = np.random.default_rng(seed)
    cache: dict[str, float] = {}
    return lambda spec: cache.setdefault(spec.key, float(rng.uniform(0.05, 3.0)))


@pytest.fixture()
def make_table() -> Callable[..., LatencyTable]:
    return table_for


@pytest.fixture()
def values() -> Callable[[int], Callable[[BlockSpec], float]]:
    return random_values
