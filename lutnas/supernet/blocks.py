"""Static block modules and the module registry: `build_block(spec)` is one lookup.

Each block kind of `lutnas.space` has a module class registered here with `@register_module(kind)`;
a subnet's static model is exactly the composition of its blocks' modules, so the sum of a lookup
table over `space.blocks_of(config)` describes the model that is deployed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lutnas.errors import BlockKeyError
from lutnas.space import BlockSpec
from lutnas.supernet import functional as Fn

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


def make_mbconv_layers(module: nn.Module, cin: int, cout: int, k: int, mid: int, expand: bool,
                       se: bool, project: bool) -> None:
    """Create an MBConv's layers on `module` at the given (maximal) sizes.

    `project`: the layer's input width can differ from its output width, so it needs the 1x1
    shortcut conv. ElasticViT's shortcut conv has no BN (its BN is commented out in
    `MobileBlock`), so neither has lutnas's; it would fold into the conv on export anyway."""
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
    if project:
        module.shortcut_conv = nn.Conv2d(cin, cout, 1, bias=False)


class MBConvBlock(nn.Module):
    """MBConv layer with ElasticViT's residual (`lutnas.space.vocabulary.mbconv_shortcut`).

    `hw`: the input size, when known, fixes the strided shortcut's padding at build time (a
    constant for export); without it the padding follows each input."""

    def __init__(self, cin: int, cout: int, k: int, s: int, e: int, se: int, act: str,
                 hw: int | None = None) -> None:
        super().__init__()
        self.cin, self.cout, self.k, self.s, self.se, self.act = cin, cout, k, s, bool(se), act
        self.hw = hw
        self.mid = cin * e
        self.use_expand = e != 1
        make_mbconv_layers(self, cin, cout, k, self.mid, self.use_expand, self.se, cin != cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Fn.mbconv(self, x, self.cin, self.cout, self.k, self.s, self.mid, self.use_expand,
                         self.se, self.act, self.hw)


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
        # Not persistent: derived from hw, so checkpoints and extraction stay name-for-name.
        self.register_buffer("rel_index", Fn.relative_offset_index(hw, hw), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.rel_bias_table[:, self.rel_index]
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
    y = nn.functional.conv2d(x, Fn.take(module.conv.weight, cmid, cin))
    y = Fn.activation(Fn.batch_norm(y, module.bn, cmid), act)
    y = y.mean((2, 3))
    fc_weight = Fn.take(module.fc.weight, module.fc.weight.shape[0], cmid)
    y = Fn.activation(nn.functional.linear(y, fc_weight, module.fc.bias), act)
    return nn.functional.linear(y, Fn.take(module.classifier.weight, ncls),
                                Fn.take(module.classifier.bias, ncls))


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


ModuleFactory = Callable[[dict[str, Any]], nn.Module]
_MODULES: dict[str, ModuleFactory] = {}


def register_module(kind: str, factory: ModuleFactory | None = None) -> Any:
    """Register the module of block kind `kind`: `factory(params) -> nn.Module`.

    Use as `register_module("mbconv", lambda p: MBConvBlock(...))` or as a class decorator on a
    class whose constructor takes the kind's fields as keyword arguments.
    """
    def add(target: Any) -> Any:
        _MODULES[kind] = target if factory is not None else (lambda p: target(**p))
        return target

    if factory is not None:
        add(factory)
        return factory
    return add


def unregister_module(kind: str) -> None:
    _MODULES.pop(kind, None)


def build_block(spec: BlockSpec) -> nn.Module:
    """The registry: BlockSpec -> static module (in eval mode, random but deterministic weights).

    Raises BlockKeyError when the kind has no registered module."""
    try:
        factory = _MODULES[spec.kind]
    except KeyError:
        raise BlockKeyError(f"no module registered for block kind {spec.kind!r}; "
                            f"register one with lutnas.supernet.blocks.register_module") from None
    return factory(spec.as_dict()).eval()


def example_input(spec: BlockSpec, batch: int = 1) -> torch.Tensor:
    """An input tensor of the shape the block expects (its kind's `input_shape`), seeded."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(spec.input_shape(batch), generator=generator)


_BUILTIN: dict[str, ModuleFactory] = {
    "conv": lambda p: ConvBlock(p["cin"], p["cout"], p["k"], p["s"], p["act"]),
    "mbconv": lambda p: MBConvBlock(p["cin"], p["cout"], p["k"], p["s"], p["e"], p["se"], p["act"],
                                    p["hw"]),
    "attn": lambda p: AttentionBlock(p["hw"], p["c"], p["hd"], p["vs"], p["act"]),
    "ffn": lambda p: FeedForwardBlock(p["c"], p["r"], p["act"]),
    "head": lambda p: HeadBlock(p["cin"], p["cmid"], p["chid"], p["ncls"], p["act"]),
    "conv2d": lambda p: nn.Conv2d(p["cin"], p["cout"], p["k"], p["s"], p["k"] // 2, bias=False),
    "dwconv": lambda p: nn.Conv2d(p["c"], p["c"], p["k"], p["s"], p["k"] // 2, groups=p["c"],
                                  bias=False),
    "linear": lambda p: nn.Linear(p["cin"], p["cout"]),
    "matmul": lambda p: MatmulOp(p["b"], p["k"], p["m"]),
    "softmax": lambda p: nn.Softmax(dim=-1),
    "layernorm": lambda p: nn.LayerNorm(p["c"]),
    "activation": lambda p: _Unary(lambda x: Fn.activation(x, p["act"])),
    "add": lambda p: AddOp(p["n"], p["c"]),
    "pool": lambda p: nn.AdaptiveAvgPool2d(1),
    "avgpool": lambda p: _Unary(lambda x: Fn.shortcut_pool(x, p["s"], p["hw"])),
}
for _kind, _factory in _BUILTIN.items():
    register_module(_kind, _factory)
