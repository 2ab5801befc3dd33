"""Non-decreasing widths (`monotone_widths`, ElasticViT's rule) across the space, samplers and search."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter
from pathlib import Path

import pytest

import lutnas.space.widths as W
from lutnas.errors import ConfigError, SpaceFileError
from lutnas.space import SearchSpace, StageChoice, StemChoice, SubnetConfig

# A space small enough to enumerate, whose width lists overlap so that order matters everywhere
# (its largest widths, 24 then 24 then 32 then 48 then 48, are monotone; its smallest are not).
TOY = """
name: toymono
num_classes: 10
activation: hswish
monotone_widths: true
resolutions: [32, 48]
stem: {widths: [8, 16, 24], kernel: 3, stride: 2, depths: [1], kernels: [3]}
stages:
  - {name: stage1, type: mbconv, depths: [1, 2], widths: [8, 16, 24], expands: [3], kernels: [3],
     stride: 2}
  - {name: stage2, type: mbconv, depths: [1], widths: [16, 24, 32], expands: [4], kernels: [3],
     stride: 2, se: true}
  - {name: stage3, type: transformer, depths: [1], widths: [16, 32, 48], mlp_ratios: [2],
     v_scales: [2], head_dim: 16, stride: 1}
  - {name: stage4, type: transformer, depths: [1, 2], widths: [32, 48], mlp_ratios: [2],
     v_scales: [2], head_dim: 16, stride: 2}
