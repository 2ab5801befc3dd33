"""BlockSpec, the unit that is built, exported, measured, stored, predicted and searched.

A BlockSpec is a kind plus the shape parameters that change its latency; its `key` is the one
string every table, store and predictor uses for it. The registry here (`build_block`) turns a spec
into a static `nn.Module`; a subnet's static model is exactly the composition of its blocks' modules,
so the sum of a lookup table over `space.blocks_of(config)` describes the model that is deployed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lutnas.errors import BlockKeyError
from lutnas.supernet import functional as Fn

# Field order is part of the key format: keys are compared as strings across devices and versions.
BLOCK_KINDS: dict[str, tuple[str, ...]] = {
    "conv": ("hw", "cin", "cout", "k", "s", "act"),
    "mbconv": ("hw", "cin", "cout", "k", "s", "e", "se", "act"),
    "attn": ("hw", "c", "hd", "vs", "act"),
    "ffn": ("hw", "c", "r", "act"),
    "head": ("hw", "cin", "cmid", "chid", "ncls", "act"),
}
OPERATOR_KINDS: dict[str, tuple[str, ...]] = {
    "conv2d": ("hw", "cin", "cout", "k", "s"),
    "dwconv": ("hw", "c", "k", "s"),
    "linear": ("n", "cin", "cout"),
    "matmul": ("b", "n", "k", "m"),
    "softmax": ("b", "n", "m"),
    "layernorm": ("n", "c"),
    "activation": ("n", "c", "act"),
    "add": ("n", "c"),
    "pool": ("hw", "c"),
}
KINDS: dict[str, tuple[str, ...]] = {**BLOCK_KINDS, **OPERATOR_KINDS}
STRING_FIELDS = frozenset({"act"})


def conv_out(hw: int, stride: int) -> int:
    """Spatial size after a conv with 'same' padding (k // 2) and the given stride."""
    return (hw - 1) // stride + 1


@dataclass(frozen=True)
class BlockSpec:
    """A block kind and its shape parameters, in the kind's canonical field order."""

    kind: str
    params: tuple[tuple[str, int | str], ...]

    @classmethod
    def make(cls, kind: str, **values: int | str) -> "BlockSpec":
        if kind not in KINDS:
            raise BlockKeyError(
                f"unknown block kind {kind!r}; known kinds: {', '.join(KINDS)}"
            )
        fields = KINDS[kind]
        missing = [f for f in fields if f not in values]
        extra = [f for f in values if f not in fields]
        if missing or extra:
            raise BlockKeyError(
                f"block kind {kind!r} takes fields {','.join(fields)}; "
                f"missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
        params = []
        for name in fields:
            value = values[name]
            if name in STRING_FIELDS:
                if value not in Fn.ACTIVATIONS:
                    raise BlockKeyError(
                        f"{kind}: act={value!r} is not one of {', '.join(Fn.ACTIVATIONS)}"
                    )
                params.append((name, str(value)))
            else:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise BlockKeyError(f"{kind}: {name}={value!r} must be a non-negative integer")
                params.append((name, int(value)))
        return cls(kind, tuple(params))

    @classmethod
    def parse(cls, key: str) -> "BlockSpec":
        """Inverse of `key`; any deviation from the canonical form is an error naming the key."""
        kind, sep, rest = key.strip().partition(":")
        if not sep or not rest:
            raise BlockKeyError(
                f"block key {key!r} is not of the form KIND:field=value,... "
                f"(e.g. mbconv:hw=56,cin=24,cout=32,k=5,s=2,e=4,se=1,act=hswish)"
            )
        values: dict[str, int | str] = {}
        for item in rest.split(","):
            name, eq, raw = item.partition("=")
            if not eq or not name or not raw:
                raise BlockKeyError(f"block key {key!r}: {item!r} is not field=value")
            if name in STRING_FIELDS:
                values[name] = raw
            else:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise BlockKeyError(f"block key {key!r}: {name}={raw!r} is not an integer") from None
        return cls.make(kind, **values)

    @property
    def key(self) -> str:
        return f"{self.kind}:" + ",".join(f"{n}={v}" for n, v in self.params)

    @property
    def is_operator(self) -> bool:
        return self.kind in OPERATOR_KINDS

    def __getattr__(self, name: str) -> int | str:
        # Only reached for names that are not dataclass fields: the shape parameters.
        for field_name, value in object.__getattribute__(self, "params"):
            if field_name == name:
                return value
        raise AttributeError(f"{self.kind} block has no field {name!r}")

    def as_dict(self) -> dict[str, int | str]:
        return dict(self.params)

    def __str__(self) -> str:
        return self.key


# --------------------------------------------------------------------------------------------
# Static blocks. Each holds full-size layers under fixed names; the elastic supernet layers use the
# same names, so extraction is a copy of sliced tensors by name.


class ConvBlock(nn.Module):
    """Stem: conv kxk / stride, BN, activation."""

    def __init__(self, cin: int, cout: int, k: int, s: int, act: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.cout, self.k, self.s, self.act = cout, k, s, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Fn.conv_bn_act(x, self.conv, self.bn, self.cout, self.k, self.s, self.act)


def mbconv_forward(
    module: nn.Module, x: torch.Tensor, cin: int, cout: int, k: int, s: int, mid: int,
    use_expand: bool, se: bool, act: str,
) -> torch.Tensor:
    """Inverted residual: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (+ residual)."""
    y = x
    if use_expand:
        y = Fn.conv_bn_act(y, module.expand_conv, module.expand_bn, mid, 1, 1, act)
    y = Fn.conv_bn_act(y, module.dw_conv, module.dw_bn, mid, k, s, act, groups_depthwise=True)
    if se:
        y = Fn.squeeze_excite(y, module.se_reduce, module.se_expand, Fn.se_channels(mid))
    y = Fn.conv_bn_act(y, module.project_conv, module.project_bn, cout, 1, 1, "none")
    if s == 1 and cin == cout:
        y = y + x
    return y


def make_mbconv_layers(module: nn.Module, cin: int, cout: int, k: int, mid: int, expand: bool,
                       se: bool) -> None:
    """Create an MBConv's layers on `module` at the given (maximal) sizes."""
    if expand:
        module.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
        module.expand_bn = nn.BatchNorm2d(mid)
    module.dw_conv = nn.Conv2d(mid, mid, k, 1, k // 2, groups=mid, bias=False)
    module.dw_bn = nn.BatchNorm2d(mid)
    if se:
        se_mid = Fn.se_channels(mid)
        module.se_reduce = nn.Conv2d(mid, se_mid, 1)
        module.se_expand = nn.Conv2d(se_mid, mid, 1)
    module.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
    module.project_bn = nn.BatchNorm2d(cout)


class MBConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, s: int, e: int, se: int, act: str) -> None:
        super().__init__()
        self.cin, self.cout, self.k, self.s, self.se, self.act = cin, cout, k, s, bool(se), act
        self.mid = cin * e
        self.use_expand = e != 1
        make_mbconv_layers(self, cin, cout, k, self.mid, self.use_expand, self.se)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mbconv_forward(self, x, self.cin, self.cout, self.k, self.s, self.mid,
                              self.use_expand, self.se, self.act)


def make_attention_layers(module: nn.Module, c: int, qk_dim: int, v_dim: int, heads: int,
                          max_hw: int) -> None:
    module.norm = nn.LayerNorm(c)
    module.qkv = nn.Linear(c, 2 * qk_dim + v_dim)
    module.v_dwconv = nn.Conv2d(v_dim, v_dim, 3, 1, 1, groups=v_dim)
    module.proj = nn.Linear(v_dim, c)
    module.rel_bias_table = nn.Parameter(torch.zeros(heads, (2 * max_hw - 1) ** 2))
    nn.init.trunc_normal_(module.rel_bias_table, std=0.02)


class AttentionBlock(nn.Module):
    """Pre-norm attention with a depthwise conv on V and relative-position bias (ElasticViT)."""

    def __init__(self, hw: int, c: int, hd: int, vs: int, act: str) -> None:
        super().__init__()
        self.hw, self.c, self.hd, self.vs, self.act = hw, c, hd, vs, act
        self.heads = max(1, c // hd)
        self.qk_dim = self.heads * hd
        self.v_dim = self.heads * hd * vs
        make_attention_layers(self, c, self.qk_dim, self.v_dim, self.heads, hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = Fn.relative_bias_for_grid(self.rel_bias_table, self.hw, self.hw)
        return Fn.attention_tokens(
            x, self.hw, self.norm, self.qkv, self.v_dwconv, self.proj, bias, self.c,
            self.heads, self.hd, self.hd * self.vs, self.act, self.qk_dim,
        )


class FeedForwardBlock(nn.Module):
    def __init__(self, c: int, r: int, act: str) -> None:
        super().__init__()
        self.c, self.hidden, self.act = c, c * r, act
        self.norm = nn.LayerNorm(c)
        self.fc1 = nn.Linear(c, self.hidden)
        self.fc2 = nn.Linear(self.hidden, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Fn.feed_forward_tokens(x, self.norm, self.fc1, self.fc2, self.c, self.hidden, self.act)


def head_forward(module: nn.Module, x: torch.Tensor, cmid: int, chid: int, ncls: int,
                 act: str) -> torch.Tensor:
    cin = x.shape[1]
    y = nn.functional.conv2d(x, module.conv.weight[:cmid, :cin])
    y = Fn.activation(Fn.batch_norm(y, module.bn, cmid), act)
    y = y.mean((2, 3))
    y = Fn.activation(nn.functional.linear(y, module.fc.weight[:, :cmid], module.fc.bias), act)
    return nn.functional.linear(y, module.classifier.weight[:ncls], module.classifier.bias[:ncls])


class HeadBlock(nn.Module):
    """1x1 conv C -> cmid, global pool, cmid -> chid, chid -> classes."""

    def __init__(self, cin: int, cmid: int, chid: int, ncls: int, act: str) -> None:
        super().__init__()
        self.cmid, self.chid, self.ncls, self.act = cmid, chid, ncls, act
        self.conv = nn.Conv2d(cin, cmid, 1, bias=False)
        self.bn = nn.BatchNorm2d(cmid)
        self.fc = nn.Linear(cmid, chid)
        self.classifier = nn.Linear(chid, ncls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return head_forward(self, x, self.cmid, self.chid, self.ncls, self.act)


# Operator micro-modules: one operator each, so operator-level profiling uses the same machinery.
# A second operand that is an activation in the real network (matmul, add) is a constant here: the
# micro-model must have one input to export, and the kernel that runs is the same.


class _Unary(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class MatmulOp(nn.Module):
    def __init__(self, b: int, k: int, m: int) -> None:
        super().__init__()
        self.register_buffer("other", torch.randn(b, k, m) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.other)


class AddOp(nn.Module):
    def __init__(self, n: int, c: int) -> None:
        super().__init__()
        self.register_buffer("other", torch.randn(1, n, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.other


def build_block(spec: BlockSpec) -> nn.Module:
    """The registry: BlockSpec -> static module (in eval mode, random but deterministic weights)."""
    p = spec.as_dict()
    kind = spec.kind
    if kind == "conv":
        module: nn.Module = ConvBlock(p["cin"], p["cout"], p["k"], p["s"], p["act"])
    elif kind == "mbconv":
        module = MBConvBlock(p["cin"], p["cout"], p["k"], p["s"], p["e"], p["se"], p["act"])
    elif kind == "attn":
        module = AttentionBlock(p["hw"], p["c"], p["hd"], p["vs"], p["act"])
    elif kind == "ffn":
        module = FeedForwardBlock(p["c"], p["r"], p["act"])
    elif kind == "head":
        module = HeadBlock(p["cin"], p["cmid"], p["chid"], p["ncls"], p["act"])
    elif kind == "conv2d":
        module = nn.Conv2d(p["cin"], p["cout"], p["k"], p["s"], p["k"] // 2, bias=False)
    elif kind == "dwconv":
        module = nn.Conv2d(p["c"], p["c"], p["k"], p["s"], p["k"] // 2, groups=p["c"], bias=False)
    elif kind == "linear":
        module = nn.Linear(p["cin"], p["cout"])
    elif kind == "matmul":
        module = MatmulOp(p["b"], p["k"], p["m"])
    elif kind == "softmax":
        module = nn.Softmax(dim=-1)
    elif kind == "layernorm":
        module = nn.LayerNorm(p["c"])
    elif kind == "activation":
        act = p["act"]
        module = _Unary(lambda x: Fn.activation(x, act))
    elif kind == "add":
        module = AddOp(p["n"], p["c"])
    elif kind == "pool":
        module = nn.AdaptiveAvgPool2d(1)
    else:  # pragma: no cover - BlockSpec.make rejects unknown kinds
        raise BlockKeyError(f"no module registered for block kind {kind!r}")
    return module.eval()


def example_input(spec: BlockSpec, batch: int = 1) -> torch.Tensor:
    """An input tensor of the shape the block expects (NCHW for maps, (B, N, C) for tokens)."""
    p = spec.as_dict()
    kind = spec.kind
    if kind in ("conv", "mbconv", "head", "conv2d"):
        shape: tuple[int, ...] = (batch, p["cin"], p["hw"], p["hw"])
    elif kind in ("attn", "ffn", "dwconv", "pool"):
        shape = (batch, p["c"], p["hw"], p["hw"])
    elif kind == "linear":
        shape = (batch, p["n"], p["cin"])
    elif kind == "matmul":
        shape = (batch, p["b"], p["n"], p["k"])
    elif kind == "softmax":
        shape = (batch, p["b"], p["n"], p["m"])
    else:  # layernorm, activation, add
        shape = (batch, p["n"], p["c"])
    generator = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=generator)


def is_spatial_input(spec: BlockSpec) -> bool:
    """True when the block's input is an NCHW map (exported to TFLite with NHWC I/O)."""
    return spec.kind in ("conv", "mbconv", "head", "conv2d", "attn", "ffn", "dwconv", "pool")


def operators_of(spec: BlockSpec) -> list[BlockSpec]:
    """The operators a block executes, for operator-level profiling (BN folds into convs)."""
    p = spec.as_dict()
    kind = spec.kind
    op = BlockSpec.make
    if spec.is_operator:
        return [spec]
    if kind == "conv":
        ho = conv_out(p["hw"], p["s"])
        return [op("conv2d", hw=p["hw"], cin=p["cin"], cout=p["cout"], k=p["k"], s=p["s"]),
                op("activation", n=ho * ho, c=p["cout"], act=p["act"])]
    if kind == "mbconv":
        hw, mid = p["hw"], p["cin"] * p["e"]
        ho = conv_out(hw, p["s"])
        ops = []
        if p["e"] != 1:
            ops += [op("conv2d", hw=hw, cin=p["cin"], cout=mid, k=1, s=1),
                    op("activation", n=hw * hw, c=mid, act=p["act"])]
        ops += [op("dwconv", hw=hw, c=mid, k=p["k"], s=p["s"]),
                op("activation", n=ho * ho, c=mid, act=p["act"])]
        if p["se"]:
            se_mid = Fn.se_channels(mid)
            ops += [op("pool", hw=ho, c=mid), op("linear", n=1, cin=mid, cout=se_mid),
                    op("linear", n=1, cin=se_mid, cout=mid)]
        ops.append(op("conv2d", hw=ho, cin=mid, cout=p["cout"], k=1, s=1))
        if p["s"] == 1 and p["cin"] == p["cout"]:
            ops.append(op("add", n=ho * ho, c=p["cout"]))
        return ops
    if kind == "attn":
        n, c = p["hw"] ** 2, p["c"]
        heads = max(1, c // p["hd"])
        qk, v = heads * p["hd"], heads * p["hd"] * p["vs"]
        return [op("layernorm", n=n, c=c), op("linear", n=n, cin=c, cout=2 * qk + v),
                op("dwconv", hw=p["hw"], c=v, k=3, s=1),
                op("matmul", b=heads, n=n, k=p["hd"], m=n), op("softmax", b=heads, n=n, m=n),
                op("matmul", b=heads, n=n, k=n, m=p["hd"] * p["vs"]),
                op("activation", n=n, c=v, act=p["act"]), op("linear", n=n, cin=v, cout=c),
                op("add", n=n, c=c)]
    if kind == "ffn":
        n, c, h = p["hw"] ** 2, p["c"], p["c"] * p["r"]
        return [op("layernorm", n=n, c=c), op("linear", n=n, cin=c, cout=h),
                op("activation", n=n, c=h, act=p["act"]), op("linear", n=n, cin=h, cout=c),
                op("add", n=n, c=c)]
    # head
    hw = p["hw"]
    return [op("conv2d", hw=hw, cin=p["cin"], cout=p["cmid"], k=1, s=1),
            op("activation", n=hw * hw, c=p["cmid"], act=p["act"]), op("pool", hw=hw, c=p["cmid"]),
            op("linear", n=1, cin=p["cmid"], cout=p["chid"]),
            op("linear", n=1, cin=p["chid"], cout=p["ncls"])]
