"""Evolutionary search over `SubnetConfig`s under a hard latency window (Once-for-All's loop).

Each generation keeps the best `parents`, then adds `mutations` children (the space's per-choice
mutation of a random parent) and `crossovers` children (uniform crossover of two parents). A child
outside the constraints is priced in the same batch as its siblings, then repaired towards the
window or replaced from the per-window pools, so nothing infeasible is ever scored and every
scored candidate respects the window. All randomness flows from one `random.Random(seed)`, and
every collection the loop iterates is ordered, so a seed reproduces a search exactly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lutnas.errors import SearchError
from lutnas.search.constraints import (
    Constraints,
    CostModel,
    LatencyRange,
    WindowPools,
    achievable_range,
    add_repaired,
    build_pools,
    check_target,
    feasible_mask,
)
from lutnas.search.objectives import Objective
from lutnas.space import SearchSpace, SubnetConfig


@dataclass(frozen=True)
class EvolutionSettings:
    """Population and generation counts of a search.

    `parents`, `mutations` and `crossovers` left as None follow the population (Once-for-All's
    proportions: half the population are parents, the other half children, split evenly between
    mutations and crossovers; 512 -> 256, 128, 128), so lowering `--population` alone works.
    Raises SearchError naming the flag for inconsistent values.
    """

    population: int = 512
    generations: int = 40
    parents: int | None = None
    mutations: int | None = None
    crossovers: int | None = None
    mutate_prob: float = 0.2
    seed: int = 0
    pool_bins: int = 8

    def __post_init__(self) -> None:
        if self.population < 1:
            raise SearchError(f"--population must be at least 1, got {self.population}")
        parents = self.parents if self.parents is not None else max(1, self.population // 2)
        children = max(0, self.population - parents)
        mutations = self.mutations
        if mutations is None:  # without room for crossovers, every child is a mutation
            mutations = children - children // 2 if parents >= 2 else max(1, children)
        crossovers = self.crossovers
        if crossovers is None:
            crossovers = max(0, children - mutations) if parents >= 2 else 0
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "mutations", mutations)
        object.__setattr__(self, "crossovers", crossovers)
        self._check()

    def _check(self) -> None:
        assert self.parents is not None and self.mutations is not None and self.crossovers is not None
        for name in ("generations", "parents"):
            if getattr(self, name) < 1:
                raise SearchError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.mutations < 0 or self.crossovers < 0:
            raise SearchError("--mutations and --crossovers must be 0 or more")
        if self.parents > self.population:
            raise SearchError(f"--parents {self.parents} exceeds --population {self.population}")
        if self.crossovers and self.parents < 2:
            raise SearchError("crossover needs --parents 2 or more (or --crossovers 0)")
        if not 0.0 <= self.mutate_prob <= 1.0:
            raise SearchError(f"--mutate-prob must be in [0, 1], got {self.mutate_prob}")


@dataclass(frozen=True)
class Candidate:
    config: SubnetConfig
    latency_ms: float
    params: float
    mmacs: float
    score: float
    generation: int

    def row(self) -> dict[str, Any]:
        return {"generation": self.generation, "latency_ms": self.latency_ms,
                "params": int(self.params), "mmacs": self.mmacs, "score": self.score,
                "config": self.config.to_json()}


def rank_key(cand: Candidate) -> tuple[float, float, str]:
    """Best first: higher score, then lower latency, then the config's JSON.

    Held-out top-1 counts correct images of a small split (builtin digits: 360, so 99.44% is 358 of
    them), and many subnets tie exactly; among those the faster one wins, which keeps the winner on
    the Pareto front. The config breaks the last ties, so the winner does not depend on the order
    candidates were scored in.
    """
    return (-cand.score, cand.latency_ms, cand.config.to_json())


@dataclass
class SearchResult:
    best: Candidate
    candidates: list[Candidate]  # every scored candidate, in the order first scored
    best_per_generation: list[float]
    constraints: Constraints
    objective_name: str
    objective_label: str
    is_proxy: bool
    settings: EvolutionSettings
    latency_range: LatencyRange | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluations(self) -> int:
        return len(self.candidates)

    def pareto_front(self) -> list[Candidate]:
        """The non-dominated candidates, by latency: a candidate is dominated by one at most as
        slow with a score at least as high, better in one of the two. Of candidates equal in both,
        the one `rank_key` puts first stands for them, so `best` is always the front's last point."""
        front: list[Candidate] = []
        best_score = -np.inf
        for cand in sorted(self.candidates, key=lambda c: (c.latency_ms, *rank_key(c))):
            if cand.score > best_score:
                front.append(cand)
                best_score = cand.score
        return front


