"""LatencyTable: one device + runtime + threads + core mask, block key -> latency statistics.

A table is what users keep and share, so it carries its own context (DeviceInfo, run settings,
space, lutnas version) and is only ever built from measurements taken under one set of settings:
the same phone measures 35% apart with two builds of one runner (DESIGN.md), so a table that mixed
settings would be a table of nothing in particular.

Statistics are taken over trials, not over pooled runs: each trial is a fresh process with its own
offset (toolchain.md: CV 0.2-3.6% inside one process, 5-19% across processes), so the figure of a
key is the median of its trial medians and its spread is the spread of those medians.

Every table is made by `LatencyTable.from_latencies` (or `completed_with` on another table), and
the table <-> RunSettings conversion lives here only (`run_settings`, `settings_from`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import lutnas
from lutnas.device_agents.base import DeviceInfo, RunSettings
from lutnas.errors import LutnasError, TableError
from lutnas.space import SearchSpace
from lutnas.tables.context import DEFAULT_PRECISION, TableContext, split_metadata
from lutnas.tables.frame import (
    COLUMNS,
    MEASURED,
    OPTIONAL_COLUMNS,
    SCHEMA_VERSION,
    UNRATED,
    WHOLE_MODEL_KINDS,
    Latencies,
    make_frame,
)
from lutnas.tables.lookup import write_sidecar
from lutnas.tables.parquet import read_parquet, write_parquet
from lutnas.tables.spaces import space_digest, space_yaml

# Settings identity of a measurement (DESIGN.md); a table holds exactly one value of each.
IDENTITY = ("device_id", "runtime", "threads", "core_mask", "accelerator", "precision")
FILTER_FLAGS = {"device_id": "--device", "runtime": "--runtime", "threads": "--threads",
                "core_mask": "--cores", "accelerator": "--accelerator", "precision": "--precision"}
# The runtime an imported table records: its numbers were measured by someone else, somehow.
UNKNOWN_RUNTIME = "unknown"


@dataclass
class LatencyTable(TableContext):
    """Rows are block keys; `metadata` holds everything needed to trust and reuse them (settings,
    precision, correction and the embedded space are read through `TableContext`)."""

    frame: pd.DataFrame
    device: DeviceInfo
    settings: dict[str, Any]
    space: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise TableError(f"latency table frame lacks columns {missing}")
        optional = [c for c in OPTIONAL_COLUMNS if c in self.frame.columns]
        self.frame = self.frame.loc[:, [*COLUMNS, *optional]]
        self.frame.index.name = "key"
        self._lookup: dict[str, float] | None = None

    # ------------------------------------------------------------------ making tables
    @classmethod
    def from_latencies(cls, latencies: Latencies, device: DeviceInfo,
                       settings: Mapping[str, Any] | RunSettings, space: str = "",
                       metadata: Mapping[str, Any] | None = None, *, source: str = MEASURED,
                       flag: str = UNRATED) -> "LatencyTable":
        """A table from key -> latency statistics (milliseconds) and its context.

        `latencies`: key -> median ms, key -> {column: value} (any of `COLUMNS`), a Series of
        median ms, or a frame indexed by key; columns a key lacks get `make_frame`'s defaults
        (`source` and `flag` from the arguments, `kind` from the key). `settings`: the table's
        settings dict, or the RunSettings the latencies were measured under (see `settings_from`).
        `metadata` is copied; `correction` defaults to None. Raises TableError on bad latencies.
        """
        if isinstance(settings, RunSettings):
            settings = cls.settings_from(device.device_id, settings)
        meta = {"correction": None, **dict(metadata or {})}
        return cls(make_frame(latencies, source=source, flag=flag), device, dict(settings), space, meta)

    def completed_with(self, predicted: Latencies, source: str, flag: str = UNRATED) -> "LatencyTable":
        """A new table: these rows, plus every key of `predicted` this table lacks, marked `source`.

        Keys the table has keep their rows (a measurement is never replaced by a prediction); new
        rows follow the existing ones in `predicted`'s order. `predicted` takes the forms of
        `from_latencies` (e.g. a Series of ms, or a frame with `median_ms` and `std_ms`); `source`
        names the predictor (e.g. `predicted:learned`). Device, settings, space and a copy of the
        metadata carry over.
        """
        new = make_frame(predicted, source=source, flag=flag)
        new = new[~new.index.isin(self.frame.index)]
        frame = make_frame(pd.concat([self.frame, new])) if len(new) else self.frame.copy()
        return LatencyTable(frame, self.device, dict(self.settings), self.space, dict(self.metadata))

    # ------------------------------------------------------------------ run settings
    @staticmethod
    def settings_from(device_id: str, run: RunSettings) -> dict[str, Any]:
        """The table settings of latencies measured on `device_id` under `run` (inverse of
        `run_settings`): the identity (device, runtime, threads, core mask, accelerator) and the
        warm-up and timed run counts."""
        settings = {"device_id": device_id, "runtime": run.runtime, "threads": int(run.threads),
                    "core_mask": run.core_mask, "accelerator": run.accelerator,
                    "warmup": int(run.warmup), "runs": int(run.runs)}
        if run.precision != DEFAULT_PRECISION:
            settings["precision"] = run.precision
        if run.cache != "warm":  # tables from before cache states were all warm
            settings["cache"] = run.cache
        if run.pace:  # tables from before pacing were all unpaced
            settings["pace"] = True
        return settings

    def run_settings(self) -> RunSettings:
        """The RunSettings the table was measured under, so whole models are measured the same way.

        Counts the table mixed (a list) or lacks fall back to RunSettings' defaults. Raises
        TableError for a table without run settings (an imported one) or with a bad core mask.
        """
        s = self.settings
        if s.get("runtime") in (None, "", UNKNOWN_RUNTIME):
            raise TableError("this table has no run settings (an imported table?); it cannot be "
                             "checked against subnets measured here")
        kwargs: dict[str, Any] = {"runtime": str(s["runtime"]), "threads": int(s.get("threads") or 1),
                                  "cores": _cores_of_mask(str(s.get("core_mask") or "all")),
                                  "accelerator": str(s.get("accelerator") or "cpu"),
                                  "precision": self.precision, "cache": str(s.get("cache") or "warm"),
                                  "pace": bool(s.get("pace", False))}
        for name in ("warmup", "runs"):
            if isinstance(s.get(name), int):  # a list means the table mixed counts: keep the defaults
                kwargs[name] = int(s[name])
        return RunSettings(**kwargs)

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
        """Write the table as one Parquet file (rows + `full_metadata`), atomically, and its lookup
        sidecar (`lookup.py`), so the first `lutnas predict` on it is as fast as the next."""
        meta = self.full_metadata()
        path = write_parquet(self.frame, meta, path)
        write_sidecar(path, meta, self.lookup())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        """Read a table file; TableError (one line, naming the fix) for anything not a lutnas table."""
        frame, meta = read_parquet(path)
        return cls(frame, *split_metadata(meta, path))

    def full_metadata(self) -> dict[str, Any]:
        """Everything a file of this table carries besides its rows (Parquet schema, JSON export)."""
        meta = dict(self.metadata)
        meta.update({"schema_version": SCHEMA_VERSION, "device": self.device.to_dict(),
                     "settings": self.settings, "space": self.space})
        meta.setdefault("lutnas_version", lutnas.__version__)
        return meta


def _cores_of_mask(mask: str) -> tuple[int, ...] | None:
    """'all' -> None (not pinned); a hex mask '0x5' -> (0, 2)."""
    if mask == "all":
        return None
    try:
        bits = int(mask, 16)
    except ValueError:
        raise TableError(f"table core mask {mask!r} is neither 'all' nor a hex mask such as 0x3; "
                         f"rebuild the table") from None
    return tuple(i for i in range(bits.bit_length()) if bits >> i & 1)


# ---------------------------------------------------------------------- building from measurements

def select_one_setting(measurements: pd.DataFrame, what: str = "the store") -> dict[str, Any]:
    """The single settings identity of `measurements`, or a TableError naming the filters to add."""
    if measurements.empty:
        raise TableError(f"{what} holds no successful measurements for this selection; "
                         f"run profile-device first or relax --runtime/--threads/--cores")
    if "precision" not in measurements:  # a frame from before precision existed: fp32
        measurements = measurements.assign(precision=DEFAULT_PRECISION)
    combos = measurements.loc[:, list(IDENTITY)].astype(str).drop_duplicates()
    if len(combos) == 1:
        row = measurements.iloc[0]
        identity = {"device_id": str(row["device_id"]), "runtime": str(row["runtime"]),
                    "threads": int(row["threads"]), "core_mask": str(row["core_mask"]),
                    "accelerator": str(row["accelerator"])}
        if str(row["precision"]) != DEFAULT_PRECISION:
            identity["precision"] = str(row["precision"])
        return identity
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
            "source": MEASURED, "operator_ms": operator,
            "peak_mem_mb": _median_of(group, "peak_mem_mb"),
        }
    return make_frame(rows)


def _median_of(group: pd.DataFrame, column: str) -> float:
    """Median of a column over a key's trials, NaN when no trial has it (e.g. peak memory)."""
    if column not in group:
        return math.nan
    values = pd.to_numeric(group[column], errors="coerce").dropna()
    return float(values.median()) if len(values) else math.nan


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
                kinds: Iterable[str] | None = None, precision: str | None = None) -> LatencyTable:
    """A table from a MeasurementStore, refusing a selection that mixes settings (precision
    included: fp32 and int8 measurements of one device make two tables)."""
    frame = store.measurements_frame(device_id=device_id, runtime=runtime, threads=threads,
                                     core_mask=core_mask, kinds=list(kinds) if kinds else None,
                                     precision=precision, accelerator=accelerator)
    frame = frame[~frame["kind"].isin(WHOLE_MODEL_KINDS)]
    identity = select_one_setting(frame, what=f"store {getattr(store, 'path', '')}".strip())
    quality = store.quality_frame(device_id=identity["device_id"], runtime=identity["runtime"],
                                  threads=identity["threads"], core_mask=identity["core_mask"],
                                  precision=identity.get("precision", DEFAULT_PRECISION),
                                  accelerator=identity["accelerator"])
    settings = dict(identity)
    settings["warmup"] = _common_value(frame, "warmup")
    settings["runs"] = _common_value(frame, "runs")
    runners = sorted({f"{n}=={v}" for n, v in zip(frame["runner_name"], frame["runner_version"])})
    run_ids = sorted(int(r) for r in frame["run_id"].unique())
    cache = _run_setting(store, run_ids, "cache", "warm")
    if cache != "warm":
        settings["cache"] = cache
    if _run_setting(store, run_ids, "pace", False):
        settings["pace"] = True
    space_name, text = _space_of(store, run_ids, space)
    metadata = {"runners": runners, "runs": run_ids, "space_yaml": text,
                "space_digest": space_digest(text) if text else None,
                "source": {"store": str(getattr(store, "path", "")), "measurements": int(len(frame))},
                "built": pd.Timestamp.now(tz="UTC").isoformat(), "correction": None,
                "lutnas_version": lutnas.__version__, "ci95_ms": _intervals(frame)}
    table = LatencyTable.from_latencies(aggregate(frame, quality), store.device_info(identity["device_id"]),
                                        settings, space_name, metadata)
    if table.run_settings().pace:  # the ms unit of a paced table: whole models measured later use it
        table.metadata["pace_scales_ms"] = store.pace_scales(identity["device_id"], table.run_settings())
        table.metadata["mixed_pace_statistics"] = mixed_pace_statistics(frame)
    return table


