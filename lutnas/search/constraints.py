"""Hard constraints of a search: the latency window, model size and compute; repair and pools.

A candidate outside `[target - window, target]` (on the predicted latency), above `max_params` or
above `max_mmacs` is never scored: it is repaired (a short greedy walk of single-choice changes
towards the window) or replaced by a config drawn from the per-window pools (feasible configs
bucketed by predicted latency across the window, so refills and the starting population cover the
whole window instead of piling up where random sampling lands most often).

Costs are priced in batches: configs are encoded once (the LUT predictor's integer encoding) and
MACs and parameters come from per-stage grids of the same encoding, so a batch of thousands of
candidates costs milliseconds rather than a `blocks_of` walk each.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lutnas.errors import SearchError
from lutnas.space import SearchSpace, SubnetConfig, block_complexity

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)\s*$")


class LatencyModel(Protocol):
    """What search needs from a predictor (LUT, learned, analytic share this face)."""

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray: ...


def parse_count(text: str | float | int, what: str = "--max-params") -> float:
    """`5M` -> 5e6, `300k` -> 3e5, `1.5G`, `300` -> 300; anything else is one-line bad input."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _COUNT.match(str(text))
        if not match:
            raise SearchError(f"{what} {text!r} is not a number like 5M, 300k or 1.5G")
        value = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if not value > 0:
        raise SearchError(f"{what} must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class Constraints:
    target_ms: float
    window_ms: float = 0.5
    max_params: float | None = None  # parameters (count)
    max_mmacs: float | None = None  # MMACs (millions of multiply-accumulates)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_ms) and self.target_ms > 0):
            raise SearchError(f"--target-ms must be a positive number of milliseconds, "
                              f"got {self.target_ms}")
        if not (math.isfinite(self.window_ms) and self.window_ms > 0):
            raise SearchError(f"--window-ms must be positive, got {self.window_ms}")

    @property
    def low_ms(self) -> float:
        return max(0.0, self.target_ms - self.window_ms)

    @property
    def high_ms(self) -> float:
        return self.target_ms

    def describe(self) -> str:
        parts = [f"latency in [{self.low_ms:.3f}, {self.high_ms:.3f}] ms"]
        if self.max_params is not None:
            parts.append(f"params <= {self.max_params / 1e6:.3g}M")
        if self.max_mmacs is not None:
            parts.append(f"MMACs <= {self.max_mmacs:.4g}")
        return ", ".join(parts)


@dataclass
class Costs:
    """Per-candidate predicted latency, parameters and MMACs (aligned arrays)."""

    latency_ms: np.ndarray
    params: np.ndarray
    mmacs: np.ndarray

    def __len__(self) -> int:
        return len(self.latency_ms)


class CostModel:
    """Prices configs (latency from the predictor; params and MMACs from the space) in batches.

    Results are memoised per config: evolution revisits the same configs often, and a repair walk
    prices each step's neighbours in one batch.
    """

    def __init__(self, space: SearchSpace, latency: LatencyModel) -> None:
        from lutnas.predictors.lut import SpaceIndex  # the one integer encoding of a space's configs

        self.space = space
        self.latency = latency
        blocks = space.unique_blocks()
        cost = {b.key: block_complexity(b) for b in blocks}
        self._macs = SpaceIndex(space, {k: float(c.macs) for k, c in cost.items()}, set())
        self._params = SpaceIndex(space, {k: float(c.params) for k, c in cost.items()}, set())
        self._memo: dict[SubnetConfig, tuple[float, float, float]] = {}
        self.latency_calls = 0
        self.configs_priced = 0

    def costs(self, configs: Sequence[SubnetConfig]) -> Costs:
        todo = [c for c in dict.fromkeys(configs) if c not in self._memo]
        if todo:
            encoded = self._macs.encode(todo)
            macs, _ = self._macs.sum_encoded(encoded)
            params, _ = self._params.sum_encoded(encoded)
            ms = np.asarray(self.latency.predict(todo), dtype=float)
            if ms.shape != (len(todo),):
                raise SearchError(f"the latency predictor returned shape {ms.shape} for "
                                  f"{len(todo)} configs")
            self.latency_calls += 1
            self.configs_priced += len(todo)
            for c, m, p, f in zip(todo, ms, params, macs):
                self._memo[c] = (float(m), float(p), float(f) / 1e6)
        rows = np.array([self._memo[c] for c in configs], dtype=float).reshape(len(configs), 3)
        return Costs(rows[:, 0], rows[:, 1], rows[:, 2])


def feasible_mask(costs: Costs, constraints: Constraints) -> np.ndarray:
    ok = (costs.latency_ms >= constraints.low_ms) & (costs.latency_ms <= constraints.high_ms)
    if constraints.max_params is not None:
        ok &= costs.params <= constraints.max_params
    if constraints.max_mmacs is not None:
        ok &= costs.mmacs <= constraints.max_mmacs
    return ok


def violation(costs: Costs, constraints: Constraints) -> np.ndarray:
    """How far outside the constraints each candidate is (0 = feasible), in relative units.

    Repair descends this; latency is measured in windows, size and compute in fractions of their cap.
    """
    ms = costs.latency_ms
    out = (np.maximum(0.0, constraints.low_ms - ms) + np.maximum(0.0, ms - constraints.high_ms))
    total = out / constraints.window_ms
    if constraints.max_params is not None:
        total = total + np.maximum(0.0, costs.params / constraints.max_params - 1.0)
    if constraints.max_mmacs is not None:
        total = total + np.maximum(0.0, costs.mmacs / constraints.max_mmacs - 1.0)
    return total


# ---------------------------------------------------------------------- achievable range

@dataclass(frozen=True)
class LatencyRange:
    fastest_ms: float
    slowest_ms: float
    sampled: int


def achievable_range(space: SearchSpace, cost_model: CostModel, rng: random.Random,
                     samples: int = 2000) -> LatencyRange:
    """Predicted latency of the smallest and largest subnets, widened by a random sample.

    The all-minimum config is the fastest for a sum of monotone block latencies, but a measured table
    is noisy and a learned predictor need not be monotone, so a sample guards the estimate.
    """
    configs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(samples)]
    ms = cost_model.costs(configs).latency_ms
    return LatencyRange(float(np.min(ms)), float(np.max(ms)), len(configs))


