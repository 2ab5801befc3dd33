"""Fidelity to ElasticViT: MACs of the 9 released models, and the MBConv projection shortcut.

ElasticViT's own counts (paper and `final_3min_space_eval.yaml`) come from `compute_flops` in
microsoft/Moonlit `ElasticViT/models/{model,cnn,transformer}.py`; `elasticvit_macs` below re-implements
that formula on the 10-tuple and reproduces all 9 published numbers to 0.03%. lutnas counts what
torch's FLOP counter counts on the modules it builds, which differs from ElasticViT's formula by the
terms of `explained_terms`, each one checked exactly.
"""

from __future__ import annotations

import math

import pytest

from lutnas.space import BlockSpec, SearchSpace, block_complexity, released_config, released_models
from lutnas.space.vocabulary import conv_out, se_channels

# ElasticViT's published MACs ("FLOPs" in the paper are multiply-accumulates), in millions.
PUBLISHED_MMACS = {"elastic_T1": 62.9, "elastic_T2": 120.0, "elastic_S1": 217.6, "elastic_S2": 318.5,
                   "elastic_M": 415.6, "elastic_L1": 517.1, "elastic_L1.5": 618.8, "elastic_L2": 704.1,
                   "elastic_L3": 815.4}
# lutnas's own count (analytic = torch's counter on the built model), in millions, to 0.01M.
OURS_MMACS = {"elastic_T1": 64.90, "elastic_T2": 120.55, "elastic_S1": 221.55, "elastic_S2": 320.26,
              "elastic_M": 417.42, "elastic_L1": 522.89, "elastic_L1.5": 626.03, "elastic_L2": 713.14,
              "elastic_L3": 824.60}


