"""Each sampler's defining property, on the real spaces and cost functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lutnas.space import SearchSpace
from lutnas.supernet.sampling import (
    ELASTICVIT_BUCKETS_MMACS,
    ELASTICVIT_MIN_MMACS,
    ComplexityAwareSampler,
    PerformanceAwareSampler,
    bucket_of,
    macs_cost,
    make_sampler,
)


@pytest.fixture(scope="module")
def tiny() -> SearchSpace:
    return SearchSpace.load("tiny")


def test_reference_low_end_is_elasticvit_smallest_subnet() -> None:
    space = SearchSpace.load("elasticvit")
    assert space.complexity(space.smallest()).macs / 1e6 == pytest.approx(ELASTICVIT_MIN_MMACS)


def test_elasticvit_uses_the_papers_buckets_in_mmacs() -> None:
    space = SearchSpace.load("elasticvit")
    sampler = ComplexityAwareSampler(space, 1, seed=0, pool_size=5)
    assert sampler.edges == [float(e) for e in ELASTICVIT_BUCKETS_MMACS]
    cost = macs_cost(space)
    for index, pool in enumerate(sampler.pools):
        low = sampler.edges[index - 1] if index else 0.0
        assert all(low < c <= sampler.edges[index] for c in cost(pool))


def test_complexity_walk_moves_at_most_one_bucket_and_covers_all(tiny: SearchSpace) -> None:
    sampler = make_sampler("ca", tiny, 2, seed=3, pool_size=30)
    assert len(sampler.pools) == len(ELASTICVIT_BUCKETS_MMACS) and not sampler.dropped_buckets
    cost = macs_cost(tiny)
    for step in range(400):
        configs = sampler.sample(step)
        index = sampler.bucket_index
        low = sampler.edges[index - 1] if index else -np.inf
        assert all(low < c <= sampler.edges[index] for c in cost(configs))
    steps = np.array(sampler.history)
    assert np.abs(np.diff(steps)).max() <= 1
    assert np.abs(np.diff(steps)).max() == 1  # it does move
    assert set(steps.tolist()) == set(range(len(sampler.pools)))


def test_scaled_buckets_span_the_space(tiny: SearchSpace) -> None:
    sampler = make_sampler("ca", tiny, 1, seed=0, pool_size=5)
    low, high = macs_cost(tiny)([tiny.smallest(), tiny.largest()])
    assert sampler.edges[-1] == pytest.approx(high)
    assert low < sampler.edges[0] < sampler.edges[1]
    assert bucket_of(low, sampler.edges) == 0 and bucket_of(high * 1.01, sampler.edges) is None


def test_latency_buckets_from_a_generic_cost_function(tiny: SearchSpace) -> None:
    # A stand-in for predicted milliseconds: any monotone-ish cost must bucket the same way.
    def fake_ms(configs):
        return np.array([tiny.complexity(c).bytes_moved / 1e6 for c in configs])

    sampler = make_sampler("ca", tiny, 2, seed=1, cost_fn=fake_ms, cost_name="ms", pool_size=20)
    low, high = fake_ms([tiny.smallest(), tiny.largest()])
    assert sampler.edges[-1] == pytest.approx(high) and sampler.cost_name == "ms"
    for step in range(100):
        configs = sampler.sample(step)
        index = sampler.bucket_index
        assert all(bucket_of(c, sampler.edges) == index for c in fake_ms(configs))
    assert np.abs(np.diff(sampler.history)).max() <= 1


def test_sandwich_and_uniform(tiny: SearchSpace) -> None:
    sandwich = make_sampler("sandwich", tiny, 3, seed=0)
    uniform = make_sampler("uniform", tiny, 3, seed=0)
    seen = set()
    for step in range(50):
        picked = sandwich.sample(step)
        assert picked[0] == tiny.smallest() and len(picked) == 3
        seen.update(uniform.sample(step))
    assert len(seen) > 100  # uniform draws do not repeat a few subnets


def test_performance_bank_refresh_and_draw_probability(tiny: SearchSpace) -> None:
    sampler = make_sampler("ca+pa", tiny, 1, seed=5, pool_size=40, bank_size=4, candidates=3,
                           p_start=0.2, p_end=0.8)
    assert isinstance(sampler, PerformanceAwareSampler)
    sampler.set_total_steps(1000)
    assert sampler.draw_probability(0) == pytest.approx(0.2)
    assert sampler.draw_probability(500) == pytest.approx(0.5)
    assert sampler.draw_probability(1000) == pytest.approx(0.8)
    cost = macs_cost(tiny)

    def score(configs):  # the real trainer passes minibatch losses; here cost stands in for loss
        return list(cost(configs))

    scored_best = 0
    for step in range(300):
        before_bank = sampler.bank_draws
        configs = sampler.sample(step, score)
        if sampler.bank_draws == before_bank:
            scored_best += 1
        sampler.observe(configs, list(cost(configs)))
        for bank in sampler.banks:  # kept sorted, bounded, and without duplicates
            losses = [e["loss"] for e in bank]
            assert losses == sorted(losses) and len(bank) <= 4
            assert len({json.dumps(e["config"], sort_keys=True) for e in bank}) == len(bank)
    assert sampler.bank_draws > 0 and scored_best > 0
    # No bank draw happens in a bucket whose bank is less than half full.
    fresh = make_sampler("ca+pa", tiny, 1, seed=5, pool_size=40, bank_size=4)
    fresh.set_total_steps(10)
    for step in range(10):
        fresh.sample(step, score)  # never observed: banks stay empty
    assert fresh.bank_draws == 0

    # Refresh: re-observing a banked subnet replaces its score; a better newcomer evicts the worst.
    index = sampler.bucket_index
    bank = sampler.banks[index]
    worst = bank[-1]["config"]
    best = bank[0]["config"]
    from lutnas.space import SubnetConfig
    sampler.observe([SubnetConfig.from_dict(best)], [1e9])
    assert bank[-1]["config"] == best and bank[-1]["loss"] == 1e9
    newcomer = next(c for c in sampler.pools[index] if c.to_dict() not in [e["config"] for e in bank])
    sampler.observe([newcomer], [-1.0])
    assert bank[0]["config"] == newcomer.to_dict() and len(bank) == 4
    # The re-scored (now worst) entry was evicted, the former worst stays.
    assert best not in [e["config"] for e in bank] and worst in [e["config"] for e in bank]


def test_bank_draw_frequency_follows_the_schedule(tiny: SearchSpace) -> None:
    sampler = make_sampler("ca+pa", tiny, 1, seed=7, pool_size=20, bank_size=2, p_start=0.9, p_end=0.9)
    sampler.set_total_steps(10)
    cost = macs_cost(tiny)
    # Fill every bank so that every step may draw from it.
    for index, pool in enumerate(sampler.pools):
        sampler.bucket_index = index
        sampler.observe(pool[:2], list(cost(pool[:2])))
    draws = 0
    for step in range(400):
        before = sampler.bank_draws
        sampler.sample(step, lambda cs: list(cost(cs)))
        draws += sampler.bank_draws - before
    assert 0.84 < draws / 400 < 0.96


def test_state_round_trips_through_json(tiny: SearchSpace) -> None:
    a = make_sampler("ca+pa", tiny, 2, seed=11, pool_size=20)
    cost = macs_cost(tiny)
    for step in range(30):
        configs = a.sample(step, lambda cs: list(cost(cs)))
        a.observe(configs, list(cost(configs)))
    state = json.loads(json.dumps(a.state_dict()))
    b = make_sampler("ca+pa", tiny, 2, seed=999, pool_size=20)
    b.load_state_dict(state)
    for step in range(30, 60):
        ca = a.sample(step, lambda cs: list(cost(cs)))
        cb = b.sample(step, lambda cs: list(cost(cs)))
        assert ca == cb
        a.observe(ca, list(cost(ca)))
        b.observe(cb, list(cost(cb)))
    assert a.state_dict() == b.state_dict()


def test_same_seed_same_subnets(tiny: SearchSpace) -> None:
    for name in ("uniform", "sandwich", "ca"):
        extra = {"pool_size": 20} if name == "ca" else {}
        a, b = make_sampler(name, tiny, 2, seed=4, **extra), make_sampler(name, tiny, 2, seed=4, **extra)
        assert [a.sample(s) for s in range(20)] == [b.sample(s) for s in range(20)]
