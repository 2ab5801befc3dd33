"""Weight-sharing layers: each holds the LARGEST layers of a block and runs the static block's code.

Every elastic layer creates its parameters with the same helper and under the same attribute names as
its static twin in `blocks.py`, and its forward calls the same function with the active sizes; the
functional code slices the weights. `extract(...)` builds the static block and copies the active
slices into it, so the extracted module computes exactly what the supernet computed (Once-for-All's
dynamic/static pairs, with one forward implementation instead of two).
"""

from __future__ import annotations

import torch
from torch import nn

from lutnas.space import BlockSpec
from lutnas.supernet import functional as Fn
from lutnas.supernet.blocks import (
    AttentionBlock,
    ConvBlock,
    FeedForwardBlock,
    HeadBlock,
    MBConvBlock,
    head_forward,
    make_attention_layers,
    make_mbconv_layers,
)


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, channels: int) -> None:
    _copy(dst.weight, src.weight[:channels])
    _copy(dst.bias, src.bias[:channels])
    _copy(dst.running_mean, src.running_mean[:channels])
    _copy(dst.running_var, src.running_var[:channels])
    _copy(dst.num_batches_tracked, src.num_batches_tracked)


def _copy_ln(dst: nn.LayerNorm, src: nn.LayerNorm, channels: int) -> None:
    _copy(dst.weight, src.weight[:channels])
    _copy(dst.bias, src.bias[:channels])


