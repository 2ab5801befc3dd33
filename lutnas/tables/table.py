"""LatencyTable: one device + runtime + threads + core mask, block key -> latency statistics.

A table is what users keep and share, so it carries its own context (DeviceInfo, run settings,
space, lutnas version) and is only ever built from measurements taken under one set of settings:
the same phone measures 35% apart with two builds of one runner (DESIGN.md), so a table that mixed
settings would be a table of nothing in particular.

Statistics are taken over trials, not over pooled runs: each trial is a fresh process with its own
offset (toolchain.md: CV 0.2-3.6% inside one process, 5-19% across processes), so the figure of a
key is the median of its trial medians and its spread is the spread of those medians.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import lutnas
from lutnas.device_agents.base import DeviceInfo
from lutnas.errors import LutnasError, TableError
from lutnas.space import SearchSpace

SCHEMA_VERSION = 1
COLUMNS = ("median_ms", "mean_ms", "std_ms", "min_ms", "p90_ms", "trials", "cv", "flag", "kind",
           "source", "operator_ms")
# Settings identity of a measurement (contracts.md); a table holds exactly one value of each.
IDENTITY = ("device_id", "runtime", "threads", "core_mask", "accelerator")
FILTER_FLAGS = {"device_id": "--device", "runtime": "--runtime", "threads": "--threads",
                "core_mask": "--cores", "accelerator": "--accelerator"}
QUALITY_FLAGS = ("settled", "re-measured", "never-settled")
UNRATED = "unrated"  # no quality row: the profiling loop did not judge this key
SUBNET_KIND = "subnet"


@dataclass
class LatencyTable:
    """Rows are block keys; `metadata` holds everything needed to trust and reuse them."""

    frame: pd.DataFrame
    device: DeviceInfo
    settings: dict[str, Any]
    space: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise TableError(f"latency table frame lacks columns {missing}")
        self.frame = self.frame.loc[:, list(COLUMNS)]
        self.frame.index.name = "key"
        self._lookup: dict[str, float] | None = None

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.frame)

    @property
    def keys(self) -> list[str]:
        return list(self.frame.index)

    def has(self, key: str) -> bool:
        return key in self.frame.index

    def lookup(self) -> dict[str, float]:
        """key -> median_ms, built once, for callers that index many keys."""
        if self._lookup is None:
            self._lookup = dict(zip(self.frame.index, self.frame["median_ms"].astype(float)))
        return self._lookup

    def latency_ms(self, key: str) -> float:
        try:
            return self.lookup()[key]
        except KeyError:
            raise TableError(f"key {key!r} is not in the table of {self.device.device_id}; "
                             f"profile it or give a fallback predictor") from None

    @property
    def correction(self) -> dict[str, Any] | None:
        """Whole-model correction {"scale", "intercept", ...} fitted by `--calibrate`, if any."""
        return self.metadata.get("correction")

    def set_correction(self, correction: dict[str, Any] | None) -> None:
        self.metadata["correction"] = correction

    def describe_settings(self) -> str:
        s = self.settings
        return (f"{self.device.device_id} runtime={s.get('runtime')} threads={s.get('threads')} "
                f"cores={s.get('core_mask')} accelerator={s.get('accelerator', 'cpu')}")

    def load_space(self) -> SearchSpace:
        """The space the table was profiled for: its YAML text if stored, else the built-in name."""
        text = self.metadata.get("space_yaml")
        if text:
            return SearchSpace.from_yaml(text, source=f"{self.space} (from table metadata)")
        return SearchSpace.load(self.space)

    def coverage(self, space: SearchSpace, resolutions: Iterable[int] | None = None) -> dict[str, Any]:
        """Share of the space's unique blocks present, overall and per kind, and the missing keys."""
        blocks = space.unique_blocks(list(resolutions) if resolutions else None)
        present = set(self.frame.index)
        by_kind: dict[str, list[int]] = {}
        missing = []
        for spec in blocks:
            counts = by_kind.setdefault(spec.kind, [0, 0])
            counts[1] += 1
            if spec.key in present:
                counts[0] += 1
            else:
                missing.append(spec.key)
        total = len(blocks)
        return {"present": total - len(missing), "total": total,
                "share": (total - len(missing)) / total if total else 0.0,
                "by_kind": {k: {"present": v[0], "total": v[1]} for k, v in sorted(by_kind.items())},
                "missing": missing}

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        from lutnas.tables.io import save_parquet

        return save_parquet(self, path)

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        from lutnas.tables.io import load_parquet

        return load_parquet(path)

    def full_metadata(self) -> dict[str, Any]:
        """What goes into the Parquet schema metadata."""
        meta = dict(self.metadata)
        meta.update({"schema_version": SCHEMA_VERSION, "device": self.device.to_dict(),
                     "settings": self.settings, "space": self.space})
        meta.setdefault("lutnas_version", lutnas.__version__)
        return meta