downsample: {expand: 6, kernel: 3, se: true}
head: {expand: 6, hidden: 32}
"""


def _with_widths(text: str, stage3: str, stage4: str) -> str:
    text = text.replace("stage3, type: transformer, depths: [1], widths: [16, 32, 48]",
                        f"stage3, type: transformer, depths: [1], widths: {stage3}")
    return text.replace("stage4, type: transformer, depths: [1, 2], widths: [32, 48]",
                        f"stage4, type: transformer, depths: [1, 2], widths: {stage4}")


@pytest.fixture(scope="module")
def toy() -> SearchSpace:
    return SearchSpace.from_yaml(TOY, source="toymono")


def every_config(space: SearchSpace, monotone_only: bool = True) -> list[SubnetConfig]:
    """All configs by brute force (for the toy space only)."""
    stems = [StemChoice(**dict(zip(space.stem.choices(), v)))
             for v in itertools.product(*space.stem.choices().values())]
    stages = [[StageChoice(**dict(zip(s.choices(), v))) for v in itertools.product(*s.choices().values())]
              for s in space.stages]
    out = [SubnetConfig(r, stem, tuple(choice)) for r in space.resolutions for stem in stems
           for choice in itertools.product(*stages)]
    return [c for c in out if not space.shrinking_widths(c)] if monotone_only else out


def test_elasticvit_is_monotone_and_tiny_is_not(elasticvit_space, tiny_space) -> None:
    assert elasticvit_space.monotone_widths and not tiny_space.monotone_widths
    # Exact counts: 39.8% of elasticvit's width combinations never shrink.
    assert elasticvit_space.num_subnets() == 21_672_453_419_827_200
    assert elasticvit_space.num_subnets(monotone=False) == 54_487_280_517_120_000
    assert tiny_space.num_subnets() == tiny_space.num_subnets(monotone=False) == 16_384


def test_chain_counts_match_brute_force(elasticvit_space, toy) -> None:
    for space in (elasticvit_space, toy):
        options = space.width_options()
        brute = sum(1 for chain in itertools.product(*options)
                    if all(a <= b for a, b in zip(chain, chain[1:])))
        assert W.count_chains(options) == brute
    assert toy.num_subnets() == len(every_config(toy))
    assert toy.num_subnets(monotone=False) == len(every_config(toy, monotone_only=False))


def test_sample_is_uniform_over_monotone_chains(toy) -> None:
    options = toy.width_options()
    chains = [c for c in itertools.product(*options) if all(a <= b for a, b in zip(c, c[1:]))]
    rng = random.Random(0)
    draws = 30 * len(chains) * 10
    counts = Counter(tuple(W.sample_chain(options, rng)) for _ in range(draws))
    assert set(counts) == set(chains)
    expected = draws / len(chains)
    chi2 = sum((counts[c] - expected) ** 2 / expected for c in chains)
    assert chi2 < len(chains) + 5 * (2 * len(chains)) ** 0.5  # about 5 sigma above its mean


def test_sample_mutate_crossover_stay_monotone(elasticvit_space: SearchSpace) -> None:
    space = elasticvit_space
    rng = random.Random(1)
    population = [space.sample(rng) for _ in range(300)]
    for config in population:
        space.validate(config)
    moved = 0
    for _ in range(600):
        a, b = rng.sample(population, 2)
        child = space.crossover(a, b, rng)
        space.validate(child)
        assert all(w in (x, y) for w, x, y in zip(space.width_chain(child), space.width_chain(a),
                                                 space.width_chain(b)))
        mutant = space.mutate(child, rng, prob=0.3)
        space.validate(mutant)
        moved += space.width_chain(mutant) != space.width_chain(child)
    assert moved > 300
    assert space.mutate(population[0], rng, prob=0.0) == population[0]
    assert space.crossover(population[0], population[0], rng) == population[0]


def test_largest_and_smallest_are_the_extreme_monotone_chains(toy, elasticvit_space) -> None:
    assert toy.width_chain(toy.smallest()) == [8, 8, 16, 16, 32]
    assert toy.width_chain(toy.largest()) == [24, 24, 32, 48, 48]
    # In a space whose smallest widths shrink, smallest() raises them just enough.
    shrinking = SearchSpace.from_yaml(_with_widths(TOY, stage3="[32, 48]", stage4="[16, 32, 48]"))
    assert shrinking.width_chain(shrinking.smallest()) == [8, 8, 16, 32, 32]
    for space in (toy, elasticvit_space, shrinking):
        space.validate(space.smallest())
        space.validate(space.largest())


def test_validation_names_the_stages_and_widths(elasticvit_space: SearchSpace) -> None:
    config = elasticvit_space.largest()
    stages = list(config.stages)
    stages[2] = dataclasses.replace(stages[2], width=96)
    stages[3] = dataclasses.replace(stages[3], width=80)
    bad = dataclasses.replace(config, stages=tuple(stages))
    with pytest.raises(ConfigError, match=r"space 'elasticvit' has monotone_widths \(no stage narrower "
                                          r"than the one before\): stage4 width=80 < stage3 width=96"):
        elasticvit_space.validate(bad)
    stem_first = dataclasses.replace(config, stem=dataclasses.replace(config.stem, width=24),
                                     stages=(dataclasses.replace(stages[0], width=16), *stages[1:]))
    with pytest.raises(ConfigError, match=r"stage1 width=16 < stem width=24; stage4 width=80"):
        elasticvit_space.validate(stem_first)
    repaired = elasticvit_space.repair_widths(bad)
    assert elasticvit_space.validate(repaired) and elasticvit_space.width_chain(repaired)[3:5] == [96, 96]


def test_space_file_option_is_checked(tmp_path: Path) -> None:
    with pytest.raises(SpaceFileError,
                       match="monotone_widths must be true or false, got the string 'yes please'"):
        SearchSpace.from_yaml(TOY.replace("monotone_widths: true", "monotone_widths: 'yes please'"))
    impossible = _with_widths(TOY, stage3="[32, 48]", stage4="[16]")
    with pytest.raises(SpaceFileError, match="no choice of widths is non-decreasing"):
        SearchSpace.from_yaml(impossible)
    assert not SearchSpace.from_yaml(TOY.replace("monotone_widths: true\n", "")).monotone_widths


def test_unique_blocks_are_exactly_those_of_monotone_subnets(toy) -> None:
    """The profiling plan holds the blocks some admitted subnet executes, and no other."""
    executed = {b.key for c in every_config(toy) for b in toy.blocks_of(c)}
    assert {b.key for b in toy.unique_blocks()} == executed
    free = dataclasses.replace(toy, monotone_widths=False)
    assert len(free.unique_blocks()) > len(executed)


def test_elasticvit_plan_shrinks_and_covers_samples(elasticvit_space: SearchSpace) -> None:
    space = elasticvit_space
    free = dataclasses.replace(space, monotone_widths=False)
    keys = {b.key for b in space.unique_blocks([160])}
    assert (len(keys), len(free.unique_blocks([160]))) == (596, 666)
    assert len(space.unique_blocks()) == 3070 and len(free.unique_blocks()) == 3454
    rng = random.Random(5)
    for _ in range(200):
        config = dataclasses.replace(space.sample(rng), resolution=160)
        assert {b.key for b in space.blocks_of(config)} <= keys
    # No block with a wider input than output is planned (every MBConv's cin <= cout).
    assert all(b.cin <= b.cout for b in space.unique_blocks([160]) if b.kind == "mbconv")


def test_repair_chain_moves_only_what_breaks_the_order() -> None:
    options = [(16, 24), (16, 24, 32), (16, 24, 32, 40, 48), (48, 64, 80, 96), (80, 96, 112)]
    assert W.repair_chain([16, 24, 32, 64, 80], options) == [16, 24, 32, 64, 80]
    assert W.repair_chain([24, 16, 48, 96, 80], options) == [24, 24, 48, 96, 96]
    rng = random.Random(0)
    for _ in range(500):
        chain = W.repair_chain([rng.choice(o) for o in options], options)
        assert all(a <= b for a, b in zip(chain, chain[1:]))
        assert all(w in o for w, o in zip(chain, options))


# ------------------------------------------------------------------- samplers and search
def test_supernet_samplers_draw_only_monotone_subnets(elasticvit_space: SearchSpace) -> None:
    from lutnas.supernet.sampling import biased_sample, build_pools

    space = elasticvit_space
    rng = random.Random(2)
    for level in (0.0, 0.3, 0.7, 1.0):
        for _ in range(100):
            space.validate(biased_sample(space, rng, level))

    def mmacs(configs: list[SubnetConfig]) -> list[float]:
        return [space.complexity(c).macs / 1e6 for c in configs]

    pools = build_pools(space, mmacs, [100.0, 300.0, 3500.0], pool_size=20, rng=rng, max_draws=512)
    assert sum(len(p) for p in pools) > 0
    for pool in pools:
        for config in pool:
            space.validate(config)


def test_search_helpers_build_only_monotone_subnets(elasticvit_space: SearchSpace) -> None:
    from lutnas.search.constraints import neighbours, sample_scaled

    space = elasticvit_space
    rng = random.Random(3)
    for size in (0.0, 0.2, 0.5, 0.8, 1.0):
        for _ in range(50):
            space.validate(sample_scaled(space, rng, size))
    config = space.sample(rng)
    near = neighbours(space, config)
    free = neighbours(dataclasses.replace(space, monotone_widths=False), config)
    assert 0 < len(near) < len(free)
    for other in near:
        space.validate(other)


class MacsLatency:
    """A latency model for the search: 1 ms per 10 MMACs (the search only needs an ordering)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def predict(self, configs: list[SubnetConfig]) -> list[float]:
        return [self.space.complexity(c).macs / 1e7 for c in configs]


def test_evolution_finds_only_monotone_subnets(toy: SearchSpace) -> None:
    from lutnas.search.constraints import Constraints, CostModel, achievable_range
    from lutnas.search.evolution import EvolutionSettings, evolve
    from lutnas.search.objectives import ProxyObjective

    cost_model = CostModel(toy, MacsLatency(toy))
    span = achievable_range(toy, cost_model, random.Random(0))
    target = span.fastest_ms + 0.6 * (span.slowest_ms - span.fastest_ms)
    settings = EvolutionSettings(population=32, generations=5, parents=16, mutations=8,
                                 crossovers=8, mutate_prob=0.4, seed=1)
    result = evolve(toy, cost_model, ProxyObjective(), Constraints(target, 0.3 * target), settings)
    assert len(result.candidates) > 16
    for cand in result.candidates:
        toy.validate(cand.config)
