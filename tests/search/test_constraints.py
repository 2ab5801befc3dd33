from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from lutnas.errors import SearchError
from lutnas.predictors.lut import LutPredictor
from lutnas.search.constraints import (
    Constraints,
    CostModel,
    achievable_range,
    build_pools,
    check_target,
    feasible_mask,
    parse_count,
    repair,
)
from lutnas.space import SearchSpace


@pytest.fixture(scope="module")
def cost_model(tiny_space: SearchSpace, tiny_table: Path) -> CostModel:
    return CostModel(tiny_space, LutPredictor.load(tiny_table, tiny_space))


@pytest.mark.parametrize("text, value", [("5M", 5e6), ("300", 300.0), ("300k", 3e5),
                                         ("1.5G", 1.5e9), (" 2m ", 2e6), (7, 7.0)])
def test_parse_count(text: str, value: float) -> None:
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["5 MB", "", "-3", "0", "M"])
def test_parse_count_rejects(text: str) -> None:
    with pytest.raises(SearchError):
        parse_count(text)


def test_costs_match_blocks_of(tiny_space: SearchSpace, tiny_table: Path, cost_model: CostModel) -> None:
    """The grids' params/MMACs and the LUT latency equal the per-config walk over blocks_of."""
    from lutnas.tables.table import LatencyTable

    table = LatencyTable.load(tiny_table)
    rng = random.Random(5)
    configs = [tiny_space.sample(rng) for _ in range(40)]
    costs = cost_model.costs(configs)
    for i, config in enumerate(configs):
        total = tiny_space.complexity(config)
        assert costs.params[i] == total.params
        assert costs.mmacs[i] == pytest.approx(total.macs / 1e6)
        lut = sum(table.latency_ms(b.key) for b in tiny_space.blocks_of(config))
        assert costs.latency_ms[i] == pytest.approx(lut)


def test_pools_cover_the_window_and_hold_only_feasible(tiny_space: SearchSpace,
                                                       cost_model: CostModel) -> None:
    span = achievable_range(tiny_space, cost_model, random.Random(0))
    for fraction in (0.05, 0.5, 0.97):  # near the fast end, the middle, the slow end
        target = span.fastest_ms + fraction * (span.slowest_ms - span.fastest_ms)
        window = 0.1 * (span.slowest_ms - span.fastest_ms)
        constraints = Constraints(target, window)
        pools = build_pools(tiny_space, cost_model, constraints, random.Random(1), want=64, bins=4)
        members = [c for pool in pools.pools for c in pool]
        assert members, f"no pool member for target {target}"
        assert feasible_mask(cost_model.costs(members), constraints).all()
        if 0.2 < fraction < 0.8:
            assert pools.filled_bins() == 4


def test_repair_lands_in_the_window(tiny_space: SearchSpace, cost_model: CostModel) -> None:
    span = achievable_range(tiny_space, cost_model, random.Random(0))
    target = span.fastest_ms + 0.4 * (span.slowest_ms - span.fastest_ms)
    constraints = Constraints(target, 0.15 * (span.slowest_ms - span.fastest_ms))
    rng = random.Random(2)
    fixed = [repair(tiny_space, c, cost_model, constraints, rng) for c in
             (tiny_space.largest(), tiny_space.smallest())]
    assert all(f is not None for f in fixed)
    assert feasible_mask(cost_model.costs(fixed), constraints).all()


def test_caps_on_params_and_mmacs(tiny_space: SearchSpace, cost_model: CostModel) -> None:
    span = achievable_range(tiny_space, cost_model, random.Random(0))
    rng = random.Random(3)
    sample = cost_model.costs([tiny_space.sample(rng) for _ in range(500)])
    cap_params, cap_mmacs = float(np.median(sample.params)), float(np.median(sample.mmacs))
    constraints = Constraints(span.slowest_ms, span.slowest_ms - span.fastest_ms,
                              max_params=cap_params, max_mmacs=cap_mmacs)
    pools = build_pools(tiny_space, cost_model, constraints, random.Random(4), want=32)
    members = [c for pool in pools.pools for c in pool]
    costs = cost_model.costs(members)
    assert len(members) > 0
    assert (costs.params <= cap_params).all() and (costs.mmacs <= cap_mmacs).all()


def test_target_outside_the_achievable_range(tiny_space: SearchSpace, cost_model: CostModel) -> None:
    span = achievable_range(tiny_space, cost_model, random.Random(0))
    with pytest.raises(SearchError, match=r"below the fastest subnet.*achievable range"):
        check_target(Constraints(span.fastest_ms * 0.5), span, "t")
    with pytest.raises(SearchError, match=r"above the slowest subnet.*achievable range"):
        check_target(Constraints(span.slowest_ms * 2), span, "t")
    check_target(Constraints((span.fastest_ms + span.slowest_ms) / 2), span, "t")


def test_codec_round_trip_matches_the_lut_encoding(elasticvit_space: SearchSpace) -> None:
    from lutnas.predictors.lut import SpaceIndex
    from lutnas.search.constraints import Codec

    codec = Codec(elasticvit_space)
    rng = random.Random(7)
    configs = [elasticvit_space.sample(rng) for _ in range(50)]
    rows = codec.encode(configs)
    assert codec.decode(rows) == configs
    index = SpaceIndex(elasticvit_space, {}, set())
    assert np.array_equal(rows, index.encode(configs))
    assert not codec.shrinking(rows).any()


def test_scaled_rows_and_neighbours_stay_in_a_monotone_space(elasticvit_space: SearchSpace) -> None:
    from lutnas.search.constraints import Codec, scaled_rows

    codec = Codec(elasticvit_space)
    generator = np.random.default_rng(3)
    rows = scaled_rows(codec, generator, generator.random(300))
    for config in codec.decode(rows):
        elasticvit_space.validate(config)
    options, real = codec.neighbours(rows[:20])
    assert real.any(axis=1).all()
    for config in codec.decode(options[real]):
        elasticvit_space.validate(config)


def test_repair_rows_fixes_a_batch_together(tiny_space: SearchSpace, cost_model: CostModel) -> None:
    from lutnas.search.constraints import repair_rows

    span = achievable_range(tiny_space, cost_model, random.Random(0))
    target = span.fastest_ms + 0.4 * (span.slowest_ms - span.fastest_ms)
    constraints = Constraints(target, 0.15 * (span.slowest_ms - span.fastest_ms))
    rng = random.Random(5)
    configs = [tiny_space.sample(rng) for _ in range(40)] + [tiny_space.largest()]
    fixed, ok = repair_rows(cost_model, cost_model.codec.encode(configs), constraints, random.Random(2))
    assert ok.mean() > 0.9
    repaired = cost_model.codec.decode(fixed[ok])
    assert feasible_mask(cost_model.costs(repaired), constraints).all()