Progress = Callable[[int, int, Candidate], None]


class _Scorer:
    """Scores feasible configs once each and keeps every result as a Candidate."""

    def __init__(self, cost_model: CostModel, objective: Objective, constraints: Constraints) -> None:
        self.cost_model, self.objective, self.constraints = cost_model, objective, constraints
        self.scored: dict[SubnetConfig, Candidate] = {}

    def score(self, configs: Sequence[SubnetConfig], generation: int) -> list[Candidate]:
        new = [c for c in dict.fromkeys(configs) if c not in self.scored]
        if new:
            costs = self.cost_model.costs(new)
            if not feasible_mask(costs, self.constraints).all():
                raise AssertionError("an infeasible config reached scoring")  # a bug, not input
            values = np.asarray(self.objective.score(new, costs), dtype=float)
            for i, config in enumerate(new):
                self.scored[config] = Candidate(config, float(costs.latency_ms[i]),
                                                float(costs.params[i]), float(costs.mmacs[i]),
                                                float(values[i]), generation)
        return [self.scored[c] for c in configs]


class _Legaliser:
    """Makes `n` feasible children: fresh tries first, then repair, then the pools; counts which.

    Like Once-for-All, a child that breaks the constraints is first replaced by another child of
    the same kind (all tries of a round priced in one batch); only the last round's misses are
    repaired (a greedy walk, one batch per step) or, failing that, drawn from the pools.
    """

    def __init__(self, space: SearchSpace, cost_model: CostModel, constraints: Constraints,
                 pools: WindowPools, rng: random.Random, rounds: int = 2) -> None:
        # Two fresh rounds: misses are repaired together (one batch per step), so further rounds
        # cost more mutations and crossovers than they save (elasticvit at 40 ms on Pixel 1: 4
        # rounds 10.5 s, 2 rounds 8.2 s, 1 round 7.4 s under load, best MMACs within 0.3%).
        self.space, self.cost_model, self.constraints = space, cost_model, constraints
        self.pools, self.rng, self.rounds = pools, rng, rounds
        self.counts = {"children": 0, "retried": 0, "repaired": 0, "resampled": 0}

    def __call__(self, make_child: Callable[[], SubnetConfig], n: int) -> list[SubnetConfig]:
        out: list[SubnetConfig] = []
        misses: list[SubnetConfig] = []
        for round_index in range(self.rounds):
            need = n - len(out)
            if need <= 0:
                break
            tries = [make_child() for _ in range(need)]
            ok = feasible_mask(self.cost_model.costs(tries), self.constraints)
            out += [c for c, good in zip(tries, ok) if good]
            misses = [c for c, good in zip(tries, ok) if not good]
            if round_index:
                self.counts["retried"] += int(ok.sum())
        misses = misses[:n - len(out)]
        if misses:  # repaired together, one batch per step (constraints.repair_rows)
            rows = self.cost_model.codec.encode(misses)
            fixed = [c for c in add_repaired(self.pools, self.cost_model, rows, self.constraints,
                                             self.rng) if c is not None]
            self.counts["repaired"] += len(fixed)
            self.counts["resampled"] += len(misses) - len(fixed)
            out += fixed + (self.pools.draw(self.rng, len(misses) - len(fixed))
                            if len(fixed) < len(misses) else [])
        self.counts["children"] += len(out)
        return out


def prepare(space: SearchSpace, cost_model: CostModel, constraints: Constraints, rng: random.Random,
            want: int, bins: int = 8, where: str = "this table") -> tuple[LatencyRange, WindowPools]:
    """Check the target is reachable, then fill the per-window pools."""
    latency_range = achievable_range(space, cost_model, rng)
    check_target(constraints, latency_range, where)
    pools = build_pools(space, cost_model, constraints, rng, want, bins=bins)
    if len(pools) == 0:
        raise SearchError(f"no subnet found with {constraints.describe()} (achievable latency "
                          f"{latency_range.fastest_ms:.3f}..{latency_range.slowest_ms:.3f} ms); widen "
                          f"--window-ms or relax --max-params/--max-mmacs")
    return latency_range, pools


