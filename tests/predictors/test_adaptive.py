import numpy as np
import pytest

from lutnas.errors import BadInputError
from lutnas.predictors.adaptive import (
    AdaptiveSelector,
    StoppingRule,
    allocate,
    covering_sample,
    pick_uncertain,
    uncertainty_ms,
)
from lutnas.predictors.features import block_feature_frame
from lutnas.profiler.adaptive_run import run_adaptive
from lutnas.space import BlockSpec, SearchSpace
from tests.predictors.host_data import host_latencies, tiny_specs


def test_allocation_is_proportional_with_a_floor() -> None:
    alloc = allocate({"mbconv": 68, "attn": 12, "conv": 1}, 20)
    assert sum(alloc.values()) == 20
    assert alloc["conv"] == 1 and alloc["attn"] >= 2 and alloc["mbconv"] > alloc["attn"]


def test_covering_sample_spans_kinds_and_sizes(tiny_space: SearchSpace) -> None:
    specs = tiny_space.unique_blocks()
    sample = covering_sample(specs, 15, seed=3)
    assert len(sample) == 15 == len({s.key for s in sample})
    assert {s.kind for s in sample} == {s.kind for s in specs}
    mb = [s for s in specs if s.kind == "mbconv"]
    flops = block_feature_frame(mb, "mbconv")["macs"]
    chosen = {s.key for s in sample}
    assert flops.idxmax() in chosen and flops.idxmin() in chosen
    assert [s.key for s in covering_sample(specs, 15, seed=3)] == [s.key for s in sample]


def test_stopping_rule() -> None:
    rule = StoppingRule(budget_s=60.0, error_bound=0.05)
    assert rule.check(10.0, 0.2, remaining=5, per_block_s=1.0) .stop is False
    assert rule.check(10.0, 0.2, remaining=100, per_block_s=1.0).max_next == 50
    assert rule.check(10.0, 0.04, remaining=5, per_block_s=1.0).stop  # below the bound
    assert "budget" in rule.check(59.5, 0.2, remaining=5, per_block_s=1.0).reason
    assert "every block" in rule.check(1.0, None, remaining=0, per_block_s=1.0).reason
    assert rule.check(1.0, None, remaining=3, per_block_s=1.0).stop is False  # no error yet
    with pytest.raises(BadInputError):
        StoppingRule(budget_s=0)


def test_uncertain_blocks_are_picked_first_and_spread_out(tiny_space: SearchSpace) -> None:
    specs = [s for s in tiny_space.unique_blocks() if s.kind == "mbconv"][:10]
    spread = np.arange(10, dtype=float)
    picked = pick_uncertain(specs, spread, 3)
    assert picked[0] == specs[9]
    twins = [specs[9], specs[9], specs[0]]  # an exact twin of the first pick is discounted to 0
    assert pick_uncertain(twins, np.array([5.0, 4.9, 1.0]), 2)[1] == specs[0]


class RecordedDevice:
    """Answers with real host measurements and charges device time on a clock."""

    def __init__(self, latencies: dict[str, float], seconds_per_block: float) -> None:
        self.latencies, self.seconds_per_block, self.now, self.calls = latencies, seconds_per_block, 0.0, 0

    def measure(self, specs: list[BlockSpec]) -> dict[str, float]:
        self.calls += 1
        self.now += self.seconds_per_block * len(specs)
        return {s.key: self.latencies[s.key] for s in specs}

    def clock(self) -> float:
        return self.now


def test_adaptive_run_stops_when_the_budget_is_spent() -> None:
    device = RecordedDevice(host_latencies("onnxruntime"), seconds_per_block=3.0)
    result = run_adaptive(list(tiny_specs()), device.measure, budget_minutes=1.5, error_bound=0.001,
                          initial=10, batch=6, clock=device.clock)
    assert "budget" in result.decision.reason
    assert device.now <= 90.0 and len(result.measured) == device.now / 3.0
    frame = result.table_frame(list(tiny_specs()))
    assert (frame["source"] == "measured").sum() == len(result.measured)
    assert set(frame["source"]) == {"measured", "predicted:learned"}
    assert frame["median_ms"].gt(0).all()
    assert all(not np.isnan(h["heldout_mape"]) for h in result.history[1:])


def test_adaptive_run_stops_at_the_error_bound() -> None:
    device = RecordedDevice(host_latencies("onnxruntime"), seconds_per_block=1.0)
    result = run_adaptive(list(tiny_specs()), device.measure, budget_minutes=60, error_bound=0.9,
                          initial=10, batch=4, clock=device.clock)
    assert "below the bound" in result.decision.reason
    assert len(result.measured) == 14 and device.calls == 2


def test_selector_defaults_and_next_batch(tiny_space: SearchSpace) -> None:
    from lutnas.predictors.learned import LearnedPredictor

    latencies = host_latencies("onnxruntime")
    specs = list(tiny_specs())
    selector = AdaptiveSelector(specs, seed=1)
    first = selector.initial_sample()
    assert len(first) == selector.initial >= 2 * 5
    predictor = LearnedPredictor().fit({s.key: latencies[s.key] for s in first})
    remaining = [s for s in specs if s not in first]
    batch = selector.next_batch(predictor, remaining, limit=3)
    assert len(batch) == 3 and not set(batch) & set(first)
    _, spread = predictor.predict_blocks(remaining, return_spread=True, use_measured=False)
    assert max(spread[remaining.index(b)] for b in batch) == spread.max()
    ms, lower, upper = predictor.predict_blocks(remaining, use_measured=False, interval=0.9)
    assert np.all(lower < ms) and np.all(ms < upper)
    width = uncertainty_ms(predictor, remaining)
    assert np.allclose(width, upper - lower) and max(width[remaining.index(b)] for b in batch) == width.max()


@pytest.mark.slow
def test_profile_adaptive_on_the_host_with_the_profiling_loop(tmp_path) -> None:
    """End to end: the real profiling loop (fresh worker processes, store) under a budget."""
    from lutnas.device_agents.base import RunSettings
    from lutnas.device_agents.factory import open_agent
    from lutnas.profiler.adaptive_run import completed_table, profile_adaptive
    from lutnas.profiler.plan import make_plan
    from lutnas.tables.store import MeasurementStore
    from lutnas.tables.table import build_table

    space = SearchSpace.load("tiny")
    settings = RunSettings(runtime="onnxruntime", warmup=2, runs=5)
    with open_agent("local") as agent, MeasurementStore(tmp_path / "m.sqlite") as store:
        # A budget smaller than the first covering sample costs: the run must stop right after it,
        # whatever the speed of the host (0.4 min measured all 50 blocks on a quiet machine).
        result = profile_adaptive(agent, space, settings, store, budget_minutes=0.02,
                                  error_bound=0.001, trials=2, resolutions=[32])
        table = build_table(store, space="tiny")
    plan = make_plan(space, [32]).blocks
    assert 0 < len(result.measured) < len(plan)
    assert set(result.measured) == set(table.keys)
    full = completed_table(table, result, plan)
    assert len(full) == len(plan)
    assert (full.frame["source"] == "measured").sum() == len(result.measured)
    assert (full.frame["source"] == "predicted:learned").sum() == len(plan) - len(result.measured)
    assert full.frame["median_ms"].gt(0).all()
