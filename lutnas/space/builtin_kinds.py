"""The built-in block and operator kinds of lutnas's spaces, one `BlockKind` record each.

Block granularity follows ElasticViT's phone tables: stem conv, MBConv layer, attention, FFN, head.
Operators are the kinds operator-level profiling measures (BN folds into convs, as on every runtime).
MAC formulas match `torch.utils.flop_counter` on the modules of `supernet/blocks.py` (tests hold it).
"""

from __future__ import annotations

from lutnas.space.blockspec import BlockSpec
from lutnas.space.complexity import Tally
from lutnas.space.kinds import BlockKind, Params, register_kind
from lutnas.space.vocabulary import conv_out, mbconv_shortcut, se_channels

op = BlockSpec.make
# What the built-in blocks compute, as a number: bump it whenever a kind's module changes for the same
# key, so cached exports (their digest includes it) are rebuilt. 2: every MBConv has ElasticViT's
# residual (pooled when strided, projected when the width changes).
BLOCKS_REVISION = 2


def _heads(p: Params) -> int:
    return max(1, p["c"] // p["hd"])


# ------------------------------------------------------------------------------------------ blocks
def _conv_cost(t: Tally, p: Params, bn: bool = True) -> None:
    hw, cin, cout, k = p["hw"], p["cin"], p["cout"], p["k"]
    ho = conv_out(hw, p["s"])
    t.layer(ho * ho * cout * cin * k * k, cout * cin * k * k + (2 * cout if bn else 0),
            hw * hw * cin, ho * ho * cout)


def _conv_ops(p: Params) -> list[BlockSpec]:
    ho = conv_out(p["hw"], p["s"])
    return [op("conv2d", hw=p["hw"], cin=p["cin"], cout=p["cout"], k=p["k"], s=p["s"]),
            op("activation", n=ho * ho, c=p["cout"], act=p["act"])]


def _mbconv_cost(t: Tally, p: Params) -> None:
    """Expand, depthwise, SE, project, then the shortcut's pooling (0 MACs) and 1x1 projection."""
    hw, cin, cout, k, e = p["hw"], p["cin"], p["cout"], p["k"], p["e"]
    mid, ho = cin * e, conv_out(hw, p["s"])
    if e != 1:
        t.layer(hw * hw * cin * mid, cin * mid + 2 * mid, hw * hw * cin, hw * hw * mid)
    t.layer(ho * ho * mid * k * k, mid * k * k + 2 * mid, hw * hw * mid, ho * ho * mid)
    if p["se"]:
        sm = se_channels(mid)
        t.layer(mid * sm + sm * mid, mid * sm + sm + sm * mid + mid, ho * ho * mid, ho * ho * mid)
    t.layer(ho * ho * mid * cout, mid * cout + 2 * cout, ho * ho * mid, ho * ho * cout)
    pool, project = mbconv_shortcut(cin, cout, p["s"])
    if pool:  # no MACs (torch's counter does not count pooling either)
        t.layer(0, 0, hw * hw * cin, ho * ho * cin)
    if project:
        t.layer(ho * ho * cin * cout, cin * cout, ho * ho * cin, ho * ho * cout)


def _mbconv_ops(p: Params) -> list[BlockSpec]:
    hw, mid = p["hw"], p["cin"] * p["e"]
    ho = conv_out(hw, p["s"])
    ops = []
    if p["e"] != 1:
        ops += [op("conv2d", hw=hw, cin=p["cin"], cout=mid, k=1, s=1),
                op("activation", n=hw * hw, c=mid, act=p["act"])]
    ops += [op("dwconv", hw=hw, c=mid, k=p["k"], s=p["s"]),
            op("activation", n=ho * ho, c=mid, act=p["act"])]
    if p["se"]:
        se_mid = se_channels(mid)
        ops += [op("pool", hw=ho, c=mid), op("linear", n=1, cin=mid, cout=se_mid),
                op("linear", n=1, cin=se_mid, cout=mid)]
    ops.append(op("conv2d", hw=ho, cin=mid, cout=p["cout"], k=1, s=1))
    pool, project = mbconv_shortcut(p["cin"], p["cout"], p["s"])
    if pool:
        ops.append(op("avgpool", hw=hw, c=p["cin"], s=p["s"]))
    if project:
        ops.append(op("conv2d", hw=ho, cin=p["cin"], cout=p["cout"], k=1, s=1))
    ops.append(op("add", n=ho * ho, c=p["cout"]))
    return ops


def _attn_cost(t: Tally, p: Params) -> None:
    hw, c = p["hw"], p["c"]
    n, heads = hw * hw, _heads(p)
    qk, dv = heads * p["hd"], p["hd"] * p["vs"]
    v = heads * dv
    t.layer(0, 2 * c, n * c, n * c)  # LayerNorm
    t.layer(n * c * (2 * qk + v), c * (2 * qk + v) + 2 * qk + v, n * c, n * (2 * qk + v))
    t.layer(n * v * 9, v * 9 + v, n * v, n * v)  # depthwise 3x3 on V
    t.layer(heads * n * n * p["hd"], heads * (2 * hw - 1) ** 2, 2 * n * qk, heads * n * n)
    t.layer(heads * n * n * dv, 0, heads * n * n + n * v, n * v)
    t.layer(n * v * c, v * c + c, n * v, n * c)


def _attn_ops(p: Params) -> list[BlockSpec]:
    n, c, heads = p["hw"] ** 2, p["c"], _heads(p)
    qk, v = heads * p["hd"], heads * p["hd"] * p["vs"]
    return [op("layernorm", n=n, c=c), op("linear", n=n, cin=c, cout=2 * qk + v),
            op("dwconv", hw=p["hw"], c=v, k=3, s=1),
            op("matmul", b=heads, n=n, k=p["hd"], m=n), op("softmax", b=heads, n=n, m=n),
            op("matmul", b=heads, n=n, k=n, m=p["hd"] * p["vs"]),
            op("activation", n=n, c=v, act=p["act"]), op("linear", n=n, cin=v, cout=c),
            op("add", n=n, c=c)]


def _ffn_cost(t: Tally, p: Params) -> None:
    n, c, h = p["hw"] ** 2, p["c"], p["c"] * p["r"]
    t.layer(0, 2 * c, n * c, n * c)
    t.layer(n * c * h, c * h + h, n * c, n * h)
    t.layer(n * h * c, h * c + c, n * h, n * c)


def _ffn_ops(p: Params) -> list[BlockSpec]:
    n, c, h = p["hw"] ** 2, p["c"], p["c"] * p["r"]
    return [op("layernorm", n=n, c=c), op("linear", n=n, cin=c, cout=h),
            op("activation", n=n, c=h, act=p["act"]), op("linear", n=n, cin=h, cout=c),
            op("add", n=n, c=c)]


def _head_cost(t: Tally, p: Params) -> None:
    hw, cin, cmid, chid, ncls = p["hw"], p["cin"], p["cmid"], p["chid"], p["ncls"]
    t.layer(hw * hw * cin * cmid, cin * cmid + 2 * cmid, hw * hw * cin, hw * hw * cmid)
    t.layer(cmid * chid, cmid * chid + chid, cmid, chid)
    t.layer(chid * ncls, chid * ncls + ncls, chid, ncls)


def _head_ops(p: Params) -> list[BlockSpec]:
    hw = p["hw"]
    return [op("conv2d", hw=hw, cin=p["cin"], cout=p["cmid"], k=1, s=1),
            op("activation", n=hw * hw, c=p["cmid"], act=p["act"]), op("pool", hw=hw, c=p["cmid"]),
            op("linear", n=1, cin=p["cmid"], cout=p["chid"]),
            op("linear", n=1, cin=p["chid"], cout=p["ncls"])]


def _map_in(channels: str):  # noqa: ANN202 - a tiny shape-rule factory
    return lambda p: (p[channels], p["hw"], p["hw"])


def _map_out(channels: str):  # noqa: ANN202
    return lambda p: conv_out(p["hw"], p["s"]) ** 2 * p[channels]


def _tokens_out(p: Params) -> int:
    return p["hw"] ** 2 * p["c"]


BLOCKS = (
    BlockKind("conv", ("hw", "cin", "cout", "k", "s", "act"), _map_in("cin"), _map_out("cout"),
              _conv_cost, _conv_ops),
    # MBConv layer: [1x1 expand] -> kxk depthwise (stride s) -> [SE] -> 1x1 project, plus a residual
    # that is always there (ElasticViT's MobileBlock, measured so in nn-Meter's phone tables): the
    # input, average-pooled when s > 1, then a 1x1 projection conv (no BN) when cin != cout. The key
    # format is unchanged: the shortcut follows from cin, cout and s (`vocabulary.mbconv_shortcut`).
    BlockKind("mbconv", ("hw", "cin", "cout", "k", "s", "e", "se", "act"), _map_in("cin"),
              _map_out("cout"), _mbconv_cost, _mbconv_ops,
              # the depthwise conv on the expanded width dominates
              parallel_work=lambda p: p["cin"] * p["e"]),
    BlockKind("attn", ("hw", "c", "hd", "vs", "act"), _map_in("c"), _tokens_out, _attn_cost, _attn_ops),
    BlockKind("ffn", ("hw", "c", "r", "act"), _map_in("c"), _tokens_out, _ffn_cost, _ffn_ops),
    BlockKind("head", ("hw", "cin", "cmid", "chid", "ncls", "act"), _map_in("cin"),
              lambda p: p["ncls"], _head_cost, _head_ops),
)


# --------------------------------------------------------------------------------------- operators
def _values(*names: str):  # noqa: ANN202 - product of fields
    def count(p: Params) -> int:
        total = 1
        for name in names:
            total *= p[name]
        return total
    return count


def _dwconv_cost(t: Tally, p: Params) -> None:
    hw, c, k = p["hw"], p["c"], p["k"]
    ho = conv_out(hw, p["s"])
    t.layer(ho * ho * c * k * k, c * k * k, hw * hw * c, ho * ho * c)


def _elementwise_cost(inputs: int):  # noqa: ANN202
    def cost(t: Tally, p: Params) -> None:
        values = p["n"] * p["c"]
        t.layer(0, 0, values * inputs, values)
    return cost


OPERATORS = (
    BlockKind("conv2d", ("hw", "cin", "cout", "k", "s"), _map_in("cin"), _map_out("cout"),
              lambda t, p: _conv_cost(t, p, bn=False)),
    BlockKind("dwconv", ("hw", "c", "k", "s"), _map_in("c"), _map_out("c"), _dwconv_cost),
    BlockKind("linear", ("n", "cin", "cout"), lambda p: (p["n"], p["cin"]), _values("n", "cout"),
              lambda t, p: t.layer(p["n"] * p["cin"] * p["cout"], p["cin"] * p["cout"] + p["cout"],
                                   p["n"] * p["cin"], p["n"] * p["cout"]),
              spatial_input=False),
    BlockKind("matmul", ("b", "n", "k", "m"), lambda p: (p["b"], p["n"], p["k"]),
              _values("b", "n", "m"),
              lambda t, p: t.layer(p["b"] * p["n"] * p["k"] * p["m"], 0,
                                   p["b"] * p["n"] * p["k"] + p["b"] * p["k"] * p["m"],
                                   p["b"] * p["n"] * p["m"]),
              spatial_input=False),
    BlockKind("softmax", ("b", "n", "m"), lambda p: (p["b"], p["n"], p["m"]), _values("b", "n", "m"),
              lambda t, p: t.layer(0, 0, p["b"] * p["n"] * p["m"], p["b"] * p["n"] * p["m"]),
              spatial_input=False),
    BlockKind("layernorm", ("n", "c"), lambda p: (p["n"], p["c"]), _values("n", "c"),
              lambda t, p: t.layer(0, 2 * p["c"], p["n"] * p["c"], p["n"] * p["c"]),
              spatial_input=False),
    BlockKind("activation", ("n", "c", "act"), lambda p: (p["n"], p["c"]), _values("n", "c"),
              _elementwise_cost(1), spatial_input=False),
    BlockKind("add", ("n", "c"), lambda p: (p["n"], p["c"]), _values("n", "c"), _elementwise_cost(2),
              spatial_input=False),
    BlockKind("pool", ("hw", "c"), _map_in("c"), lambda p: p["c"],
              lambda t, p: t.layer(0, 0, p["hw"] ** 2 * p["c"], p["c"])),
    # s x s average pooling with stride s (an MBConv's strided shortcut; padded on odd sizes)
    BlockKind("avgpool", ("hw", "c", "s"), _map_in("c"), _map_out("c"),
              lambda t, p: t.layer(0, 0, p["hw"] ** 2 * p["c"], conv_out(p["hw"], p["s"]) ** 2 * p["c"])),
)


def register_builtin_kinds() -> None:
    """Register every built-in kind (idempotent: `lutnas.space` calls it on import)."""
    for kind in BLOCKS + OPERATORS:
        register_kind(kind, replace=True)