def evolve(space: SearchSpace, cost_model: CostModel, objective: Objective, constraints: Constraints,
           settings: EvolutionSettings, progress: Progress | None = None,
           where: str = "this table") -> SearchResult:
    started = time.perf_counter()
    rng = random.Random(settings.seed)
    latency_range, pools = prepare(space, cost_model, constraints, rng, settings.population,
                                   settings.pool_bins, where)
    prepared = time.perf_counter()
    scorer = _Scorer(cost_model, objective, constraints)
    legalise = _Legaliser(space, cost_model, constraints, pools, rng)
    population = list(dict.fromkeys(pools.draw(rng, settings.population)))
    history: list[float] = []
    best: Candidate | None = None
    for generation in range(settings.generations):
        ranked = sorted(scorer.score(population, generation), key=rank_key)
        parents = [c.config for c in ranked[:settings.parents]]
        if best is None or rank_key(ranked[0]) < rank_key(best):
            best = ranked[0]
        history.append(best.score)
        if progress is not None:
            progress(generation + 1, settings.generations, best)
        if generation == settings.generations - 1:
            break
        def mutant(parents: list[SubnetConfig] = parents) -> SubnetConfig:
            return space.mutate(rng.choice(parents), rng, settings.mutate_prob)

        def cross(parents: list[SubnetConfig] = parents) -> SubnetConfig:
            a, b = rng.sample(parents, 2)
            return space.crossover(a, b, rng)

        children = legalise(mutant, settings.mutations)
        if settings.crossovers:
            children += legalise(cross, settings.crossovers)
        population = list(dict.fromkeys(parents + children))
    assert best is not None
    stats = {"seconds": time.perf_counter() - started, "prepare_seconds": prepared - started,
             "pool_size": len(pools), "pool_bins_filled": pools.filled_bins(),
             "latency_batches": cost_model.latency_calls, "configs_priced": cost_model.configs_priced,
             **legalise.counts}
    return SearchResult(best, list(scorer.scored.values()), history, constraints, objective.name,
                        objective.label, objective.is_proxy, settings, latency_range, stats)


def random_search(space: SearchSpace, cost_model: CostModel, objective: Objective,
                  constraints: Constraints, evaluations: int, seed: int = 0,
                  batch: int = 2048, max_batches: int = 64) -> SearchResult:
    """Baseline: score `evaluations` distinct uniformly sampled feasible configs, keep the best.

    Pools fill in only when uniform sampling cannot find enough feasible configs (a window at the
    edge of the space), which then makes the baseline a pool sampler rather than pure rejection.
    """
    started = time.perf_counter()
    rng = random.Random(seed)
    found: dict[SubnetConfig, None] = {}
    for _ in range(max_batches):
        configs = [space.sample(rng) for _ in range(batch)]
        ok = feasible_mask(cost_model.costs(configs), constraints)
        for config, good in zip(configs, ok):
            if good and len(found) < evaluations:
                found.setdefault(config, None)
        if len(found) >= evaluations:
            break
    chosen = list(found)
    if len(chosen) < evaluations:
        pools = build_pools(space, cost_model, constraints, rng, evaluations)
        chosen = list(dict.fromkeys(chosen + pools.draw(rng, evaluations - len(chosen))))
    scorer = _Scorer(cost_model, objective, constraints)
    ranked = sorted(scorer.score(chosen, 0), key=rank_key)
    settings = EvolutionSettings(population=max(1, len(chosen)), generations=1, parents=1,
                                 mutations=0, crossovers=0, seed=seed)
    return SearchResult(ranked[0], list(scorer.scored.values()), [ranked[0].score], constraints,
                        objective.name, objective.label, objective.is_proxy, settings,
                        stats={"seconds": time.perf_counter() - started})


def result_summary(result: SearchResult) -> dict[str, Any]:
    """The JSON-ready facts of a search (best.json's body without the export paths)."""
    best = result.best
    value_key = "proxy" if result.is_proxy else "accuracy_top1"
    c = result.constraints
    return {
        "config": best.config.to_dict(),
        "predicted_ms": best.latency_ms,
        value_key: best.score,
        "objective": {"name": result.objective_name, "label": result.objective_label,
                      "is_proxy": result.is_proxy},
        "mmacs": best.mmacs,
        "params": int(best.params),
        "constraints": {"target_ms": c.target_ms, "window_ms": c.window_ms,
                        "low_ms": c.low_ms, "high_ms": c.high_ms, "max_params": c.max_params,
                        "max_mmacs": c.max_mmacs},
        "achievable_ms": ([result.latency_range.fastest_ms, result.latency_range.slowest_ms]
                          if result.latency_range else None),
        "search": asdict(result.settings) | {"evaluations": result.evaluations},
        "stats": result.stats,
    }
