"""Once-for-All and ProxylessNAS style lookup tables (`{key: {count, mean, std|var}}` YAML) imported
as latency tables.

Two key grammars share this format. OFA's MobileNetV3 tables (e.g. Note10) state each MBConv's
options: `expanded_conv-input:HxWxC-output:HxWxC-expand:MID-kernel:K-stride:S-idskip:I-se:0|1-hs:0|1`,
where `expand` is the middle channel count and `hs` picks h-swish over ReLU; their first conv is
MobileNetV3's h-swish stem. ProxylessNAS's tables stop at `idskip` (`expand` is then the ratio, and
there is no SE) and state no activation at all (ProxylessNAS uses ReLU6): an activation a table does
not state must come from the user (`activation=`, `--activation`) or from the file (a top-level
`activation: relu6`), never from a default. The other entries (Conv_1, Logits, ...) have no single
lutnas block and are kept under their own names (kind `foreign`) or dropped.

An entry's spread is kept: `std` as is, or `var` (a variance) as its square root.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from lutnas.device_agents.base import DeviceInfo
from lutnas.errors import TableError
from lutnas.space import BlockSpec
from lutnas.space.vocabulary import ACTIVATIONS
from lutnas.tables.frame import kind_of
from lutnas.tables.table import UNKNOWN_RUNTIME, LatencyTable

_SHAPE = r"(\d+)x(\d+)x(\d+)"
_MBCONV = rf"^expanded_conv-input:{_SHAPE}-output:{_SHAPE}-expand:(\d+)-kernel:(\d+)-stride:(\d+)-idskip:(\d)"
_OFA_MBCONV = re.compile(_MBCONV + r"-se:(\d)-hs:(\d)$")
_PROXYLESS_MBCONV = re.compile(_MBCONV + r"$")
_OFA_STEM = re.compile(rf"^Conv-input:{_SHAPE}-output:{_SHAPE}$")
FOREIGN_KIND = "foreign"
IMPORTED_FLAG = "imported"
# The activation of the first conv of OFA's MobileNetV3 tables (their MBConv keys state their own).
OFA_STEM_ACTIVATION = "hswish"
ACTIVATION_KEY = "activation"  # optional top-level entry naming what the keys leave unstated


def ofa_key_to_lutnas(key: str, activation: str | None = None) -> str | None:
    """Map an OFA or ProxylessNAS table key to a lutnas block key (None: no lutnas counterpart).

    `activation`: of the blocks whose key states none (the first conv; ProxylessNAS MBConv keys).
    None keeps OFA's MobileNetV3 reading (h-swish first conv) and makes a ProxylessNAS MBConv key a
    TableError asking for it. OFA's `expand` is the middle channel count, lutnas's `e` the ratio to
    the input channels (a count that is no multiple of the input gives None); ProxylessNAS's is the
    ratio. Raises TableError for an activation lutnas does not know.
    """
    if activation is not None and activation not in ACTIVATIONS:
        raise TableError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    match = _OFA_MBCONV.match(key)
    if match:
        hi, _, cin, _, _, cout, mid, k, s, _, se, hs = (int(g) for g in match.groups())
        if cin == 0 or mid % cin:
            return None
        return BlockSpec.make("mbconv", hw=hi, cin=cin, cout=cout, k=k, s=s, e=mid // cin, se=se,
                              act="hswish" if hs else "relu").key
    match = _PROXYLESS_MBCONV.match(key)
    if match:
        if activation is None:
            raise TableError(f"key {key!r} states no activation (ProxylessNAS tables use relu6); "
                             f"pass --activation NAME or add `{ACTIVATION_KEY}: NAME` to the file")
        hi, _, cin, _, _, cout, ratio, k, s, _ = (int(g) for g in match.groups())
        return BlockSpec.make("mbconv", hw=hi, cin=cin, cout=cout, k=k, s=s, e=ratio, se=0,
                              act=activation).key
    match = _OFA_STEM.match(key)
    if match:
        hi, _, cin, ho, _, cout = (int(g) for g in match.groups())
        stride = max(1, round(hi / ho)) if ho else 1
        return BlockSpec.make("conv", hw=hi, cin=cin, cout=cout, k=3, s=stride,
                              act=activation or OFA_STEM_ACTIVATION).key
    return None


def read_ofa_yaml(path: str | Path) -> dict[str, dict[str, float]]:
    """The entries of one OFA-style table file (without a top-level `activation`); TableError for a
    file that is not one."""
    entries, _ = _read(Path(path))
    return entries


def _read(path: Path) -> tuple[dict[str, dict[str, float]], str | None]:
    """(entries, the file's top-level `activation` or None)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TableError(f"{path}: cannot read as YAML ({first})") from None
    if not isinstance(data, dict) or not data:
        raise TableError(f"{path}: an OFA table is a mapping key -> {{count, mean, std}}")
    activation = data.pop(ACTIVATION_KEY, None)
    if activation is not None and not isinstance(activation, str):
        raise TableError(f"{path}: `{ACTIVATION_KEY}` must name an activation, got {activation!r}")
    for key, entry in data.items():
        if not isinstance(entry, dict) or "mean" not in entry:
            raise TableError(f"{path}: entry {key!r} is not {{count, mean, std}}; "
                             f"is this an OFA-style lookup table?")
    return data, activation


def _std(entry: dict[str, Any], key: str) -> float:
    """The entry's standard deviation in ms: `std`, or the square root of `var` (a variance)."""
    if entry.get("std") is not None:
        return float(entry["std"])
    var = entry.get("var")
    if var is None:
        return math.nan  # the file does not say
    if float(var) < 0:
        raise TableError(f"entry {key!r} has a negative variance {var}; fix the file")
    return math.sqrt(float(var))


def _row(entry: dict[str, Any], kind: str, file_name: str, key: str) -> dict[str, Any]:
    """A table row of one entry: its mean is the figure (what OFA sums), count the trials."""
    mean = float(entry["mean"])
    std = _std(entry, key)
    return {"median_ms": mean, "mean_ms": mean, "std_ms": std, "trials": int(entry.get("count") or 0),
            "cv": std / mean if mean > 0 else math.nan, "kind": kind,
            "source": f"imported:{file_name}"}


def _activation_of(files: list[tuple[Path, dict[str, Any], str | None]], given: str | None) -> str | None:
    """The activation for keys that state none: `given`, else the files' own; TableError when some
    key needs one and neither says it (or the files disagree)."""
    if given is not None:
        return given
    stated = {a for _, _, a in files if a is not None}
    if len(stated) > 1:
        raise TableError(f"the files state different activations {sorted(stated)}; import them "
                         f"separately or pass --activation")
    if stated:
        return stated.pop()
    keys = [k for _, entries, _ in files for k in entries]
    ofa_style = any(_OFA_MBCONV.match(k) for k in keys)
    unstated = next((k for k in keys if _PROXYLESS_MBCONV.match(k)
                     or (not ofa_style and _OFA_STEM.match(k))), None)
    if unstated is not None:
        raise TableError(f"key {unstated!r} states no activation and neither does the file "
                         f"(ProxylessNAS tables use relu6); pass --activation NAME or add "
                         f"`{ACTIVATION_KEY}: NAME` to the file")
    return None


def import_ofa_yaml(paths: Iterable[str | Path],
                    key_map: Callable[[str], str | None] | None = None,
                    device: DeviceInfo | None = None, keep_unmapped: bool = True,
                    space: str = "", activation: str | None = None) -> LatencyTable:
    """A LatencyTable from OFA- or ProxylessNAS-style `{key: {count, mean, std|var}}` YAML files.

    `key_map` turns a foreign key into a lutnas key (default `ofa_key_to_lutnas` with the
    activation); keys it maps to None are kept under their own name (kind "foreign") when
    `keep_unmapped`, else dropped. `activation` is that of keys stating none (else the files'
    top-level `activation`; TableError when a key needs one and nothing states it). The mean is
    the figure, since it is what OFA sums; count and std (or sqrt(var)) are kept as trials and std.
    A key met twice (files of two resolutions share late-stage shapes) keeps the larger count.
    """
    files = [(Path(p), *_read(Path(p))) for p in paths]
    if key_map is None:
        act = _activation_of(files, activation)
        key_map = functools.partial(ofa_key_to_lutnas, activation=act)
    else:
        act = activation
    rows: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}  # lutnas key -> the foreign key whose entry it holds
    unmapped = duplicates = 0
    for path, entries, _ in files:
        for foreign, entry in entries.items():
            key = key_map(str(foreign))
            if key is None:
                unmapped += 1
                if not keep_unmapped:
                    continue
            row = _row(entry, kind_of(key) if key else FOREIGN_KIND, path.name, str(foreign))
            key = key or str(foreign)
            if key in rows:
                # Files of different resolutions share late-stage shapes: keep the better-measured one.
                duplicates += 1
                if rows[key]["trials"] >= row["trials"]:
                    continue
            rows[key], origin[key] = row, str(foreign)
    if not rows:
        raise TableError("the OFA files held no entries the key mapping accepted")
    device = device or DeviceInfo(device_id="imported:ofa", kind="android", model="unknown")
    settings = {"device_id": device.device_id, "runtime": UNKNOWN_RUNTIME, "threads": None,
                "core_mask": "unknown", "accelerator": "cpu"}
    metadata = {"imported_from": [str(p) for p, _, _ in files], "unmapped_keys": unmapped,
                "duplicate_keys": duplicates, "activation_unstated_keys": act,
                # OFA's idskip:0 blocks have no residual; lutnas's mbconv always adds one (a 1x1
                # projection when widths differ), so these figures miss that shortcut's cost.
                "mbconv_without_shortcut": sum(rows[k]["kind"] == "mbconv" and "-idskip:0" in f
                                               for k, f in origin.items()),
                "correction": None, "space_yaml": None}
    return LatencyTable.from_latencies(rows, device, settings, space, metadata, flag=IMPORTED_FLAG)
