from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from lutnas.errors import SearchError
from lutnas.predictors.lut import LutPredictor
from lutnas.search.constraints import Constraints, CostModel, Costs, achievable_range
from lutnas.search.evolution import Candidate, EvolutionSettings, SearchResult, evolve, random_search
from lutnas.search.objectives import ProxyObjective
from lutnas.space import SearchSpace, SubnetConfig

SMALL = EvolutionSettings(population=48, generations=6, parents=24, mutations=12, crossovers=12,
                          mutate_prob=0.3, seed=11)


@pytest.fixture(scope="module")
def cost_model(tiny_space: SearchSpace, tiny_table: Path) -> CostModel:
    return CostModel(tiny_space, LutPredictor.load(tiny_table, tiny_space))


def _target(space: SearchSpace, cost_model: CostModel, fraction: float) -> tuple[float, float]:
    span = achievable_range(space, cost_model, random.Random(0))
    width = span.slowest_ms - span.fastest_ms
    return span.fastest_ms + fraction * width, 0.08 * width


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_every_scored_candidate_respects_the_window(tiny_space: SearchSpace, cost_model: CostModel,
                                                    fraction: float) -> None:
    target, window = _target(tiny_space, cost_model, fraction)
    result = evolve(tiny_space, cost_model, ProxyObjective(), Constraints(target, window), SMALL)
    assert result.evaluations > SMALL.population // 2
    for cand in result.candidates:
        assert target - window <= cand.latency_ms <= target
    # Predicted latencies are recomputed independently of the search's memo.
    fresh = LutPredictor(tiny_space).fit(cost_model.latency.table_).predict(
        [c.config for c in result.candidates])
    assert ((fresh >= target - window - 1e-9) & (fresh <= target + 1e-9)).all()
    assert result.best.score == max(c.score for c in result.candidates)


def test_same_seed_same_search_other_seed_differs(tiny_space: SearchSpace, tiny_table: Path) -> None:
    def run(seed: int) -> list[tuple[str, float]]:
        model = CostModel(tiny_space, LutPredictor.load(tiny_table, tiny_space))  # no shared memo
        target, window = _target(tiny_space, model, 0.5)
        settings = EvolutionSettings(**{**SMALL.__dict__, "seed": seed})
        result = evolve(tiny_space, model, ProxyObjective("params"), Constraints(target, window),
                        settings)
        return [(c.config.to_json(), c.score) for c in result.candidates]

    first = run(3)
    assert run(3) == first
    assert run(4) != first


def test_evolution_improves_over_its_start(tiny_space: SearchSpace, cost_model: CostModel) -> None:
    target, window = _target(tiny_space, cost_model, 0.6)
    result = evolve(tiny_space, cost_model, ProxyObjective(), Constraints(target, window), SMALL)
    assert result.best_per_generation == sorted(result.best_per_generation)
    baseline = random_search(tiny_space, cost_model, ProxyObjective(), Constraints(target, window),
                             result.evaluations, seed=11)
    assert baseline.evaluations == result.evaluations
    for cand in baseline.candidates:
        assert target - window <= cand.latency_ms <= target


def test_impossible_caps_are_one_clear_error(tiny_space: SearchSpace, cost_model: CostModel) -> None:
    target, window = _target(tiny_space, cost_model, 0.9)
    with pytest.raises(SearchError, match="no subnet"):
        evolve(tiny_space, cost_model, ProxyObjective(),
               Constraints(target, window, max_params=1000.0), SMALL)


def test_settings_are_checked() -> None:
    with pytest.raises(SearchError, match="--parents"):
        EvolutionSettings(population=8, parents=16)
    with pytest.raises(SearchError, match="mutate-prob"):
        EvolutionSettings(mutate_prob=1.5)


def test_counts_follow_the_population_unless_given() -> None:
    assert (EvolutionSettings().parents, EvolutionSettings().mutations,
            EvolutionSettings().crossovers) == (256, 128, 128)
    small = EvolutionSettings(population=32)
    assert (small.parents, small.mutations, small.crossovers) == (16, 8, 8)
    assert EvolutionSettings(population=3).crossovers == 0  # one parent cannot cross over
    given = EvolutionSettings(population=100, parents=60)
    assert (given.mutations, given.crossovers) == (20, 20)
    assert EvolutionSettings(population=8, mutations=5).crossovers == 0


class TiedObjective:
    """MMACs rounded down to `step`: many subnets share a score, as held-out top-1 counts do."""

    name = "tied"
    label = "tied proxy"
    is_proxy = True

    def __init__(self, step: float) -> None:
        self.step = step

    def score(self, configs: list[SubnetConfig], costs: Costs) -> np.ndarray:
        return np.floor(np.asarray(costs.mmacs, dtype=float) / self.step)


def _assert_winner_is_fastest_of_the_best(result: SearchResult) -> None:
    best = result.best
    top = max(c.score for c in result.candidates)
    assert best.score == top
    assert best.latency_ms == min(c.latency_ms for c in result.candidates if c.score == top)
    # Nothing scored is as good and faster, and the winner closes the front the plot draws.
    assert not [c for c in result.candidates if c.score >= best.score and c.latency_ms < best.latency_ms]
    assert result.pareto_front()[-1] == best


@pytest.mark.parametrize("step", [1e9, 5.0])  # every candidate tied; a few score levels
def test_ties_on_score_go_to_the_faster_candidate(tiny_space: SearchSpace, cost_model: CostModel,
                                                  step: float) -> None:
    target, window = _target(tiny_space, cost_model, 0.5)
    constraints = Constraints(target, window)
    result = evolve(tiny_space, cost_model, TiedObjective(step), constraints, SMALL)
    if step > 1e6:
        assert len({c.score for c in result.candidates}) == 1
    else:
        assert len({c.score for c in result.candidates}) < result.evaluations // 4
    _assert_winner_is_fastest_of_the_best(result)
    baseline = random_search(tiny_space, cost_model, TiedObjective(step), constraints,
                             result.evaluations, seed=11)
    _assert_winner_is_fastest_of_the_best(baseline)


def _result_of(points: list[tuple[float, float]], configs: list[SubnetConfig]) -> SearchResult:
    candidates = [Candidate(config, ms, 1e6, 10.0, score, 0)
                  for config, (ms, score) in zip(configs, points)]
    return SearchResult(candidates[0], candidates, [], Constraints(1.0, 1.0), "top1", "top-1 (%)",
                        False, SMALL)


def test_pareto_front_treats_equal_scores_and_latencies_as_dominated(tiny_space: SearchSpace) -> None:
    rng = random.Random(0)
    configs = list(dict.fromkeys(tiny_space.sample(rng) for _ in range(40)))[:7]
    points = [(0.3258, 99.44), (0.3176, 99.44), (0.3176, 98.0), (0.2500, 98.0), (0.2500, 98.0),
              (0.3300, 99.0), (0.2000, 90.0)]
    front = _result_of(points, configs).pareto_front()
    assert [(c.latency_ms, c.score) for c in front] == [(0.2, 90.0), (0.25, 98.0), (0.3176, 99.44)]
    # Of two candidates equal in both, the same one stands on the front whatever the order.
    tied = {configs[3], configs[4]}
    chosen = {c.config for c in front} & tied
    reordered = _result_of(points[::-1], configs[::-1]).pareto_front()
    assert {c.config for c in reordered} & tied == chosen
    assert chosen == {min(tied, key=SubnetConfig.to_json)}