def check_target(constraints: Constraints, latency_range: LatencyRange, where: str) -> None:
    """A target outside what the space can reach on this table is bad input naming the range."""
    lo, hi = latency_range.fastest_ms, latency_range.slowest_ms
    achievable = f"achievable range on {where} is {lo:.3f}..{hi:.3f} ms"
    if constraints.target_ms < lo:
        raise SearchError(f"--target-ms {constraints.target_ms:g} is below the fastest subnet "
                          f"({lo:.3f} ms); {achievable}")
    if constraints.target_ms > hi:
        raise SearchError(f"--target-ms {constraints.target_ms:g} is above the slowest subnet "
                          f"({hi:.3f} ms), so the latency cap constrains nothing; {achievable}")


# ---------------------------------------------------------------------- repair and pools

def neighbours(space: SearchSpace, config: SubnetConfig) -> list[SubnetConfig]:
    """Every config that differs from `config` in exactly one choice (resolution, stem or stage)."""
    out: list[SubnetConfig] = []
    d = config.to_dict()
    for value in space.resolutions:
        if value != config.resolution:
            out.append(_with(d, ("resolution",), value))
    for name, allowed in space.stem.choices().items():
        for value in allowed:
            if value != getattr(config.stem, name):
                out.append(_with(d, ("stem", name), value))
    for index, (stage, choice) in enumerate(zip(space.stages, config.stages)):
        for name, allowed in stage.choices().items():
            for value in allowed:
                if value != getattr(choice, name):
                    out.append(_with(d, ("stages", index, name), value))
    if space.monotone_widths:  # a width change may make the widths shrink: not a subnet then
        out = [c for c in out if not space.shrinking_widths(c)]
    return out


def _with(data: dict[str, Any], path: tuple[Any, ...], value: int) -> SubnetConfig:
    copy = {"resolution": data["resolution"], "stem": dict(data["stem"]),
            "stages": [dict(s) for s in data["stages"]]}
    target: Any = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return SubnetConfig.from_dict(copy)


def repair(space: SearchSpace, config: SubnetConfig, cost_model: CostModel, constraints: Constraints,
           rng: random.Random, max_steps: int = 12, sample: int = 24) -> SubnetConfig | None:
    """Walk single-choice changes downhill on `violation` until feasible; None when stuck.

    Each step prices a random subset of the neighbours in one batch and takes the best; ties are
    broken by the seeded rng, so a repair is deterministic given the seed.
    """
    current = config
    current_v = float(violation(cost_model.costs([current]), constraints)[0])
    for _ in range(max_steps):
        if current_v == 0.0:
            return current
        options = neighbours(space, current)
        if len(options) > sample:
            options = rng.sample(options, sample)
        values = violation(cost_model.costs(options), constraints)
        best = float(values.min())
        if best >= current_v:
            return None
        choices = [o for o, v in zip(options, values) if v == best]
        current, current_v = rng.choice(choices), best
    return current if current_v == 0.0 else None