# ---------------------------------------------------------------------- building from measurements

def select_one_setting(measurements: pd.DataFrame, what: str = "the store") -> dict[str, Any]:
    """The single settings identity of `measurements`, or a TableError naming the filters to add."""
    if measurements.empty:
        raise TableError(f"{what} holds no successful measurements for this selection; "
                         f"run profile-device first or relax --runtime/--threads/--cores")
    combos = measurements.loc[:, list(IDENTITY)].astype(str).drop_duplicates()
    if len(combos) == 1:
        row = measurements.iloc[0]
        return {"device_id": str(row["device_id"]), "runtime": str(row["runtime"]),
                "threads": int(row["threads"]), "core_mask": str(row["core_mask"]),
                "accelerator": str(row["accelerator"])}
    hints = []
    for column in IDENTITY:
        values = sorted(combos[column].unique())
        if len(values) > 1:
            hints.append(f"{FILTER_FLAGS[column]} {' or '.join(values)}")
    raise TableError(
        f"{what} mixes {len(combos)} measurement settings and a table holds one; "
        f"choose with {'; '.join(hints)}"
    )


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def _operator_breakdown(ops: pd.Series) -> str | None:
    """Median over trials of each operator's time, as JSON (None when no trial had a breakdown)."""
    per_op: dict[str, list[float]] = {}
    for item in ops:
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except ValueError:
                continue
        if isinstance(item, dict):
            for name, value in item.items():
                if value is not None:
                    per_op.setdefault(str(name), []).append(float(value))
    if not per_op:
        return None
    return json.dumps({k: float(np.median(v)) for k, v in sorted(per_op.items())}, sort_keys=True)


