"""BlockSpec -> numeric features for the learned and analytic predictors.

A block's latency on a phone CPU follows its shape through a few physical quantities: the
multiply-accumulates it computes (MACs), the bytes it moves (AutoViT's point: most of these blocks
are memory-bound), how many operators it launches and how well its widths fill the SIMD lanes. The
learned predictor gets the spec's own parameters *and* these quantities, so a tree ensemble that
never saw a width can still place it between two it did see on the MACs/bytes axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lutnas.errors import BlockKeyError, PredictorError
from lutnas.space import ACTIVATIONS, STRING_FIELDS, BlockSpec, as_specs, block_complexity, kind_fields

ANALYTIC_COLUMNS = ("macs", "params", "bytes_read", "bytes_written", "arithmetic_intensity",
                    "output_elements", "num_ops", "parallel_work")
# fp32 lanes of a 128-bit SIMD unit (NEON on every phone CPU, SSE on the host): widths that are not
# multiples of it leave lanes idle.
DEFAULT_SIMD_LANES = 4


def output_elements(spec: BlockSpec) -> int:
    """Values in the block's output tensor (what the next block must read; its kind's rule)."""
    return spec.output_elements()


def parallel_work(spec: BlockSpec) -> int:
    """The channel-like dimension a kernel vectorises over: the kind's own rule when its record has
    one, else the first of its output-width fields (output channels, or the inner width)."""
    rule = spec.record.parallel_work
    if rule is not None:
        return int(rule(spec.as_dict()))
    p = spec.as_dict()
    for name in ("cout", "c", "m", "ncls"):
        if name in p:
            return int(p[name])
    return 1


def lane_utilisation(width: int, lanes: int) -> float:
    """Share of SIMD lanes doing useful work for a loop of `width` elements."""
    if width <= 0:
        return 1.0
    return width / (math.ceil(width / lanes) * lanes)


def analytic_features(spec: BlockSpec) -> dict[str, float]:
    """The block's physical quantities (ANALYTIC_COLUMNS) as floats: MACs, weights, bytes, ..."""
    cost = block_complexity(spec)
    return {
        "macs": float(cost.macs),
        "params": float(cost.params),
        "bytes_read": float(cost.bytes_read),
        "bytes_written": float(cost.bytes_written),
        "arithmetic_intensity": float(cost.arithmetic_intensity),
        "output_elements": float(output_elements(spec)),
        "num_ops": float(max(1, len(spec.operators()))) if not spec.is_operator else 1.0,
        "parallel_work": float(parallel_work(spec)),
    }


def spec_columns(kind: str) -> list[str]:
    """Feature columns of one kind: its shape parameters (act one-hot) then the analytic ones."""
    if kind not in kind_fields():
        raise BlockKeyError(f"unknown block kind {kind!r}; known kinds: {', '.join(kind_fields())}")
    columns: list[str] = []
    for name in kind_fields()[kind]:
        if name in STRING_FIELDS:
            columns += [f"{name}={value}" for value in ACTIVATIONS]
        else:
            columns.append(name)
    return columns + list(ANALYTIC_COLUMNS)


def block_feature_frame(specs: Sequence[BlockSpec | str], kind: str | None = None) -> pd.DataFrame:
    """One row per spec, indexed by key. With `kind`, exactly that kind's columns (all specs must be of
    it); without, the union over kinds with 0 where a field does not apply plus a `kind` column."""
    specs = as_specs(specs)
    rows: list[dict[str, Any]] = []
    for spec in specs:
        if kind is not None and spec.kind != kind:
            raise PredictorError(f"{spec.key} is not of kind {kind!r}")
        row: dict[str, Any] = {}
        for name, value in spec.params:
            if name in STRING_FIELDS:
                for act in ACTIVATIONS:
                    row[f"{name}={act}"] = 1.0 if value == act else 0.0
            else:
                row[name] = float(value)
        row.update(analytic_features(spec))
        rows.append(row)
    index = pd.Index([s.key for s in specs], name="key")
    if kind is not None:
        return pd.DataFrame(rows, index=index, columns=spec_columns(kind), dtype=float)
    frame = pd.DataFrame(rows, index=index, dtype=float).fillna(0.0)
    frame.insert(0, "kind", [s.kind for s in specs])
    return frame


def log_features(frame: pd.DataFrame) -> np.ndarray:
    """Features as a float matrix with sizes on a log scale: latency is closer to a power law of
    MACs and bytes than to a linear function, and trees split log-spaced data more evenly."""
    values = frame.to_numpy(dtype=float)
    return np.log1p(np.maximum(values, 0.0))


# ------------------------------------------------------------------------------------------------
# Measured data in, whatever the caller holds (a LatencyTable, a frame, a mapping).

def measured_latencies(source: Any, measured_only: bool = True) -> pd.Series:
    """key -> latency ms of the measured entries of `source`.

    Accepts a LatencyTable (anything with a `.frame`), a DataFrame indexed by key (or with a `key`
    column) holding `median_ms`, or a mapping key -> ms. Entries whose `source` column says they
    were predicted are dropped unless `measured_only` is False: a predictor fitted on another
    predictor's output would only learn that predictor.
    """
    frame = getattr(source, "frame", source)
    if isinstance(frame, Mapping):
        series = pd.Series({str(k): float(v) for k, v in frame.items()}, dtype=float)
    elif isinstance(frame, pd.DataFrame):
        data = frame.set_index("key") if "key" in frame.columns else frame
        if "median_ms" not in data.columns:
            raise PredictorError("the latency data has no median_ms column; pass a LatencyTable, "
                                 "a frame indexed by key with median_ms, or a dict key -> ms")
        if measured_only and "source" in data.columns:
            # "imported:FILE" rows were measured too, on someone else's device (OFA, nn-Meter)
            source = data["source"].astype(str)
            data = data[(source == "measured") | source.str.startswith("imported:")]
        series = data["median_ms"].astype(float)
    elif isinstance(frame, pd.Series):
        series = frame.astype(float)
    else:
        raise PredictorError(f"cannot read latencies from {type(source).__name__}; pass a "
                             f"LatencyTable, a DataFrame or a dict key -> ms")
    series = series[~series.index.astype(str).str.startswith("subnet:")]
    series = series[np.isfinite(series.to_numpy()) & (series.to_numpy() > 0)]
    series.index = series.index.astype(str)
    return series
