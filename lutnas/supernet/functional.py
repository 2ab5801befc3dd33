"""The forward math of every block, written once on explicit weight tensors.

Static blocks (`blocks.py`) call these with their own parameters; elastic supernet layers call them
with slices of their largest weights. Because both paths run the same code, a subnet extracted from
the supernet computes exactly what the supernet computed for it (Once-for-All's static/dynamic twin).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lutnas.space.vocabulary import ACTIVATIONS, mbconv_shortcut, se_channels

__all__ = ["ACTIVATIONS", "se_channels"]  # re-exported: static and elastic blocks use Fn.se_channels


def activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "hswish":
        return F.hardswish(x)
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.relu6(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "none":
        return x
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def take(tensor: torch.Tensor | None, *sizes: int) -> torch.Tensor | None:
    """The first `sizes[i]` entries along each leading dim i of `tensor`; `tensor` itself when
    nothing is cut.

    A static block runs this math at its full sizes, where every slice is the identity; returning
    the tensor itself keeps ~40% of a subnet's traced graph (identity `aten.slice` nodes on
    parameters, measured on `micro`: 188 of 435 nodes) out of torch.export, which litert-torch
    retraces four times per conversion. Elastic layers still get views, so in-place updates of
    sliced BatchNorm buffers reach the full buffers as before."""
    if tensor is None or all(size == dim for size, dim in zip(sizes, tensor.shape)):
        return tensor
    return tensor[tuple(slice(0, size) for size in sizes)]


def batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
    """BatchNorm over the first `channels` of `bn`.

    Slicing the running buffers gives views, so in training mode the statistics of the active
    channels are updated in place inside the full buffers (what weight sharing needs).
    """
    mean = take(bn.running_mean, channels)
    var = take(bn.running_var, channels)
    use_batch_stats = bn.training or mean is None
    momentum = bn.momentum if bn.momentum is not None else 0.1
    if bn.training and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    return F.batch_norm(
        x, mean, var, take(bn.weight, channels), take(bn.bias, channels),
        use_batch_stats, momentum, bn.eps,
    )


def layer_norm(x: torch.Tensor, ln: nn.LayerNorm, channels: int) -> torch.Tensor:
    return F.layer_norm(x, (channels,), take(ln.weight, channels), take(ln.bias, channels), ln.eps)


def center_kernel(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """The centre `kernel`x`kernel` window of a larger kernel (OFA's kernel sharing, no transform)."""
    full = weight.shape[-1]
    if kernel == full:
        return weight
    start = (full - kernel) // 2
    return weight[..., start:start + kernel, start:start + kernel]


def conv_bn_act(
    x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, cout: int, kernel: int, stride: int,
    act: str, groups_depthwise: bool = False,
) -> torch.Tensor:
    cin = x.shape[1]
    if groups_depthwise:
        weight = center_kernel(take(conv.weight, cout), kernel)
        groups = cout
    else:
        weight = center_kernel(take(conv.weight, cout, cin), kernel)
        groups = 1
    y = F.conv2d(x, weight, None, stride, kernel // 2, 1, groups)
    return activation(batch_norm(y, bn, cout), act)


def squeeze_excite(x: torch.Tensor, reduce: nn.Conv2d, expand: nn.Conv2d, mid: int) -> torch.Tensor:
    channels = x.shape[1]
    s = x.mean((2, 3), keepdim=True)
    s = F.relu(F.conv2d(s, take(reduce.weight, mid, channels), take(reduce.bias, mid)))
    s = F.hardsigmoid(F.conv2d(s, take(expand.weight, channels, mid), take(expand.bias, channels)))
    return x * s


def shortcut_pool(x: torch.Tensor, stride: int, hw: int | None = None) -> torch.Tensor:
    """ElasticViT's strided shortcut: `stride` x `stride` average pooling, padded by one on odd sizes.

    The padded zeros count in the average (`count_include_pad`, as ElasticViT); the output size is
    then `conv_out(hw, stride)`, the size of the strided depthwise conv's output. `hw`: the input
    size when the caller knows it (a static block), so that tracing for export sees a constant.
    """
    size = x.shape[-1] if hw is None else hw
    padding = 0 if size % stride == 0 else 1
    return F.avg_pool2d(x, stride, stride, padding)


def mbconv(module: nn.Module, x: torch.Tensor, cin: int, cout: int, k: int, s: int, mid: int,
           use_expand: bool, se: bool, act: str, hw: int | None = None) -> torch.Tensor:
    """Inverted residual on `module`'s (largest) layers: [1x1 expand] -> kxk depthwise -> [SE] ->
    1x1 project, plus the residual of `mbconv_shortcut` (the input, pooled when strided, projected by
    `module.shortcut_conv` when the width changes). x: (B, cin, H, W) -> (B, cout, H/s, W/s).

    `cin` (and `hw`, the input size, when known) are Python ints rather than read from `x`, so that
    tracing for export sees constants."""
    y = x
    if use_expand:
        y = conv_bn_act(y, module.expand_conv, module.expand_bn, mid, 1, 1, act)
    y = conv_bn_act(y, module.dw_conv, module.dw_bn, mid, k, s, act, groups_depthwise=True)
    if se:
        y = squeeze_excite(y, module.se_reduce, module.se_expand, se_channels(mid))
    y = conv_bn_act(y, module.project_conv, module.project_bn, cout, 1, 1, "none")
    pool, project = mbconv_shortcut(cin, cout, s)
    residual = shortcut_pool(x, s, hw) if pool else x
    if project:
        residual = F.conv2d(residual, take(module.shortcut_conv.weight, cout, cin))
    return y + residual


def attention_tokens(
    x: torch.Tensor, hw: int, norm: nn.LayerNorm, qkv: nn.Linear, v_dwconv: nn.Conv2d,
    proj: nn.Linear, rel_bias: torch.Tensor, channels: int, heads: int, head_dim: int,
    v_dim_per_head: int, act: str, qk_rows: int,
) -> torch.Tensor:
    """Pre-norm multi-head attention on a (B, C, H, W) map; returns the same shape with residual.

    `qkv.weight` rows are laid out [q (qk_rows), k (qk_rows), v (rest)] so a width slice of every part
    is a contiguous slice of the largest layer; `rel_bias` is (heads, N, N) gathered for this grid.
    """
    batch = x.shape[0]
    tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
    n = tokens.shape[1]
    y = layer_norm(tokens, norm, channels)
    qk_dim = heads * head_dim
    v_dim = heads * v_dim_per_head
    q_max = qk_rows
    w, b = qkv.weight, qkv.bias
    # Row slices of the fused layer (q, k, v); the column slice is the identity in a static block.
    w_q, b_q = take(w[:qk_dim], qk_dim, channels), b[:qk_dim]
    w_k, b_k = take(w[q_max:q_max + qk_dim], qk_dim, channels), b[q_max:q_max + qk_dim]
    w_v = take(w[2 * q_max:2 * q_max + v_dim], v_dim, channels)
    b_v = b[2 * q_max:2 * q_max + v_dim]
    q = F.linear(y, w_q, b_q).reshape(batch, n, heads, head_dim).transpose(1, 2)
    k = F.linear(y, w_k, b_k).reshape(batch, n, heads, head_dim).transpose(1, 2)
    v = F.linear(y, w_v, b_v)  # (B, N, v_dim)
    v_map = v.transpose(1, 2).reshape(batch, v_dim, hw, hw)
    v_map = v_map + F.conv2d(
        v_map, take(v_dwconv.weight, v_dim), take(v_dwconv.bias, v_dim), 1, 1, 1, v_dim
    )
    v = v_map.reshape(batch, heads, v_dim_per_head, n).transpose(2, 3)  # (B, h, N, dv)
    scores = torch.matmul(q, k.transpose(2, 3)) * (head_dim ** -0.5) + take(rel_bias, heads)
    out = torch.matmul(scores.softmax(dim=-1), v)  # (B, h, N, dv)
    out = out.transpose(1, 2).reshape(batch, n, v_dim)
    out = F.linear(activation(out, act), take(proj.weight, channels, v_dim), take(proj.bias, channels))
    tokens = tokens + out
    return tokens.transpose(1, 2).reshape(batch, channels, hw, hw)


def feed_forward_tokens(
    x: torch.Tensor, norm: nn.LayerNorm, fc1: nn.Linear, fc2: nn.Linear, channels: int,
    hidden: int, act: str,
) -> torch.Tensor:
    batch, _, h, w = x.shape
    tokens = x.flatten(2).transpose(1, 2)
    y = layer_norm(tokens, norm, channels)
    y = activation(F.linear(y, take(fc1.weight, hidden, channels), take(fc1.bias, hidden)), act)
    y = F.linear(y, take(fc2.weight, channels, hidden), take(fc2.bias, channels))
    tokens = tokens + y
    return tokens.transpose(1, 2).reshape(batch, channels, h, w)


def relative_bias_for_grid(table: torch.Tensor, max_hw: int, hw: int) -> torch.Tensor:
    """Gather a (heads, N, N) bias for an `hw`x`hw` grid from a table sized for `max_hw`.

    The table is indexed by offsets, so a smaller grid uses the central offsets of the same table:
    every resolution of the supernet shares one set of bias parameters.
    """
    return table[:, relative_offset_index(max_hw, hw).to(table.device)]


def relative_offset_index(max_hw: int, hw: int) -> torch.Tensor:
    """(N, N) int64 flat index into a (2 max_hw - 1)^2 table of offsets, N = hw^2. A static block
    keeps it as a buffer, so tracing for export sees one constant instead of ~20 nodes a block."""
    side = 2 * max_hw - 1
    coords = torch.stack(torch.meshgrid(torch.arange(hw), torch.arange(hw), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (max_hw - 1)
    return rel[0] * side + rel[1]