def aggregate(measurements: pd.DataFrame, quality: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-key statistics over trials, in the table's columns (pure: frames in, frame out).

    median/mean/std/p90/cv are over the trial medians; min is the fastest single run seen.
    """
    rows = {}
    flags = {}
    if quality is not None and not quality.empty:
        flags = dict(zip(quality["key"].astype(str), quality["flag"].astype(str)))
    for key, group in measurements.groupby("key", sort=True):
        medians = group["median_ms"].to_numpy(dtype=float)
        medians = medians[np.isfinite(medians)]
        if medians.size == 0:
            continue
        mins = group["min_ms"].to_numpy(dtype=float) if "min_ms" in group else medians
        mins = mins[np.isfinite(mins)]
        mean = float(medians.mean())
        std = float(medians.std(ddof=1)) if medians.size > 1 else 0.0
        operator = _operator_breakdown(group["operator_ms"]) if "operator_ms" in group else None
        rows[str(key)] = {
            "median_ms": float(np.median(medians)), "mean_ms": mean, "std_ms": std,
            "min_ms": float(mins.min()) if mins.size else float(medians.min()),
            "p90_ms": _percentile(medians, 90), "trials": int(medians.size),
            "cv": std / mean if mean > 0 else math.nan,
            "flag": flags.get(str(key), UNRATED), "kind": str(group["kind"].iloc[0]),
            "source": "measured", "operator_ms": operator,
        }
    return make_frame(rows)


def make_frame(rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """A table frame from key -> row dicts, with stable dtypes (None stays None in operator_ms)."""
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(COLUMNS))
    frame["trials"] = frame["trials"].astype("int64")
    frame["operator_ms"] = pd.Series([r["operator_ms"] for r in rows.values()], index=frame.index,
                                     dtype=object)
    frame.index.name = "key"
    return frame


def _common_value(frame: pd.DataFrame, column: str) -> Any:
    if column not in frame or frame.empty:
        return None
    values = frame[column].dropna().unique()
    if len(values) == 1:
        value = values[0]
        return value.item() if hasattr(value, "item") else value
    return sorted(v.item() if hasattr(v, "item") else v for v in values)


def build_table(store: Any, device_id: str | None = None, runtime: str | None = None,
                threads: int | None = None, core_mask: str | None = None,
                accelerator: str | None = None, space: str | None = None,
                kinds: Iterable[str] | None = None) -> LatencyTable:
    """A table from a MeasurementStore, refusing a selection that mixes settings."""
    frame = store.measurements_frame(device_id=device_id, runtime=runtime, threads=threads,
                                     core_mask=core_mask, kinds=list(kinds) if kinds else None)
    if accelerator is not None and not frame.empty:
        frame = frame[frame["accelerator"] == accelerator]
    frame = frame[frame["kind"] != SUBNET_KIND]
    identity = select_one_setting(frame, what=f"store {getattr(store, 'path', '')}".strip())
    quality = store.quality_frame(device_id=identity["device_id"], runtime=identity["runtime"],
                                  threads=identity["threads"], core_mask=identity["core_mask"])
    rows = aggregate(frame, quality)
    device = store.device_info(identity["device_id"])
    settings = dict(identity)
    settings["warmup"] = _common_value(frame, "warmup")
    settings["runs"] = _common_value(frame, "runs")
    runners = sorted({f"{n}=={v}" for n, v in zip(frame["runner_name"], frame["runner_version"])})
    run_ids = sorted(int(r) for r in frame["run_id"].unique())
    space_name, space_yaml = _space_of(store, run_ids, space)
    metadata = {"runners": runners, "runs": run_ids, "space_yaml": space_yaml,
                "source": {"store": str(getattr(store, "path", "")), "measurements": int(len(frame))},
                "built": pd.Timestamp.now(tz="UTC").isoformat(), "correction": None,
                "lutnas_version": lutnas.__version__}
    return LatencyTable(rows, device, settings, space_name, metadata)


def _space_of(store: Any, run_ids: list[int], space: str | None) -> tuple[str, str | None]:
    """Space name (and YAML text when it came from a file) of the runs that made the table."""
    if space is None:
        runs = store.runs_frame()
        names = sorted({str(s) for s in runs[runs["run_id"].isin(run_ids)]["space"].dropna()})
        if len(names) > 1:
            raise TableError(f"the selected measurements come from runs of spaces {names}; "
                             f"name the space of the table with --space")
        space = names[0] if names else ""
    if not space:
        return "", None
    try:
        loaded = SearchSpace.load(space)
    except LutnasError:
        return space, None  # a space file that has moved: keep the name, the keys still stand
    if loaded.source == space and Path(space).is_file():
        return loaded.name, Path(space).read_text()
    return loaded.name, None


# ---------------------------------------------------------------------- comparing two tables

@dataclass
class TableDiff:
    """B / A latency ratios of the keys two tables share (two devices, or two runtimes)."""

    per_key: pd.DataFrame  # index key; a_ms, b_ms, ratio, kind; sorted by ratio
    per_kind: pd.DataFrame  # index kind; keys, a_ms, b_ms, ratio_of_sums, median/min/max ratio
    only_a: int
    only_b: int


def diff_tables(a: LatencyTable, b: LatencyTable) -> TableDiff:
    common = a.frame.index.intersection(b.frame.index)
    per_key = pd.DataFrame({"a_ms": a.frame.loc[common, "median_ms"].astype(float),
                            "b_ms": b.frame.loc[common, "median_ms"].astype(float),
                            "kind": a.frame.loc[common, "kind"].astype(str)})
    per_key = per_key[(per_key["a_ms"] > 0) & np.isfinite(per_key["b_ms"])]
    per_key["ratio"] = per_key["b_ms"] / per_key["a_ms"]
    per_key = per_key.sort_values("ratio")
    grouped = per_key.groupby("kind")
    per_kind = pd.DataFrame({
        "keys": grouped.size(), "a_ms": grouped["a_ms"].sum(), "b_ms": grouped["b_ms"].sum(),
        "median_ratio": grouped["ratio"].median(), "min_ratio": grouped["ratio"].min(),
        "max_ratio": grouped["ratio"].max()})
    per_kind["ratio_of_sums"] = per_kind["b_ms"] / per_kind["a_ms"]
    return TableDiff(per_key, per_kind, len(a.frame.index.difference(common)),
                     len(b.frame.index.difference(common)))
