"""Analytic cost of a block: MACs, parameters and memory traffic.

Computed from the BlockSpec alone so that search and samplers can price millions of subnets without
building modules. MACs count what `torch.utils.flop_counter` counts (convolutions, linear layers and
matmuls; FLOPs = 2 x MACs), and the tests hold these formulas to that measured count. Memory traffic
is the fp32 bytes of weights read plus, per layer, the activations it reads and writes: it is what
a memory-bound phone CPU pays for, which FLOPs miss (AutoViT's point).
"""

from __future__ import annotations

from dataclasses import dataclass

from lutnas.supernet import functional as Fn
from lutnas.supernet.blocks import BlockSpec, conv_out

BYTES_PER_VALUE = 4


@dataclass(frozen=True)
class Complexity:
    macs: int
    params: int
    bytes_read: int
    bytes_written: int

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte moved: low values are memory-bound on every phone CPU."""
        return self.flops / max(1, self.bytes_moved)

    def __add__(self, other: "Complexity") -> "Complexity":
        return Complexity(self.macs + other.macs, self.params + other.params,
                          self.bytes_read + other.bytes_read,
                          self.bytes_written + other.bytes_written)


ZERO = Complexity(0, 0, 0, 0)


class _Tally:
    """Accumulates layers: (MACs, weights, activation values in, activation values out)."""

    def __init__(self) -> None:
        self.macs = self.params = self.read = self.written = 0

    def layer(self, macs: int, weights: int, values_in: int, values_out: int) -> None:
        self.macs += macs
        self.params += weights
        self.read += weights + values_in
        self.written += values_out

    def result(self) -> Complexity:
        b = BYTES_PER_VALUE
        return Complexity(self.macs, self.params, self.read * b, self.written * b)


def _mbconv(t: _Tally, hw: int, cin: int, cout: int, k: int, s: int, e: int, se: int) -> None:
    mid = cin * e
    ho = conv_out(hw, s)
    if e != 1:
        t.layer(hw * hw * cin * mid, cin * mid + 2 * mid, hw * hw * cin, hw * hw * mid)
    t.layer(ho * ho * mid * k * k, mid * k * k + 2 * mid, hw * hw * mid, ho * ho * mid)
    if se:
        sm = Fn.se_channels(mid)
        t.layer(mid * sm + sm * mid, mid * sm + sm + sm * mid + mid, ho * ho * mid, ho * ho * mid)
    t.layer(ho * ho * mid * cout, mid * cout + 2 * cout, ho * ho * mid, ho * ho * cout)


def block_complexity(spec: BlockSpec) -> Complexity:
    p = spec.as_dict()
    t = _Tally()
    kind = spec.kind
    if kind in ("conv", "conv2d"):
        hw, cin, cout, k = p["hw"], p["cin"], p["cout"], p["k"]
        ho = conv_out(hw, p["s"])
        bn = 2 * cout if kind == "conv" else 0
        t.layer(ho * ho * cout * cin * k * k, cout * cin * k * k + bn, hw * hw * cin, ho * ho * cout)
    elif kind == "mbconv":
        _mbconv(t, p["hw"], p["cin"], p["cout"], p["k"], p["s"], p["e"], p["se"])
    elif kind == "attn":
        hw, c = p["hw"], p["c"]
        n = hw * hw
        heads = max(1, c // p["hd"])
        qk, dv = heads * p["hd"], p["hd"] * p["vs"]
        v = heads * dv
        t.layer(0, 2 * c, n * c, n * c)  # LayerNorm
        t.layer(n * c * (2 * qk + v), c * (2 * qk + v) + 2 * qk + v, n * c, n * (2 * qk + v))
        t.layer(n * v * 9, v * 9 + v, n * v, n * v)  # depthwise 3x3 on V
        t.layer(heads * n * n * p["hd"], heads * (2 * hw - 1) ** 2, 2 * n * qk, heads * n * n)
        t.layer(heads * n * n * dv, 0, heads * n * n + n * v, n * v)
        t.layer(n * v * c, v * c + c, n * v, n * c)
    elif kind == "ffn":
        n, c, h = p["hw"] ** 2, p["c"], p["c"] * p["r"]
        t.layer(0, 2 * c, n * c, n * c)
        t.layer(n * c * h, c * h + h, n * c, n * h)
        t.layer(n * h * c, h * c + c, n * h, n * c)
    elif kind == "head":
        hw, cin, cmid, chid, ncls = p["hw"], p["cin"], p["cmid"], p["chid"], p["ncls"]
        t.layer(hw * hw * cin * cmid, cin * cmid + 2 * cmid, hw * hw * cin, hw * hw * cmid)
        t.layer(cmid * chid, cmid * chid + chid, cmid, chid)
        t.layer(chid * ncls, chid * ncls + ncls, chid, ncls)
    elif kind == "dwconv":
        hw, c, k = p["hw"], p["c"], p["k"]
        ho = conv_out(hw, p["s"])
        t.layer(ho * ho * c * k * k, c * k * k, hw * hw * c, ho * ho * c)
    elif kind == "linear":
        t.layer(p["n"] * p["cin"] * p["cout"], p["cin"] * p["cout"] + p["cout"],
                p["n"] * p["cin"], p["n"] * p["cout"])
    elif kind == "matmul":
        b, n, k, m = p["b"], p["n"], p["k"], p["m"]
        t.layer(b * n * k * m, 0, b * n * k + b * k * m, b * n * m)
    elif kind == "softmax":
        values = p["b"] * p["n"] * p["m"]
        t.layer(0, 0, values, values)
    elif kind == "layernorm":
        t.layer(0, 2 * p["c"], p["n"] * p["c"], p["n"] * p["c"])
    elif kind in ("activation", "add"):
        values = p["n"] * p["c"]
        t.layer(0, 0, values * (2 if kind == "add" else 1), values)
    elif kind == "pool":
        t.layer(0, 0, p["hw"] ** 2 * p["c"], p["c"])
    return t.result()


def total_complexity(specs: list[BlockSpec]) -> Complexity:
    total = ZERO
    for spec in specs:
        total = total + block_complexity(spec)
    return total
