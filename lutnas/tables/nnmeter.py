"""nn-Meter block lookup tables (ElasticViT's Pixel 1 / 4 / 6 / Xiaomi 11 tables) as latency tables.

nn-Meter's hybrid-transformer predictor ships one JSON object per phone, block key -> median latency
in ms (TFLite fp32, CPU); ElasticViT's search summed them. Its blocks are lutnas's blocks (DESIGN.md
takes its granularity from these tables), so every key of its grammar names exactly one BlockSpec:

| nn-Meter key | BlockSpec |
|---|---|
| `firstconv_{hw}_{cin}_{cout}_{s}_{k}` | `conv` (the stem conv) |
| `conv_{hw}_{cin}_{cout}_{e}_{s}_{act}_{k}_{se|nose}` | `mbconv` (projection shortcut included) |
| `transds_{hw}_{cin}_{cout}_{s}_{e}` | `mbconv`, kernel 3, SE (a transformer stage's downsample) |
| `transattn_{hw}_{c}_{act}_{vscale}_ln` | `attn`, head dim `c // (c // 16)` |
| `transffn_{hw}_{c}_{ratio}_{act}_ln` | `ffn` |
| `mbpool_{hw}_{c}_{hidden}_{expand}_{act}` | `head`, 1000 classes |

`hw` is the block's input size. `firstconv` and `transds` keys state no activation: they take the
space's (ElasticViT uses one activation throughout; the keys that state it say `hard_swish`).
A key that fits none of these is kept out of the rows and reported with its reason; two keys that
name one BlockSpec keep the first one's value (file order) and both are recorded.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lutnas.device_agents.base import DeviceInfo
from lutnas.errors import BlockKeyError, TableError
from lutnas.space import BlockSpec, SearchSpace
from lutnas.tables.table import UNKNOWN_RUNTIME, LatencyTable

IMPORTED_FLAG = "imported"
# nn-Meter's activation names -> lutnas's.
ACTIVATIONS = {"hard_swish": "hswish", "hswish": "hswish", "relu": "relu", "relu6": "relu6",
               "gelu": "gelu"}
# nn-Meter's attention: heads = c // 16, head dim = c // heads; its head is ImageNet's.
HEAD_WIDTH = 16
NUM_CLASSES = 1000
# nn-Meter's transformer downsample: an MBConv with a 3x3 depthwise conv and SE.
DOWNSAMPLE_KERNEL, DOWNSAMPLE_SE = 3, 1

_ACT = r"([a-z][a-z0-9_]*?)"


class Unmapped(Exception):
    """A key with no lutnas BlockSpec; the message is the reason (grouped in the summary)."""


def _act(name: str) -> str:
    if name not in ACTIVATIONS:
        raise Unmapped(f"activation {name!r} has no lutnas counterpart")
    return ACTIVATIONS[name]


def _firstconv(g: tuple[str, ...], act: str) -> BlockSpec:
    hw, cin, cout, s, k = (int(v) for v in g)
    return BlockSpec.make("conv", hw=hw, cin=cin, cout=cout, k=k, s=s, act=act)


def _conv(g: tuple[str, ...], act: str) -> BlockSpec:
    hw, cin, cout, e, s = (int(v) for v in g[:5])
    return BlockSpec.make("mbconv", hw=hw, cin=cin, cout=cout, k=int(g[6]), s=s, e=e,
                          se=int(g[7] == "se"), act=_act(g[5]))


def _transds(g: tuple[str, ...], act: str) -> BlockSpec:
    hw, cin, cout, s, e = (int(v) for v in g)
    return BlockSpec.make("mbconv", hw=hw, cin=cin, cout=cout, k=DOWNSAMPLE_KERNEL, s=s, e=e,
                          se=DOWNSAMPLE_SE, act=act)


def _norm(name: str) -> None:
    if name != "ln":
        raise Unmapped(f"transformer block with norm {name!r} (lutnas's use LayerNorm, 'ln')")


def _transattn(g: tuple[str, ...], act: str) -> BlockSpec:
    hw, c, vs = int(g[0]), int(g[1]), int(g[3])
    _norm(g[4])
    heads = c // HEAD_WIDTH
    if heads < 1:
        raise Unmapped(f"attention narrower than one {HEAD_WIDTH}-wide head")
    return BlockSpec.make("attn", hw=hw, c=c, hd=c // heads, vs=vs, act=_act(g[2]))


def _transffn(g: tuple[str, ...], act: str) -> BlockSpec:
    _norm(g[4])
    return BlockSpec.make("ffn", hw=int(g[0]), c=int(g[1]), r=int(g[2]), act=_act(g[3]))


def _mbpool(g: tuple[str, ...], act: str) -> BlockSpec:
    hw, cin, hidden, expand = (int(v) for v in g[:4])
    return BlockSpec.make("head", hw=hw, cin=cin, cmid=expand * cin, chid=hidden, ncls=NUM_CLASSES,
                          act=_act(g[4]))


@dataclass(frozen=True)
class KeyForm:
    """One nn-Meter key form: its pattern and the BlockSpec its groups make (act: the unstated one)."""

    prefix: str
    pattern: re.Pattern[str]
    make: Callable[[tuple[str, ...], str], BlockSpec]


KEY_FORMS = {form.prefix: form for form in (
    KeyForm("firstconv", re.compile(r"^firstconv_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)$"), _firstconv),
    KeyForm("conv", re.compile(rf"^conv_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_{_ACT}_(\d+)_(se|nose)$"), _conv),
    KeyForm("transds", re.compile(r"^transds_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)$"), _transds),
    KeyForm("transattn", re.compile(rf"^transattn_(\d+)_(\d+)_{_ACT}_(\d+)_([a-z]+)$"), _transattn),
    KeyForm("transffn", re.compile(rf"^transffn_(\d+)_(\d+)_(\d+)_{_ACT}_([a-z]+)$"), _transffn),
    KeyForm("mbpool", re.compile(rf"^mbpool_(\d+)_(\d+)_(\d+)_(\d+)_{_ACT}$"), _mbpool),
)}


def nnmeter_key_to_spec(key: str, activation: str = "hswish") -> BlockSpec:
    """The BlockSpec an nn-Meter block key names; `activation` is used where the key states none.

    Raises `Unmapped` (its message the reason) for a key of no known form, an unknown activation or
    norm, or values no BlockSpec takes.
    """
    prefix = key.split("_", 1)[0]
    form = KEY_FORMS.get(prefix)
    if form is None:
        raise Unmapped(f"unknown key kind {prefix!r}")
    match = form.pattern.match(key)
    if match is None:
        raise Unmapped(f"{prefix} key not of the form nn-Meter writes")
    try:
        return form.make(match.groups(), activation)
    except BlockKeyError as exc:
        raise Unmapped(f"no lutnas block ({exc})") from None


@dataclass
class NnMeterImport:
    """What an import mapped: rows by lutnas key, and every key it could not or did not keep."""

    rows: dict[str, float] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # lutnas key -> nn-Meter key kept
    unmapped: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {reason, ms}
    collisions: dict[str, dict[str, Any]] = field(default_factory=dict)  # lutnas key -> both

    def reasons(self) -> dict[str, int]:
        """Unmapped keys per reason, most frequent first."""
        return dict(Counter(v["reason"] for v in self.unmapped.values()).most_common())


def map_entries(entries: Mapping[str, Any], activation: str) -> NnMeterImport:
    """Map nn-Meter's key -> ms entries onto BlockSpec keys (pure; see the module docstring)."""
    result = NnMeterImport()
    for key, value in entries.items():
        ms = _milliseconds(value)
        try:
            if ms is None:
                raise Unmapped("latency is not a positive number of ms")
            spec_key = nnmeter_key_to_spec(str(key), activation).key
        except Unmapped as exc:
            result.unmapped[str(key)] = {"reason": str(exc), "ms": ms}
            continue
        if spec_key in result.rows:
            first = result.origin[spec_key]
            record = result.collisions.setdefault(
                spec_key, {"kept": first, "values": {first: result.rows[spec_key]}})
            record["values"][str(key)] = ms
            continue
        result.rows[spec_key] = ms
        result.origin[spec_key] = str(key)
    return result


