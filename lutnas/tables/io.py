"""Latency tables on disk: Parquet (the format lutnas keeps), CSV/JSON exports, OFA YAML imports.

The Parquet file's schema metadata holds the table's context as JSON under one key, so a table is
one self-describing file that loads without executing code (no pickle). Loading checks that key and
its schema version first and refuses, in one line, anything it does not understand.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

import lutnas
from lutnas.device_agents.base import DeviceInfo
from lutnas.errors import TableError
from lutnas.fileio import atomic_path
from lutnas.plotting import pyplot, save_figure
from lutnas.space import BlockSpec
from lutnas.tables.table import COLUMNS, SCHEMA_VERSION, LatencyTable, make_frame

METADATA_KEY = b"lutnas.latency_table"


def save_parquet(table: LatencyTable, path: str | Path) -> Path:
    """Write atomically (temp file + rename) so an interrupted save never leaves half a table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = table.frame.reset_index()
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(table.full_metadata(), sort_keys=True, default=_json_default)
    arrow = arrow.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_parquet(path: str | Path) -> LatencyTable:
    path = Path(path)
    if not path.is_file():
        raise TableError(f"table {path} does not exist; build one with `lutnas build-table`")
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise TableError(f"{path} is not a readable Parquet file ({first}); "
                         f"rebuild it with `lutnas build-table`") from None
    raw = (arrow.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise TableError(f"{path} is a Parquet file but not a lutnas latency table "
                         f"(no lutnas metadata); build tables with `lutnas build-table`")
    try:
        meta = json.loads(raw)
        version = int(meta["schema_version"])
    except (ValueError, KeyError, TypeError):
        raise TableError(f"{path}: the lutnas metadata is damaged; rebuild the table") from None
    if version > SCHEMA_VERSION:
        raise TableError(f"{path} has table schema {version}, newer than this lutnas "
                         f"{lutnas.__version__} reads (<= {SCHEMA_VERSION}); upgrade lutnas")
    if version < 1:
        raise TableError(f"{path} has an unknown table schema version {version}; rebuild the table")
    frame = arrow.to_pandas()
    missing = [c for c in ("key", *COLUMNS) if c not in frame.columns]
    if missing:
        raise TableError(f"{path} lacks table columns {missing}; rebuild the table")
    try:
        device = DeviceInfo.from_dict(meta["device"])
        settings = dict(meta["settings"])
        space = str(meta.get("space", ""))
    except (KeyError, TypeError) as exc:
        raise TableError(f"{path}: the lutnas metadata lacks {exc}; rebuild the table") from None
    frame = frame.set_index("key")
    frame["operator_ms"] = pd.Series([v if isinstance(v, str) else None for v in frame["operator_ms"]],
                                     index=frame.index, dtype=object)
    extra = {k: v for k, v in meta.items() if k not in ("device", "settings", "space")}
    return LatencyTable(frame, device, settings, space, extra)


# ---------------------------------------------------------------------- exports

def export_csv(table: LatencyTable, path: str | Path) -> Path:
    """Rows only; the context goes to a `# ` comment line on top so the file stays one artifact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        handle.write(f"# lutnas latency table: {table.describe_settings()} space={table.space}\n")
        table.frame.reset_index().to_csv(handle, index=False)
    return path


def to_json_dict(table: LatencyTable) -> dict[str, Any]:
    entries = {}
    for key, row in table.frame.iterrows():
        entry = {}
        for column in COLUMNS:
            value = row[column]
            if column == "operator_ms":
                value = json.loads(value) if isinstance(value, str) else None
            elif isinstance(value, float) and math.isnan(value):
                value = None
            elif isinstance(value, np.generic):
                value = value.item()
            entry[column] = value
        entries[str(key)] = entry
    return {"metadata": table.full_metadata(), "entries": entries}


def export_json(table: LatencyTable, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json_dict(table), indent=1, sort_keys=True, default=_json_default))
    return path


# ---------------------------------------------------------------------- OFA YAML import

_SHAPE = r"(\d+)x(\d+)x(\d+)"
_OFA_MBCONV = re.compile(
    rf"^expanded_conv-input:{_SHAPE}-output:{_SHAPE}-expand:(\d+)-kernel:(\d+)-stride:(\d+)"
    r"-idskip:(\d)-se:(\d)-hs:(\d)$")
_OFA_STEM = re.compile(rf"^Conv-input:{_SHAPE}-output:{_SHAPE}$")


def ofa_key_to_lutnas(key: str) -> str | None:
    """Map an OFA MobileNetV3 table key to a lutnas block key (None: no lutnas counterpart).

    OFA's `expand` is the middle channel count, lutnas's `e` the ratio to the input channels.
    OFA's first conv is 3x3 with h-swish; its stride follows from the shapes. The head parts
    (Conv_1, AvgPool2D, Conv_2, Logits) are separate OFA entries with no single lutnas block.
    """
    match = _OFA_MBCONV.match(key)
    if match:
        hi, _, cin, _, _, cout, mid, k, s, _, se, hs = (int(g) for g in match.groups())
        if cin == 0 or mid % cin:
            return None
        act = "hswish" if hs else "relu"
        return BlockSpec.make("mbconv", hw=hi, cin=cin, cout=cout, k=k, s=s, e=mid // cin, se=se,
                              act=act).key
    match = _OFA_STEM.match(key)
    if match:
        hi, _, cin, ho, _, cout = (int(g) for g in match.groups())
        stride = max(1, round(hi / ho)) if ho else 1
        return BlockSpec.make("conv", hw=hi, cin=cin, cout=cout, k=3, s=stride, act="hswish").key
    return None


def read_ofa_yaml(path: str | Path) -> dict[str, dict[str, float]]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TableError(f"{path}: cannot read as YAML ({first})") from None
    if not isinstance(data, dict) or not data:
        raise TableError(f"{path}: an OFA table is a mapping key -> {{count, mean, std}}")
    for key, entry in data.items():
        if not isinstance(entry, dict) or "mean" not in entry:
            raise TableError(f"{path}: entry {key!r} is not {{count, mean, std}}; "
                             f"is this an OFA-style lookup table?")
    return data


def import_ofa_yaml(paths: Iterable[str | Path],
                    key_map: Callable[[str], str | None] = ofa_key_to_lutnas,
                    device: DeviceInfo | None = None, keep_unmapped: bool = True,
                    space: str = "") -> LatencyTable:
    """A LatencyTable from OFA-style `{key: {count, mean, std}}` YAML files.

    `key_map` turns a foreign key into a lutnas key; keys it maps to None are kept under their own
    name (kind "foreign") when `keep_unmapped`, else dropped. The mean is the table's figure since
    it is what OFA sums; count and std are kept as trials and std. A key met twice (files of two
    resolutions share late-stage shapes) keeps the entry with the larger count.
    """
    rows: dict[str, dict[str, Any]] = {}
    files, unmapped, duplicates = [], 0, 0
    for path in paths:
        files.append(str(path))
        for foreign, entry in read_ofa_yaml(path).items():
            key = key_map(str(foreign))
            kind = key.partition(":")[0] if key else "foreign"
            if key is None:
                unmapped += 1
                if not keep_unmapped:
                    continue
                key = str(foreign)
            mean = float(entry["mean"])
            std = float(entry.get("std") or 0.0)
            count = int(entry.get("count") or 0)
            if key in rows:
                # Files of different resolutions share late-stage shapes: keep the better-measured one.
                duplicates += 1
                if rows[key]["trials"] >= count:
                    continue
            rows[key] = {"median_ms": mean, "mean_ms": mean, "std_ms": std, "min_ms": math.nan,
                         "p90_ms": math.nan, "trials": count,
                         "cv": std / mean if mean > 0 else math.nan, "flag": "imported",
                         "kind": kind, "source": f"imported:{Path(path).name}",
                         "operator_ms": None}
    if not rows:
        raise TableError("the OFA files held no entries the key mapping accepted")
    frame = make_frame(rows)
    device = device or DeviceInfo(device_id="imported:ofa", kind="android", model="unknown")
    settings = {"device_id": device.device_id, "runtime": "unknown", "threads": None,
                "core_mask": "unknown", "accelerator": "cpu"}
    metadata = {"imported_from": files, "unmapped_keys": unmapped, "duplicate_keys": duplicates,
                "correction": None,
                "space_yaml": None}
    return LatencyTable(frame, device, settings, space, metadata)


def plot_diff(diff: Any, path: str | Path, name_a: str = "A", name_b: str = "B") -> Path:
    """Per-key B against A on log axes (one colour per kind) and the per-kind ratio bars."""
    plt = pyplot()

    per_key, per_kind = diff.per_key, diff.per_kind
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5), dpi=110)
    for kind, group in per_key.groupby("kind"):
        left.scatter(group["a_ms"], group["b_ms"], s=12, alpha=0.8, label=str(kind))
    if len(per_key):
        low = float(min(per_key["a_ms"].min(), per_key["b_ms"].min())) * 0.8
        high = float(max(per_key["a_ms"].max(), per_key["b_ms"].max())) * 1.25
        left.plot([low, high], [low, high], color="black", linewidth=1)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel(f"{name_a} (ms)")
    left.set_ylabel(f"{name_b} (ms)")
    left.set_title("per key")
    left.legend(fontsize=8)
    right.bar(per_kind.index.astype(str), per_kind["ratio_of_sums"], color="tab:blue", alpha=0.8)
    right.errorbar(per_kind.index.astype(str), per_kind["median_ratio"],
                   yerr=[per_kind["median_ratio"] - per_kind["min_ratio"],
                         per_kind["max_ratio"] - per_kind["median_ratio"]],
                   fmt="o", color="black", capsize=4, label="median (min-max) per key")
    right.axhline(1.0, color="grey", linewidth=1)
    right.set_ylabel(f"{name_b} / {name_a}")
    right.set_title("per kind (bar: ratio of sums)")
    right.legend(fontsize=8)
    return save_figure(fig, path)
