"""A latency table's rows: its columns, their defaults, and the one function that makes a frame.

Every table (built from a store, imported, transferred, completed by a predictor) gets its frame
from `make_frame`, so the columns, their order and their dtypes are decided here once: a table
written by one path and read by another compares equal, and no caller fills columns by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd

from lutnas.errors import TableError

SCHEMA_VERSION = 1
COLUMNS = ("median_ms", "mean_ms", "std_ms", "min_ms", "p90_ms", "trials", "cv", "flag", "kind",
           "source", "operator_ms")
# Columns a table has only when some key has a value: peak memory (MB, median over trials) is printed
# by some runners only (benchmark_model --report_peak_memory_footprint, onnxruntime_perf_test).
OPTIONAL_COLUMNS = ("peak_mem_mb",)
FLOAT_COLUMNS = ("median_ms", "mean_ms", "std_ms", "min_ms", "p90_ms", "cv")
TEXT_COLUMNS = ("flag", "kind", "source")
UNRATED = "unrated"  # no quality row: the profiling loop did not judge this key
MEASURED = "measured"
SUBNET_KIND = "subnet"
# The host check measured next to whole subnets (a table block again, an empty model): stored
# apart from the subnets so `--kind subnet` lists subnets only, and never read as a table block.
HOST_CHECK_KIND = "hostcheck"
WHOLE_MODEL_KINDS = (SUBNET_KIND, HOST_CHECK_KIND)

# Latencies: key -> ms, key -> {column: value}, a Series of ms, or a frame indexed by key.
Latencies = Mapping[str, Any] | pd.Series | pd.DataFrame


def kind_of(key: str) -> str:
    """The block kind a key names (`mbconv:hw=...` -> `mbconv`); foreign keys give their prefix."""
    return key.partition(":")[0]


def _as_frame(latencies: Latencies) -> pd.DataFrame:
    """Any accepted form of latencies as a frame indexed by key (columns not yet checked)."""
    if isinstance(latencies, pd.DataFrame):
        frame = latencies.set_index("key") if "key" in latencies.columns else latencies.copy()
    elif isinstance(latencies, pd.Series):
        frame = latencies.to_frame("median_ms")
    else:
        rows = {str(k): ({"median_ms": v} if isinstance(v, Real) else dict(v))
                for k, v in latencies.items()}
        frame = pd.DataFrame.from_dict(rows, orient="index") if rows else pd.DataFrame({"median_ms": []})
    frame.index = pd.Index([str(k) for k in frame.index], name="key")
    return frame


def make_frame(latencies: Latencies, source: str = MEASURED, flag: str = UNRATED) -> pd.DataFrame:
    """A table frame (index `key`, `COLUMNS` in order, stable dtypes) from key -> latency stats.

    Each key needs `median_ms` (finite, in ms); any other column it lacks gets its default: `kind`
    from the key, `source` and `flag` from the arguments, `trials` 0, `operator_ms` None, the other
    statistics NaN (not known); an `OPTIONAL_COLUMNS` column is kept when some key has a value.
    Raises TableError on a column the table does not have, a missing
    `median_ms`, a non-finite one, or a key given twice.
    """
    frame = _as_frame(latencies)
    unknown = [c for c in frame.columns if c not in COLUMNS and c not in OPTIONAL_COLUMNS]
    if unknown:
        raise TableError(f"latency columns {unknown} are not table columns; use {', '.join(COLUMNS)}")
    if "median_ms" not in frame.columns:
        raise TableError("latencies need a median_ms per key (milliseconds)")
    if frame.index.has_duplicates:
        raise TableError(f"key {frame.index[frame.index.duplicated()][0]!r} is given twice")
    medians = pd.to_numeric(frame["median_ms"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(medians)
    if bad.any():
        raise TableError(f"key {frame.index[bad][0]!r} has no finite median_ms "
                         f"({frame['median_ms'].iloc[int(np.argmax(bad))]!r}); drop it or give a number")
    defaults: dict[str, Any] = {"trials": 0, "flag": flag, "source": source, "operator_ms": None,
                                "kind": pd.Series([kind_of(k) for k in frame.index], index=frame.index)}
    columns = {}
    for column in COLUMNS:
        values = _column(frame, column, defaults.get(column, math.nan))
        if column in FLOAT_COLUMNS:
            columns[column] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif column == "trials":
            columns[column] = pd.to_numeric(values, errors="coerce").fillna(0).astype("int64")
        elif column in TEXT_COLUMNS:
            columns[column] = values.astype(str)
        else:  # operator_ms: JSON text or None (pandas would turn a missing one into NaN)
            columns[column] = pd.Series([v if isinstance(v, str) else None for v in values],
                                        index=frame.index, dtype=object)
    for column in OPTIONAL_COLUMNS:  # kept only where some key has a value (all floats)
        values = pd.to_numeric(_column(frame, column, math.nan), errors="coerce").astype("float64")
        if values.notna().any():
            columns[column] = values
    return pd.DataFrame(columns, index=frame.index)


def _column(frame: pd.DataFrame, name: str, default: Any) -> pd.Series:
    """`frame[name]`, with `default` (a value, or a Series by key) where the column or a cell is
    missing: rows of two origins concatenated leave holes in the columns only one of them had."""
    if name not in frame.columns:
        values = pd.Series(None, index=frame.index, dtype=object)
    else:
        values = frame[name].astype(object)
    return values.where(values.notna(), default)