class ElasticConv(nn.Module):
    """Stem conv: elastic output width (the kernel and stride are fixed by the space)."""

    def __init__(self, cin: int, max_cout: int, k: int, s: int, act: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, max_cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(max_cout)
        self.k, self.s, self.act = k, s, act

    def run(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        return self(x, spec.cout)

    def extract_spec(self, spec: BlockSpec) -> ConvBlock:
        return self.extract(spec.cin, spec.cout)

    def forward(self, x: torch.Tensor, cout: int) -> torch.Tensor:
        return Fn.conv_bn_act(x, self.conv, self.bn, cout, self.k, self.s, self.act)

    def extract(self, cin: int, cout: int) -> ConvBlock:
        block = ConvBlock(cin, cout, self.k, self.s, self.act)
        _copy(block.conv.weight, self.conv.weight[:cout, :cin])
        _copy_bn(block.bn, self.bn, cout)
        return block


class ElasticMBConv(nn.Module):
    """MBConv with elastic input width, output width, kernel (centre crop) and expansion ratio.

    `projects`: its input width can differ from its output width (a stage's first layer), so it
    holds the largest 1x1 shortcut conv and slices it like the other layers."""

    def __init__(self, max_cin: int, max_cout: int, max_k: int, s: int, expands: tuple[int, ...],
                 se: bool, act: str, projects: bool = False) -> None:
        super().__init__()
        self.s, self.se, self.act = s, bool(se), act
        # An expand conv is needed as soon as one choice expands; e=1 choices skip it (as static).
        self.has_expand = any(e != 1 for e in expands)
        make_mbconv_layers(self, max_cin, max_cout, max_k, max_cin * max(expands), self.has_expand,
                           self.se, projects)

    def run(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        return self(x, spec.cout, spec.k, spec.e)

    def extract_spec(self, spec: BlockSpec) -> MBConvBlock:
        return self.extract(spec.cin, spec.cout, spec.k, spec.e, spec.hw)

    def forward(self, x: torch.Tensor, cout: int, k: int, e: int) -> torch.Tensor:
        cin = x.shape[1]
        return Fn.mbconv(self, x, cin, cout, k, self.s, cin * e, e != 1, self.se, self.act)

    def extract(self, cin: int, cout: int, k: int, e: int, hw: int | None = None) -> MBConvBlock:
        block = MBConvBlock(cin, cout, k, self.s, e, int(self.se), self.act, hw)
        mid = block.mid
        if block.use_expand:
            _copy(block.expand_conv.weight, self.expand_conv.weight[:mid, :cin])
            _copy_bn(block.expand_bn, self.expand_bn, mid)
        _copy(block.dw_conv.weight, Fn.center_kernel(self.dw_conv.weight[:mid], k))
        _copy_bn(block.dw_bn, self.dw_bn, mid)
        if self.se:
            se_mid = Fn.se_channels(mid)
            _copy(block.se_reduce.weight, self.se_reduce.weight[:se_mid, :mid])
            _copy(block.se_reduce.bias, self.se_reduce.bias[:se_mid])
            _copy(block.se_expand.weight, self.se_expand.weight[:mid, :se_mid])
            _copy(block.se_expand.bias, self.se_expand.bias[:mid])
        _copy(block.project_conv.weight, self.project_conv.weight[:cout, :mid])
        _copy_bn(block.project_bn, self.project_bn, cout)
        if cin != cout:
            _copy(block.shortcut_conv.weight, self.shortcut_conv.weight[:cout, :cin])
        return block


class ElasticAttention(nn.Module):
    """Attention with elastic width (hence heads = width / head_dim), V scale and grid size.

    The relative-position bias table is sized for the stage's largest grid and indexed by offsets,
    so every resolution shares it; the head dimension of the table is sliced like the heads.
    """

    def __init__(self, max_c: int, hd: int, max_vs: int, max_hw: int, act: str) -> None:
        super().__init__()
        self.hd, self.max_hw, self.act = hd, max_hw, act
        max_heads = max(1, max_c // hd)
        self.qk_rows = max_heads * hd
        make_attention_layers(self, max_c, self.qk_rows, max_heads * hd * max_vs, max_heads, max_hw)

    def run(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        return self(x, spec.vs)

    def extract_spec(self, spec: BlockSpec) -> AttentionBlock:
        return self.extract(spec.hw, spec.c, spec.vs)

    def forward(self, x: torch.Tensor, vs: int) -> torch.Tensor:
        c, hw = x.shape[1], x.shape[-1]
        heads = max(1, c // self.hd)
        bias = Fn.relative_bias_for_grid(self.rel_bias_table[:heads], self.max_hw, hw)
        return Fn.attention_tokens(x, hw, self.norm, self.qkv, self.v_dwconv, self.proj, bias, c,
                                   heads, self.hd, self.hd * vs, self.act, self.qk_rows)

    def extract(self, hw: int, c: int, vs: int) -> AttentionBlock:
        block = AttentionBlock(hw, c, self.hd, vs, self.act)
        qk, v, rows = block.qk_dim, block.v_dim, self.qk_rows
        _copy_ln(block.norm, self.norm, c)
        w, b = self.qkv.weight, self.qkv.bias
        _copy(block.qkv.weight, torch.cat([w[:qk, :c], w[rows:rows + qk, :c],
                                           w[2 * rows:2 * rows + v, :c]]))
        _copy(block.qkv.bias, torch.cat([b[:qk], b[rows:rows + qk], b[2 * rows:2 * rows + v]]))
        _copy(block.v_dwconv.weight, self.v_dwconv.weight[:v])
        _copy(block.v_dwconv.bias, self.v_dwconv.bias[:v])
        _copy(block.proj.weight, self.proj.weight[:c, :v])
        _copy(block.proj.bias, self.proj.bias[:c])
        # The static table covers offsets -(hw-1)..hw-1: the centre of the supernet's table.
        side_max, side, start = 2 * self.max_hw - 1, 2 * hw - 1, self.max_hw - hw
        table = self.rel_bias_table[:block.heads].reshape(block.heads, side_max, side_max)
        _copy(block.rel_bias_table,
              table[:, start:start + side, start:start + side].reshape(block.heads, side * side))
        return block


class ElasticFeedForward(nn.Module):
    """MLP with elastic width and hidden ratio."""

    def __init__(self, max_c: int, max_r: int, act: str) -> None:
        super().__init__()
        self.act = act
        self.norm = nn.LayerNorm(max_c)
        self.fc1 = nn.Linear(max_c, max_c * max_r)
        self.fc2 = nn.Linear(max_c * max_r, max_c)

    def run(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        return self(x, spec.r)

    def extract_spec(self, spec: BlockSpec) -> FeedForwardBlock:
        return self.extract(spec.c, spec.r)

    def forward(self, x: torch.Tensor, r: int) -> torch.Tensor:
        c = x.shape[1]
        return Fn.feed_forward_tokens(x, self.norm, self.fc1, self.fc2, c, c * r, self.act)

    def extract(self, c: int, r: int) -> FeedForwardBlock:
        block = FeedForwardBlock(c, r, self.act)
        h = block.hidden
        _copy_ln(block.norm, self.norm, c)
        _copy(block.fc1.weight, self.fc1.weight[:h, :c])
        _copy(block.fc1.bias, self.fc1.bias[:h])
        _copy(block.fc2.weight, self.fc2.weight[:c, :h])
        _copy(block.fc2.bias, self.fc2.bias[:c])
        return block


class ElasticHead(nn.Module):
    """Head with elastic input width (its 1x1 conv width follows: expand x input width)."""

    def __init__(self, max_cin: int, expand: int, chid: int, ncls: int, act: str) -> None:
        super().__init__()
        self.expand, self.chid, self.ncls, self.act = expand, chid, ncls, act
        self.conv = nn.Conv2d(max_cin, expand * max_cin, 1, bias=False)
        self.bn = nn.BatchNorm2d(expand * max_cin)
        self.fc = nn.Linear(expand * max_cin, chid)
        self.classifier = nn.Linear(chid, ncls)

    def run(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        return self(x)

    def extract_spec(self, spec: BlockSpec) -> HeadBlock:
        return self.extract(spec.cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return head_forward(self, x, self.expand * x.shape[1], self.chid, self.ncls, self.act)

    def extract(self, cin: int) -> HeadBlock:
        cmid = self.expand * cin
        block = HeadBlock(cin, cmid, self.chid, self.ncls, self.act)
        _copy(block.conv.weight, self.conv.weight[:cmid, :cin])
        _copy_bn(block.bn, self.bn, cmid)
        _copy(block.fc.weight, self.fc.weight[:, :cmid])
        _copy(block.fc.bias, self.fc.bias)
        _copy(block.classifier.weight, self.classifier.weight)
        _copy(block.classifier.bias, self.classifier.bias)
        return block
