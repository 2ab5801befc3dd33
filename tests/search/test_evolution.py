from __future__ import annotations

import random
from pathlib import Path

import pytest

from lutnas.errors import SearchError
from lutnas.predictors.lut import LutPredictor
from lutnas.search.constraints import Constraints, CostModel, achievable_range
from lutnas.search.evolution import EvolutionSettings, evolve, random_search
from lutnas.search.objectives import ProxyObjective
from lutnas.space import SearchSpace

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
