"""Shared shape rules and names of the space vocabulary (no torch).

These few rules are used by the block records, the analytic cost and the torch modules alike, so they
live here, at the ground floor, and `supernet/functional.py` imports them rather than the reverse.
"""

from __future__ import annotations

# Activation names a block key may carry; `supernet/functional.py` implements each one.
ACTIVATIONS = ("hswish", "relu", "relu6", "gelu", "none")
# Fields whose value is a name, not an integer.
STRING_FIELDS = frozenset({"act"})


def conv_out(hw: int, stride: int) -> int:
    """Spatial size after a conv with 'same' padding (k // 2) and the given stride."""
    return (hw - 1) // stride + 1


def se_channels(channels: int) -> int:
    """SE bottleneck width: a quarter, rounded up to a multiple of 8 (MobileNetV3's rule)."""
    return max(8, (channels // 4 + 7) // 8 * 8)


def mbconv_shortcut(cin: int, cout: int, stride: int) -> tuple[bool, bool]:
    """The residual path of an MBConv layer as ElasticViT builds it: (pool, project).

    Every MBConv layer adds a residual: the input itself (stride 1, same width), average-pooled
    stride x stride when the layer is strided, then projected by a 1x1 conv (no BN, no bias) when the
    width changes. nn-Meter's phone tables measured these blocks, so lutnas's keys mean the same.
    """
    return stride != 1, cin != cout
