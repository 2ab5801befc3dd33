"""Once-for-All style lookup tables (`{key: {count, mean, std}}` YAML) imported as latency tables.

OFA published per-device tables for its MobileNetV3 space (e.g. Note10); their MBConv and stem
entries map onto lutnas block keys, the rest are kept under their own names (kind `foreign`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from lutnas.device_agents.base import DeviceInfo
from lutnas.errors import TableError
from lutnas.space import BlockSpec
from lutnas.tables.frame import kind_of
from lutnas.tables.table import UNKNOWN_RUNTIME, LatencyTable

_SHAPE = r"(\d+)x(\d+)x(\d+)"
_OFA_MBCONV = re.compile(
    rf"^expanded_conv-input:{_SHAPE}-output:{_SHAPE}-expand:(\d+)-kernel:(\d+)-stride:(\d+)"
    r"-idskip:(\d)-se:(\d)-hs:(\d)$")
_OFA_STEM = re.compile(rf"^Conv-input:{_SHAPE}-output:{_SHAPE}$")
FOREIGN_KIND = "foreign"
IMPORTED_FLAG = "imported"


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
    """The entries of one OFA table file; TableError for a file that is not one."""
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


def _row(entry: dict[str, Any], kind: str, file_name: str) -> dict[str, Any]:
    """A table row of one OFA entry: its mean is the figure (what OFA sums), count the trials."""
    mean = float(entry["mean"])
    std = float(entry.get("std") or 0.0)
    return {"median_ms": mean, "mean_ms": mean, "std_ms": std, "trials": int(entry.get("count") or 0),
            "cv": std / mean if mean > 0 else math.nan, "kind": kind,
            "source": f"imported:{file_name}"}


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
            kind = kind_of(key) if key else FOREIGN_KIND
            if key is None:
                unmapped += 1
                if not keep_unmapped:
                    continue
                key = str(foreign)
            row = _row(entry, kind, Path(path).name)
            if key in rows:
                # Files of different resolutions share late-stage shapes: keep the better-measured one.
                duplicates += 1
                if rows[key]["trials"] >= row["trials"]:
                    continue
            rows[key] = row
    if not rows:
        raise TableError("the OFA files held no entries the key mapping accepted")
    device = device or DeviceInfo(device_id="imported:ofa", kind="android", model="unknown")
    settings = {"device_id": device.device_id, "runtime": UNKNOWN_RUNTIME, "threads": None,
                "core_mask": "unknown", "accelerator": "cpu"}
    metadata = {"imported_from": files, "unmapped_keys": unmapped, "duplicate_keys": duplicates,
                "correction": None, "space_yaml": None}
    return LatencyTable.from_latencies(rows, device, settings, space, metadata, flag=IMPORTED_FLAG)
