"""`evmini`, the demo's built-in space: ElasticViT's structure at a scale a 2-core host can profile
and train in minutes (scripts/demo.sh, README "Set up")."""

import random

from lutnas.space import BUILTIN_SPACES, SearchSpace


def test_evmini_is_builtin_and_has_elasticvits_structure() -> None:
    assert "evmini" in BUILTIN_SPACES
    space = SearchSpace.load("evmini")
    full = SearchSpace.load("elasticvit")
    assert space.name == "evmini" and space.source == "evmini"
    assert space.num_classes == 10 and space.resolutions == (64,)
    # The first four stages of elasticvit: two MBConv stages, then transformer stages opened by the
    # same MBConv downsample, with elasticvit's strides, activation and head dim.
    assert [s.type for s in space.stages] == [s.type for s in full.stages[:4]]
    assert [s.stride for s in space.stages] == [s.stride for s in full.stages[:4]]
    assert [s.se for s in space.stages] == [s.se for s in full.stages[:4]]
    assert space.activation == full.activation
    assert (space.downsample_expand, space.downsample_kernel, space.downsample_se) == (
        full.downsample_expand, full.downsample_kernel, full.downsample_se)


def test_evmini_widths_never_shrink() -> None:
    space = SearchSpace.load("evmini")
    assert space.monotone_widths
    rng = random.Random(0)
    for _ in range(200):
        config = space.sample(rng)
        assert space.shrinking_widths(config) == []
        chain = space.width_chain(config)
        assert chain == sorted(chain)
    assert space.shrinking_widths(space.largest()) == []


def test_evmini_block_count_keeps_the_demo_affordable() -> None:
    """42 unique blocks: profiled in about 3 minutes on the 2-core host (most of it export)."""
    space = SearchSpace.load("evmini")
    blocks = space.unique_blocks()
    assert len(blocks) == 42
    rng = random.Random(1)
    keys = {b.key for b in blocks}
    for _ in range(100):
        assert {b.key for b in space.blocks_of(space.sample(rng))} <= keys
    # Subnets of 5-16 MMACs: the supernet trains on digits at 64 px within the demo's budget.
    assert 4e6 < space.complexity(space.smallest()).macs < space.complexity(space.largest()).macs < 17e6