def mixed_pace_statistics(frame: pd.DataFrame) -> list[str]:
    """Keys whose paced trials use both statistics: rows stored before store schema 5 (the ratio
    of the run median to the pace median) next to rows with `pace_ratio` (the paired statistic).
    The two differed by -0.2% to +1.1% (median over blocks, benchmarks/results/paced_estimator.json),
    so such a key's figure mixes two slightly different measures."""
    paced = frame[frame["pace_ms"].notna()]
    if paced.empty:
        return []
    has_ratio = paced["pace_ratio"].notna().groupby(paced["key"]).agg(["any", "all"])
    return sorted(str(k) for k in has_ratio.index[has_ratio["any"] & ~has_ratio["all"]])


_MIXING_ADVICE = {
    # a cold-L2 block is ~13 % slower (benchmarks/results/lut_gap.json)
    "cache": "cache states ({}); profile into a separate store per --cache-state",
    # paced figures are in the pace model's units, unpaced ones in this moment's ms
    "pace": "paced and unpaced runs ({}); profile into a separate store with or without --pace",
}


def _run_setting(store: Any, run_ids: list[int], name: str, default: Any) -> Any:
    """The one value of the timing-loop setting `name` (RunSettings.cache or .pace) the runs
    `run_ids` measured under; TableError when they mix values."""
    if not hasattr(store, "runs_frame"):
        return default
    runs = store.runs_frame()
    values = {(s or {}).get(name) or default for r, s in zip(runs["run_id"], runs["settings"])
              if int(r) in set(run_ids)}
    if len(values) > 1:
        raise TableError("the store's block measurements mix "
                         + _MIXING_ADVICE[name].format(", ".join(sorted(map(str, values)))))
    return values.pop() if values else default


def _intervals(frame: pd.DataFrame) -> dict[str, list[float]]:
    """key -> [low, high] ms, the 95% confidence interval of its figure (`median_ci`)."""
    from lutnas.tables.store import median_ci

    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    out = {}
    for key, group in ok.groupby("key", sort=True):
        ci = median_ci(group["median_ms"].dropna().tolist())
        if ci is not None:
            out[str(key)] = [ci[0], ci[1]]
    return out


def _space_of(store: Any, run_ids: list[int], space: str | None) -> tuple[str, str | None]:
    """Name and YAML text of the table's space: `space` (--space) when given, else the space the
    runs recorded (their YAML text, so the table works once the file is gone), else, for runs from
    before stores kept the text, the space their name loads (built-in) or the bare name."""
    if space is None:
        recorded = store.run_spaces(run_ids) if hasattr(store, "run_spaces") else {}
        texts = {digest: (name, text) for name, digest, text in recorded.values()}
        if len(texts) > 1:
            names = sorted({name for name, _ in texts.values()})
            raise TableError(f"the selected measurements come from runs of {len(texts)} different "
                             f"spaces ({', '.join(names)}); name the space of the table with --space")
        if texts:
            return next(iter(texts.values()))
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
    return loaded.name, space_yaml(loaded)