def elasticvit_macs(encoding: list, space: SearchSpace) -> int:
    """ElasticViT's `FusedSuperNet.compute_flops` on its 10-tuple (head dim 16, qk scale 1)."""
    res, ch, depths, ratios, kernels, mlp, _heads, _windows, _qk, vscale = encoding
    r = res // 2
    total = 3 * ch[0] * r * r * 9 + (ch[0] * r * r * kernels[0] ** 2 + ch[0] ** 2 * r * r) * depths[0]
    conv, attn, cin = depths[0], 0, ch[0]
    for stage, width, depth in zip(space.stages, ch[1:], depths[1:]):
        if stage.type == "mbconv":  # MobileBlock.compute_flops, stage resolution floored
            r = r // 2 if stage.stride == 2 else r
            for layer in range(depth):
                a, s = (cin, stage.stride) if layer == 0 else (width, 1)
                inner, k = a * ratios[conv + layer], kernels[conv + layer]
                r_in = 2 * r if s > 1 else r
                total += a * inner * r_in ** 2 + inner * k * k * r * r + inner * width * r * r
                total += 2 * inner * (inner // 4) if stage.se else 0
                total += a * width * r * r if s == 2 else 0
            conv += depth
        else:  # SuperAttention / SuperFFN.compute_flops, token map ceiled
            r = math.ceil(r / 2) if stage.stride == 2 else r
            n, heads = r * r, width // 16
            for layer in range(depth):
                v = 16 * vscale[attn + layer] * heads
                if layer == 0:  # the downsample MBConv: expand, depthwise, project (no SE, shortcut)
                    r_in = 2 * r if stage.stride == 2 else r
                    total += cin * 6 * cin * r_in ** 2 + cin * 6 * 9 * n + cin * 6 * width * n
                total += heads * n * n * 16 + heads * n * n + n * n * v  # q@k, softmax, attn@v
                total += width * n * (2 * 16 * heads + v) + n * v * width + n * v  # qkv, proj, dw V
                total += 2 * width * width * mlp[attn + layer] * n  # FFN
            attn += depth
        cin = width
    return total + cin * cin * 6 * r * r + cin * 6 * 1984 + 1984 * 1000


def explained_terms(space: SearchSpace, config) -> dict[str, int]:
    """lutnas's MACs minus ElasticViT's, term by term (positive: lutnas counts more).

    - v_dwconv: the depthwise 3x3 conv on V is 9 MACs per value; ElasticViT counts it once (1).
    - softmax: ElasticViT counts heads * N^2 for the softmax; it is no multiply-accumulate and
      torch's counter (hence lutnas) counts none.
    - downsample_se: a transformer stage's opening MBConv runs SE (two 1x1 convs on the pooled map);
      ElasticViT's formula omits it.
    - downsample_shortcut: that MBConv's 1x1 projection shortcut (input width != output width);
      ElasticViT's formula omits it (it counts the shortcut only in conv stages).
    - se_width: SE's bottleneck is se_channels(mid) in lutnas (a quarter rounded up to a multiple of
      8, MobileNetV3's rule, which OFA's tables also use), mid // 4 in ElasticViT.
    - strided_same_width: ElasticViT counts a strided conv-stage layer's 1x1 shortcut even when its
      width does not change, where its forward runs no conv (pooling only); lutnas counts none.
    - strided_expand_size: ElasticViT prices a strided layer's expand conv at (2 x output size)^2,
      not at the input size: equal on even sizes, less on odd ones (e.g. 11 -> 6 at 176 px).
    """
    terms = dict.fromkeys(("v_dwconv", "softmax", "downsample_se", "downsample_shortcut", "se_width",
                           "strided_same_width", "strided_expand_size"), 0)
    for (group, position), spec in space.layers_of(config):
        p = spec.as_dict()
        if spec.kind == "attn":
            n, heads = p["hw"] ** 2, p["c"] // p["hd"]
            terms["v_dwconv"] += 8 * n * heads * p["hd"] * p["vs"]
            terms["softmax"] -= heads * n * n
        if spec.kind != "mbconv" or not 1 <= group <= len(space.stages):
            continue
        mid, ho = p["cin"] * p["e"], conv_out(p["hw"], p["s"])
        conv_stage = space.stages[group - 1].type == "mbconv"
        if conv_stage and p["se"]:
            terms["se_width"] += 2 * mid * (se_channels(mid) - mid // 4)
        if position != 0:
            continue  # only a stage's first MBConv changes size or width
        if not conv_stage:
            terms["downsample_se"] += 2 * mid * se_channels(mid)
            terms["downsample_shortcut"] += ho * ho * p["cin"] * p["cout"] * (p["cin"] != p["cout"])
        elif p["s"] == 2 and p["cin"] == p["cout"]:
            terms["strided_same_width"] -= ho * ho * p["cin"] ** 2
        if p["s"] == 2:
            terms["strided_expand_size"] -= p["cin"] * mid * ((2 * ho) ** 2 - p["hw"] ** 2)
    return terms


@pytest.mark.parametrize("name", list(PUBLISHED_MMACS))
def test_released_model_macs_match_elasticvit_term_by_term(name: str, elasticvit_space) -> None:
    """Ours = ElasticViT's formula + the terms of `explained_terms`, exactly; ElasticViT's formula
    as re-implemented here gives its published number (to 0.05%).

    Above 1% of the published count (T1 +3.2%, S1 +1.8%, L1 +1.1%, L1.5 +1.2%, L2 +1.3%, L3 +1.1%):
    lutnas counts the downsample MBConvs' projection shortcut (+1.0 .. +7.0 M) and SE (+0.8 .. +1.6 M)
    that ElasticViT's formula leaves out, and the V depthwise conv at 9 MACs per value instead of 1
    (+0.2 .. +2.5 M), and no softmax (-0.04 .. -1.9 M). Within 1%: T2 (+0.46%), S2 (+0.55%),
    M (+0.44%), the same terms less ElasticViT's over-count of the last downsample's expand conv on
    the odd 5x5 / 7x7 map at 160 / 224 px (-2.0 / -3.3 M). See `explained_terms` for every term."""
    space = elasticvit_space
    encoding = released_models()[name]
    ours = space.complexity(released_config(name, space)).macs
    theirs = elasticvit_macs(encoding, space)
    assert theirs / 1e6 == pytest.approx(PUBLISHED_MMACS[name], rel=5e-4)
    terms = explained_terms(space, released_config(name, space))
    assert ours == theirs + sum(terms.values()), terms
    assert ours / 1e6 == pytest.approx(OURS_MMACS[name], abs=0.006)
    within = abs(ours / 1e6 / PUBLISHED_MMACS[name] - 1) <= 0.01
    assert within == (name in ("elastic_T2", "elastic_S2", "elastic_M"))


def test_every_released_model_is_a_monotone_subnet_of_elasticvit(elasticvit_space) -> None:
    for name in released_models():
        config = released_config(name, elasticvit_space)
        assert elasticvit_space.shrinking_widths(config) == []


@pytest.mark.parametrize("key, pool, project", [
    ("mbconv:hw=56,cin=24,cout=32,k=5,s=2,e=4,se=1,act=hswish", True, True),
    ("mbconv:hw=56,cin=24,cout=24,k=5,s=2,e=4,se=0,act=hswish", True, False),
    ("mbconv:hw=14,cin=64,cout=96,k=3,s=1,e=6,se=1,act=hswish", False, True),
    ("mbconv:hw=14,cin=64,cout=64,k=3,s=1,e=6,se=1,act=hswish", False, False),
])
def test_mbconv_shortcut_operators_and_cost(key: str, pool: bool, project: bool) -> None:
    """Every MBConv layer has a residual: pooled when strided, projected when the width changes."""
    spec = BlockSpec.parse(key)
    ops = spec.operators()
    kinds = [o.kind for o in ops]
    assert kinds[-1] == "add" and kinds.count("add") == 1
    assert ("avgpool" in kinds) == pool
    ho = conv_out(spec.hw, spec.s)
    projection = BlockSpec.make("conv2d", hw=ho, cin=spec.cin, cout=spec.cout, k=1, s=1)
    assert (projection in ops) == project
    no_shortcut = block_complexity(spec).macs - (ho * ho * spec.cin * spec.cout if project else 0)
    mid = spec.cin * spec.e
    expected = (spec.hw ** 2 * spec.cin * mid + ho * ho * mid * spec.k ** 2 + ho * ho * mid * spec.cout
                + (2 * mid * se_channels(mid) if spec.se else 0))
    assert no_shortcut == expected
    # torch counts the same MACs (pooling is not counted) and the shortcut conv's weights
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lutnas.supernet.blocks import build_block, example_input

    module = build_block(spec)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = module(example_input(spec))
    assert counter.get_total_flops() == 2 * block_complexity(spec).macs
    assert sum(p.numel() for p in module.parameters()) == block_complexity(spec).params
    assert out.shape == (1, spec.cout, ho, ho)
