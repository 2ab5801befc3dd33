"""The analytic complexity of lutnas.space checked against torch's own FLOP counter."""

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lutnas.space import SearchSpace, block_complexity
from lutnas.supernet.blocks import build_block, example_input


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One thread, as tests/supernet does: two OpenMP threads on the 2 shared CI cores made a
    depthwise conv 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def measured_flops(spec) -> int:
    module = build_block(spec)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(example_input(spec))
    return counter.get_total_flops()


def test_analytic_flops_and_params_match_torch(tiny_space: SearchSpace, elasticvit_space) -> None:
    rng = random.Random(0)
    specs = tiny_space.unique_blocks()
    specs += rng.sample(elasticvit_space.unique_blocks([128]), 25)
    specs += list({op.key: op for s in specs[:30] for op in s.operators()}.values())
    for spec in specs:
        cost = block_complexity(spec)
        assert 2 * cost.macs == measured_flops(spec), spec.key
        assert cost.params == sum(p.numel() for p in build_block(spec).parameters()), spec.key
        assert cost.bytes_read > 0 and cost.bytes_written > 0


def test_subnet_complexity_is_the_sum_and_grows_with_choices(tiny_space: SearchSpace) -> None:
    small, large = tiny_space.smallest(), tiny_space.largest()
    assert tiny_space.complexity(small).macs < tiny_space.complexity(large).macs
    model = torch.nn.Sequential(*[build_block(s) for s in tiny_space.blocks_of(large)])
    x = torch.randn(1, 3, large.resolution, large.resolution)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert counter.get_total_flops() == 2 * tiny_space.complexity(large).macs
