import random

import pytest
import torch
from torch import nn

from lutnas.errors import BlockKeyError
from lutnas.space import BlockSpec, SearchSpace, kind_fields
from lutnas.supernet.blocks import build_block, example_input


def test_every_key_round_trips(elasticvit_space: SearchSpace) -> None:
    blocks = elasticvit_space.unique_blocks([128])
    operators = {op.key: op for b in blocks for op in b.operators()}
    kinds_seen = {b.kind for b in blocks} | {o.kind for o in operators.values()}
    assert kinds_seen == set(kind_fields())
    for spec in [*blocks, *operators.values()]:
        assert BlockSpec.parse(spec.key) == spec
        assert BlockSpec.parse(spec.key).key == spec.key


def test_key_format_matches_design() -> None:
    spec = BlockSpec.make("mbconv", hw=56, cin=24, cout=32, k=5, s=2, e=4, se=1, act="hswish")
    assert spec.key == "mbconv:hw=56,cin=24,cout=32,k=5,s=2,e=4,se=1,act=hswish"
    assert spec.cout == 32 and spec.act == "hswish"


@pytest.mark.parametrize("key, message", [
    ("nonsense", "not of the form"),
    ("warp:hw=1", "unknown block kind 'warp'"),
    ("conv:hw=8,cin=3,cout=8,k=3,s=2", "missing"),
    ("conv:hw=8,cin=3,cout=8,k=3,s=x,act=relu", "not an integer"),
    ("conv:hw=8,cin=3,cout=8,k=3,s=2,act=swoosh", "is not one of"),
    ("ffn:hw=4,c=32,r=2,act=hswish,extra=1", "unexpected"),
])
def test_bad_keys_are_named(key: str, message: str) -> None:
    with pytest.raises(BlockKeyError, match=message):
        BlockSpec.parse(key)


def test_static_subnet_is_the_composition_of_its_blocks(tiny_space: SearchSpace) -> None:
    rng = random.Random(0)
    for _ in range(3):
        config = tiny_space.sample(rng)
        specs = tiny_space.blocks_of(config)
        modules = [build_block(s) for s in specs]
        x = torch.randn(2, 3, config.resolution, config.resolution)
        y = x
        for spec, module in zip(specs, modules):
            expected_shape = example_input(spec, batch=2).shape
            assert y.shape == expected_shape, spec.key
            y = module(y)
        assert torch.allclose(nn.Sequential(*modules)(x), y)
        assert y.shape == (2, tiny_space.num_classes)


def test_operator_modules_run_on_their_example_inputs(tiny_space: SearchSpace) -> None:
    block = tiny_space.blocks_of(tiny_space.largest())
    ops = {op.key: op for b in block for op in b.operators()}
    for op in ops.values():
        out = build_block(op)(example_input(op))
        assert torch.isfinite(out).all(), op.key


@pytest.mark.parametrize("hw, cin, cout, s", [(11, 16, 24, 2), (12, 16, 24, 2), (11, 24, 24, 2),
                                              (7, 32, 48, 1)])
def test_mbconv_residual_is_elasticvits_shortcut(hw: int, cin: int, cout: int, s: int) -> None:
    """With the main branch zeroed (project BN scale 0), the output is ElasticViT's residual:
    `avg_pool2d(x, 2, padding=hw % 2)` when strided, then the 1x1 shortcut conv when cin != cout."""
    spec = BlockSpec.make("mbconv", hw=hw, cin=cin, cout=cout, k=3, s=s, e=3, se=1, act="hswish")
    block = build_block(spec)
    with torch.no_grad():
        block.project_bn.weight.zero_()
        block.project_bn.bias.zero_()
    x = example_input(spec, batch=2)
    residual = nn.functional.avg_pool2d(x, s, padding=0 if hw % 2 == 0 else 1) if s == 2 else x
    if cin != cout:
        residual = nn.functional.conv2d(residual, block.shortcut_conv.weight)
    else:
        assert not hasattr(block, "shortcut_conv")
    with torch.no_grad():
        torch.testing.assert_close(block(x), residual)
    assert residual.shape[-1] == (hw - 1) // s + 1


def test_static_blocks_trace_without_weight_slicing(tiny_space: SearchSpace) -> None:
    """A static block runs the shared math at full size: no identity slices of its weights and no
    offset-index arithmetic reach torch.export (litert-torch retraces that graph four times). The
    only slices left are attention's q/k/v rows of the fused qkv layer (weight and bias: 6)."""
    seen = set()
    for spec in tiny_space.unique_blocks():
        if spec.kind in seen:
            continue
        seen.add(spec.kind)
        graph = torch.export.export(build_block(spec), (example_input(spec),)).graph
        targets = [str(node.target) for node in graph.nodes if node.op == "call_function"]
        slices = sum(t.startswith(("aten.slice", "aten.alias")) for t in targets)
        assert slices == (6 if spec.kind == "attn" else 0), (spec.key, targets)
        assert not any(t.startswith(("aten.arange", "aten.meshgrid")) for t in targets), spec.key
    assert {"conv", "mbconv", "attn", "ffn", "head"} <= seen