class WindowPools:
    """Feasible configs bucketed by predicted latency across the window (`bins` equal slices)."""

    def __init__(self, constraints: Constraints, bins: int = 8) -> None:
        self.constraints = constraints
        self.bins = bins
        self.pools: list[list[SubnetConfig]] = [[] for _ in range(bins)]
        self._seen: set[SubnetConfig] = set()

    def bin_of(self, latency_ms: float) -> int:
        c = self.constraints
        span = max(c.high_ms - c.low_ms, 1e-12)
        return min(self.bins - 1, max(0, int((latency_ms - c.low_ms) / span * self.bins)))

    def add(self, config: SubnetConfig, latency_ms: float) -> None:
        if config not in self._seen:
            self._seen.add(config)
            self.pools[self.bin_of(latency_ms)].append(config)

    def __len__(self) -> int:
        return len(self._seen)

    def filled_bins(self) -> int:
        return sum(1 for p in self.pools if p)

    def draw(self, rng: random.Random, n: int) -> list[SubnetConfig]:
        """`n` configs spread round-robin over the non-empty bins (distinct while the pools last)."""
        bins = [list(p) for p in self.pools if p]
        if not bins:
            raise SearchError(f"no subnet satisfies {self.constraints.describe()}; widen "
                              f"--window-ms or relax --max-params/--max-mmacs")
        for pool in bins:
            rng.shuffle(pool)
        out: list[SubnetConfig] = []
        cursor = [0] * len(bins)
        order = list(range(len(bins)))
        while len(out) < n:
            rng.shuffle(order)
            progressed = False
            for b in order:
                if len(out) >= n:
                    break
                if cursor[b] < len(bins[b]):
                    out.append(bins[b][cursor[b]])
                    cursor[b] += 1
                    progressed = True
            if not progressed:  # every pool exhausted: repeat, still spread over the bins
                cursor = [0] * len(bins)
        return out


def sample_scaled(space: SearchSpace, rng: random.Random, size: float, spread: float = 0.7) -> SubnetConfig:
    """A random config whose choices sit near the `size` quantile (0 smallest, 1 largest) of each.

    Every choice of a space is ordered so that a larger value costs more (resolution, depth, width,
    expansion, kernel, MLP ratio, V scale), so `size` moves a sample along the latency range; uniform
    sampling instead piles up in the middle (a sum of many independent choices) and almost never
    reaches a window near either end of a large space.
    """
    def pick(values: tuple[int, ...]) -> int:
        position = size * (len(values) - 1) + rng.gauss(0.0, spread)
        return values[min(len(values) - 1, max(0, int(round(position))))]

    data = {"resolution": pick(space.resolutions),
            "stem": {k: pick(v) for k, v in space.stem.choices().items()},
            "stages": [{k: pick(v) for k, v in stage.choices().items()} for stage in space.stages]}
    # Widths picked one by one may shrink; a monotone space gets them repaired (a no-op otherwise).
    return space.repair_widths(SubnetConfig.from_dict(data))


def build_pools(space: SearchSpace, cost_model: CostModel, constraints: Constraints,
                rng: random.Random, want: int, bins: int = 8, batch: int = 2048,
                max_batches: int = 8, repair_budget: int = 64) -> WindowPools:
    """Fill per-window pools: uniform samples, then samples aimed at the window, then repairs.

    The first batch mixes uniform samples with `sample_scaled` ones over the whole size range; the
    sizes whose samples landed in (or nearest to) the window steer the next batches, so a window at
    the edge of the latency range fills as fast as one in the middle. Repairing the nearest misses
    is the last resort (it prices a batch of neighbours per step).
    """
    pools = WindowPools(constraints, bins)
    misses: list[tuple[float, SubnetConfig]] = []
    sizes = [rng.random() for _ in range(batch // 2)]
    for round_index in range(max_batches):
        if round_index == 0:
            configs = [space.sample(rng) for _ in range(batch - len(sizes))]
        else:
            configs = []
        configs += [sample_scaled(space, rng, u) for u in sizes]
        costs = cost_model.costs(configs)
        ok = feasible_mask(costs, constraints)
        for c, m, good in zip(configs, costs.latency_ms, ok):
            if good:
                pools.add(c, float(m))
        values = violation(costs, constraints)
        if len(pools) >= want and pools.filled_bins() == bins or len(pools) >= 4 * want:
            return pools
        misses += [(float(values[i]), configs[i]) for i in np.flatnonzero(~ok)]
        # Aim the next batch: sizes of this batch's scaled samples, weighted towards small violation.
        scaled = values[len(configs) - len(sizes):]
        order = np.argsort(scaled, kind="stable")[:max(8, len(sizes) // 8)]
        centres = [sizes[i] for i in order]
        sizes = [min(1.0, max(0.0, rng.choice(centres) + rng.gauss(0.0, 0.05)))
                 for _ in range(batch)]
    misses.sort(key=lambda item: item[0])
    for _, config in misses[:repair_budget]:
        fixed = repair(space, config, cost_model, constraints, rng)
        if fixed is not None:
            pools.add(fixed, float(cost_model.costs([fixed]).latency_ms[0]))
        if len(pools) >= want and pools.filled_bins() == bins:
            break
    return pools