def _milliseconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value > 0 and value == value and value != float("inf") else None


def read_nnmeter_json(path: str | Path) -> dict[str, Any]:
    """The entries of an nn-Meter LUT file; TableError (one line) for anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise TableError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise TableError(f"{path}: not JSON ({exc}); an nn-Meter table is one JSON object "
                         f"key -> ms") from None
    if not isinstance(data, dict) or not data:
        raise TableError(f"{path}: an nn-Meter table is a non-empty JSON object key -> ms, "
                         f"got {type(data).__name__}")
    return data


def import_nnmeter_json(path: str | Path, space: SearchSpace, device_name: str,
                        runtime: str | None = None, space_yaml: str | None = None) -> LatencyTable:
    """A LatencyTable of `space` from an nn-Meter block-LUT JSON file measured on `device_name`.

    Rows: every mapped key, median = the file's figure (ms), flag `imported`; other statistics are
    unknown (NaN), the file holds one number per key. Metadata: every unmapped key with its reason
    and figure, the reasons' counts, and collisions. `runtime` (e.g. tflite) is recorded when the
    user knows it; else the table says `unknown`. `space_yaml`: the space's text when it came from
    a file, so the table works without it. Raises TableError when no key maps.
    """
    path = Path(path)
    entries = read_nnmeter_json(path)
    mapped = map_entries(entries, space.activation)
    if not mapped.rows:
        reasons = "; ".join(f"{n} {r}" for r, n in list(mapped.reasons().items())[:3])
        raise TableError(f"{path}: none of its {len(entries)} keys is an nn-Meter block key "
                         f"lutnas maps ({reasons}); is this an nn-Meter block LUT?")
    device = DeviceInfo(device_id=device_name, kind="android", model=device_name)
    settings = {"device_id": device_name, "runtime": runtime or UNKNOWN_RUNTIME, "threads": None,
                "core_mask": "unknown", "accelerator": "cpu"}
    metadata = {"imported_from": [str(path)], "import_format": "nn-meter block LUT (key -> ms)",
                "entries": len(entries), "unstated_activation": space.activation,
                "unmapped": mapped.unmapped, "unmapped_reasons": mapped.reasons(),
                "collisions": mapped.collisions, "space_yaml": space_yaml, "correction": None}
    rows = {key: {"median_ms": ms, "source": f"imported:{path.name}", "kind": key.partition(":")[0]}
            for key, ms in mapped.rows.items()}
    return LatencyTable.from_latencies(rows, device, settings, space.name, metadata,
                                       flag=IMPORTED_FLAG)
