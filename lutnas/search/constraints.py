"""Hard constraints of a search: the latency window, model size and compute; repair and pools.

A candidate outside `[target - window, target]` (on the predicted latency), above `max_params` or
above `max_mmacs` is never scored: it is repaired (a short greedy walk of single-choice changes
towards the window) or replaced by a config drawn from the per-window pools (feasible configs
bucketed by predicted latency across the window, so refills and the starting population cover the
whole window instead of piling up where random sampling lands most often).

Costs are priced in batches: configs are encoded once (the LUT predictor's integer encoding, see
`Codec`) and MACs, parameters and (for the LUT) latency come from per-stage grids of the same
encoding, so a batch of thousands of candidates costs milliseconds rather than a `blocks_of` walk
each. Repair works on encoded rows throughout: a step prices every sampled neighbour of every
config being repaired in one vectorised batch, and only the repaired rows become configs again
(profiled: building and pricing neighbour configs one by one was 80% of a default search).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

import lutnas.space.widths as W
from lutnas.errors import PredictorError, SearchError
from lutnas.space import (
    STEM_FIELDS,
    SearchSpace,
    StageChoice,
    StemChoice,
    SubnetConfig,
    block_complexity,
)

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


class Codec:
    """Configs <-> integer rows: column j holds the position of a choice among its allowed values.

    Columns are the resolution, the stem's fields (`STEM_FIELDS`), then each stage's fields in its
    type's order: the LUT index's encoding, so a row indexes the latency and cost grids directly
    (`CostModel` checks the two agree). Rows let repair enumerate and price neighbours in numpy.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.values: list[tuple[int, ...]] = [space.resolutions]
        self.values += [space.stem.choices()[f] for f in STEM_FIELDS]
        self.stage_cols: list[dict[str, int]] = []
        for stage in space.stages:
            self.stage_cols.append({f: len(self.values) + i for i, f in enumerate(stage.fields)})
            self.values += [stage.choices()[f] for f in stage.fields]
        self._position = [{v: i for i, v in enumerate(values)} for values in self.values]
        self.sizes = np.array([len(v) for v in self.values], dtype=np.intp)
        width_cols = [1 + STEM_FIELDS.index("width")] + [cols["width"] for cols in self.stage_cols]
        self.width_cols = np.array(width_cols, dtype=np.intp)
        self._width_values = [np.asarray(self.values[c]) for c in width_cols]

    @property
    def columns(self) -> int:
        return len(self.values)

    def encode(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        """(n, columns) positions; ConfigError (naming the stage and field) for a config outside."""
        pos = self._position
        rows = []
        for config in configs:
            try:
                row = [pos[0][config.resolution]] + [pos[1 + i][getattr(config.stem, f)]
                                                     for i, f in enumerate(STEM_FIELDS)]
                for cols, choice in zip(self.stage_cols, config.stages, strict=True):
                    row += [pos[c][getattr(choice, f)] for f, c in cols.items()]
            except (KeyError, ValueError):
                self.space.validate(config)  # raises naming stage, field and allowed values
                raise SearchError(f"config {config.to_json()} is outside space "
                                  f"{self.space.name!r}") from None
            rows.append(row)
        return np.asarray(rows, dtype=np.intp).reshape(len(rows), self.columns)

    def decode(self, rows: np.ndarray) -> list[SubnetConfig]:
        """The configs of encoded rows (inverse of `encode`)."""
        out = []
        values = self.values
        for row in np.asarray(rows).tolist():
            stem = StemChoice(**{f: values[1 + i][row[1 + i]] for i, f in enumerate(STEM_FIELDS)})
            stages = tuple(StageChoice(**{f: values[c][row[c]] for f, c in cols.items()})
                           for cols in self.stage_cols)
            out.append(SubnetConfig(values[0][row[0]], stem, stages))
        return out

    def shrinking(self, rows: np.ndarray) -> np.ndarray:
        """Per row, whether its widths shrink somewhere (always False unless the space has
        `monotone_widths`): `SearchSpace.shrinking_widths` on encoded rows."""
        rows = np.asarray(rows)
        if not self.space.monotone_widths:
            return np.zeros(rows.shape[:-1], dtype=bool)
        widths = np.stack([v[rows[..., c]] for v, c in zip(self._width_values, self.width_cols)],
                          axis=-1)
        return (np.diff(widths, axis=-1) < 0).any(axis=-1)

    def neighbours(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every single-choice change of each row: (n, k, columns) rows and an (n, k) mask of the
        real ones (a different value, widths still non-decreasing in a monotone space). k is the
        same for every row: one candidate per (column, value), the row's own values masked."""
        rows = np.asarray(rows, dtype=np.intp)
        column = np.repeat(np.arange(self.columns), self.sizes)
        value = np.concatenate([np.arange(n) for n in self.sizes])
        out = np.repeat(rows[:, None, :], len(column), axis=1)
        out[:, np.arange(len(column)), column] = value
        real = rows[:, column] != value[None, :]
        return out, real & ~self.shrinking(out)


class CostModel:
    """Prices configs (latency from the predictor; params and MMACs from the space) in batches.

    Results are memoised per config: evolution revisits the same configs often. Encoded rows are
    priced without building configs when the latency model takes the same encoding (the LUT
    predictor's `predict_encoded`); any other model gets the decoded configs.
    """

    def __init__(self, space: SearchSpace, latency: LatencyModel) -> None:
        from lutnas.predictors.lut import SpaceIndex  # the one integer encoding of a space's configs

        self.space = space
        self.latency = latency
        self.codec = Codec(space)
        blocks = space.unique_blocks()
        cost = {b.key: block_complexity(b) for b in blocks}
        self._macs = SpaceIndex(space, {k: float(c.macs) for k, c in cost.items()}, set())
        self._params = SpaceIndex(space, {k: float(c.params) for k, c in cost.items()}, set())
        probe = [space.smallest(), space.largest()]
        if not np.array_equal(self.codec.encode(probe), self._macs.encode(probe)):
            raise AssertionError("search's Codec and the LUT index encode configs differently")
        self._encoded_latency = _encoded_latency(space, latency, probe, self.codec)
        self._memo: dict[SubnetConfig, tuple[float, float, float]] = {}
        self.latency_calls = 0
        self.configs_priced = 0

    def costs(self, configs: Sequence[SubnetConfig]) -> Costs:
        todo = [c for c in dict.fromkeys(configs) if c not in self._memo]
        if todo:
            priced = self.costs_of_rows(self.codec.encode(todo), todo)
            for c, m, p, f in zip(todo, priced.latency_ms, priced.params, priced.mmacs):
                self._memo[c] = (float(m), float(p), float(f))
        rows = np.array([self._memo[c] for c in configs], dtype=float).reshape(len(configs), 3)
        return Costs(rows[:, 0], rows[:, 1], rows[:, 2])

    def costs_of_rows(self, rows: np.ndarray, configs: Sequence[SubnetConfig] | None = None) -> Costs:
        """Costs of encoded rows (not memoised); `configs`: the same configs, when already built."""
        macs, _ = self._macs.sum_encoded(rows)
        params, _ = self._params.sum_encoded(rows)
        ms = None
        if self._encoded_latency is not None:
            try:
                ms = np.asarray(self._encoded_latency(rows), dtype=float)
            except PredictorError:  # a block the table lacks: `predict` handles or names it
                ms = None
        if ms is None:
            configs = list(configs) if configs is not None else self.codec.decode(rows)
            ms = np.asarray(self.latency.predict(configs), dtype=float)
        if ms.shape != (len(rows),):
            raise SearchError(f"the latency predictor returned shape {ms.shape} for "
                              f"{len(rows)} configs")
        self.latency_calls += 1
        self.configs_priced += len(rows)
        return Costs(ms, params, macs / 1e6)


def _encoded_latency(space: SearchSpace, latency: LatencyModel, probe: list[SubnetConfig],
                     codec: Codec) -> Any:
    """The model's `predict_encoded` when it takes `codec`'s rows and agrees with `predict` on a
    probe; else None (the model is given configs)."""
    method = getattr(latency, "predict_encoded", None)
    if method is None or getattr(latency, "space_", None) != space:
        return None
    try:
        agree = np.allclose(method(codec.encode(probe)), latency.predict(probe), equal_nan=True)
    except PredictorError:
        return method  # the probe needs a block the table lacks; rows that do fall back per batch
    return method if agree else None


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
    """Every config that differs from `config` in exactly one choice (resolution, stem or stage);
    in a monotone space only those whose widths do not shrink."""
    codec = Codec(space)
    rows, real = codec.neighbours(codec.encode([config]))
    return codec.decode(rows[0][real[0]])


def repair(space: SearchSpace, config: SubnetConfig, cost_model: CostModel, constraints: Constraints,
           rng: random.Random, max_steps: int = 12, sample: int = 24) -> SubnetConfig | None:
    """Walk single-choice changes downhill on `violation` until feasible; None when stuck.

    One config through `repair_rows` (which see)."""
    del space  # the cost model's space; kept for the call's shape
    rows, ok = repair_rows(cost_model, cost_model.codec.encode([config]), constraints, rng,
                           max_steps, sample)
    return cost_model.codec.decode(rows[ok])[0] if ok[0] else None


def repair_rows(cost_model: CostModel, rows: np.ndarray, constraints: Constraints,
                rng: random.Random, max_steps: int = 12,
                sample: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Repair encoded configs together: (rows after the walk, which of them are feasible).

    Each step prices a random subset of `sample` neighbours of every row still infeasible, all in
    one batch, and moves each row to its best one (ties broken at random); a row whose best
    neighbour is no better is stuck. The draws come from the seeded `rng`, so repairs are
    deterministic given the seed.
    """
    current = np.array(rows, dtype=np.intp, copy=True).reshape(-1, cost_model.codec.columns)
    value = violation(cost_model.costs_of_rows(current), constraints)
    active = np.flatnonzero(value > 0)
    generator = np.random.default_rng(rng.getrandbits(63))
    for _ in range(max_steps):
        if active.size == 0:
            break
        options, real = cost_model.codec.neighbours(current[active])
        # Random priorities pick the sample (the `sample` largest among real options) and break ties.
        priority = np.where(real, generator.random(real.shape), -1.0)
        if real.shape[1] > sample:
            cut = -np.partition(-priority, sample - 1, axis=1)[:, sample - 1:sample]
            real &= priority >= cut
        scores = np.full(real.shape, np.inf)
        scores[real] = violation(cost_model.costs_of_rows(options[real]), constraints)
        best = scores.min(axis=1)
        pick = np.argmax(np.where(scores == best[:, None], priority, -np.inf), axis=1)
        moves = best < value[active]
        moved = active[moves]
        current[moved] = options[np.flatnonzero(moves), pick[moves]]
        value[moved] = best[moves]
        active = moved[value[moved] > 0]
    return current, value == 0


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
        """`n` configs spread evenly over the non-empty bins, in random order (distinct while the
        pools last; then the pools are drawn again)."""
        bins = [p for p in self.pools if p]
        if not bins:
            raise SearchError(f"no subnet satisfies {self.constraints.describe()}; widen "
                              f"--window-ms or relax --max-params/--max-mmacs")
        out: list[SubnetConfig] = []
        while len(out) < n:
            take = _spread(n - len(out), [len(b) for b in bins], rng)
            for pool, k in zip(bins, take):
                out += rng.sample(pool, k)
        rng.shuffle(out)
        return out


def _spread(n: int, capacity: list[int], rng: random.Random) -> list[int]:
    """How many of `n` to take from each bin: as even as the bins' capacities allow (the bins that
    get one more chosen at random), all of every bin when `n` exceeds them together."""
    take = [0] * len(capacity)
    open_bins = [i for i, c in enumerate(capacity) if c]
    while n > 0 and open_bins:
        share, extra = divmod(n, len(open_bins))
        lucky = set(rng.sample(open_bins, extra))
        for i in open_bins:
            k = min(capacity[i] - take[i], share + (i in lucky))
            take[i] += k
            n -= k
        open_bins = [i for i in open_bins if take[i] < capacity[i]]
    return take


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


def scaled_rows(codec: Codec, generator: np.random.Generator, sizes: np.ndarray,
                spread: float = 0.7) -> np.ndarray:
    """`sample_scaled` for a batch, on encoded rows: each choice near the `size` quantile of its
    values, then (monotone spaces) shrinking widths repaired as `SearchSpace.repair_widths` does."""
    sizes = np.asarray(sizes, dtype=float)
    top = codec.sizes - 1
    position = sizes[:, None] * top[None, :] + generator.normal(0.0, spread, (len(sizes), len(top)))
    rows = np.clip(np.rint(position), 0, top).astype(np.intp)
    options = codec.space.width_options()
    for i in np.flatnonzero(codec.shrinking(rows)):
        chain = [options[j][p] for j, p in enumerate(rows[i, codec.width_cols])]
        fixed = W.repair_chain(chain, options)
        rows[i, codec.width_cols] = [options[j].index(w) for j, w in enumerate(fixed)]
    return rows


def build_pools(space: SearchSpace, cost_model: CostModel, constraints: Constraints,
                rng: random.Random, want: int, bins: int = 8, batch: int = 2048,
                max_batches: int = 4, repair_budget: int | None = None) -> WindowPools:
    """Fill per-window pools: uniform samples, then samples aimed at the window, then repairs.

    The first batch mixes uniform samples with size-scaled ones (`scaled_rows`) over the whole size
    range; the sizes whose samples landed in (or nearest to) the window steer the next batches, so
    a window at the edge of the latency range fills as fast as one in the middle. Then the nearest
    misses (`repair_budget`, default `want`) are repaired together (`repair_rows`).
    """
    codec = cost_model.codec
    generator = np.random.default_rng(rng.getrandbits(63))
    pools = WindowPools(constraints, bins)
    miss_rows, miss_values = [], []
    sizes = generator.random(batch // 2)
    for round_index in range(max_batches):
        rows = scaled_rows(codec, generator, sizes)
        if round_index == 0:
            uniform = codec.encode([space.sample(rng) for _ in range(batch - len(sizes))])
            rows = np.concatenate([uniform, rows])
        costs = cost_model.costs_of_rows(rows)
        ok = feasible_mask(costs, constraints)
        for config, ms in zip(codec.decode(rows[ok]), costs.latency_ms[ok]):
            pools.add(config, float(ms))
        values = violation(costs, constraints)
        if len(pools) >= want and pools.filled_bins() == bins or len(pools) >= 4 * want:
            return pools
        miss_rows.append(rows[~ok])
        miss_values.append(values[~ok])
        # Aim the next batch: sizes of this batch's scaled samples, weighted towards small violation.
        order = np.argsort(values[len(rows) - len(sizes):], kind="stable")[:max(8, len(sizes) // 8)]
        sizes = np.clip(generator.choice(sizes[order], batch) + generator.normal(0.0, 0.05, batch),
                        0.0, 1.0)
    rows, values = np.concatenate(miss_rows), np.concatenate(miss_values)
    nearest = rows[np.argsort(values, kind="stable")[:want if repair_budget is None else repair_budget]]
    if len(nearest):
        add_repaired(pools, cost_model, np.unique(nearest, axis=0), constraints, rng)
    return pools


def add_repaired(pools: "WindowPools", cost_model: CostModel, rows: np.ndarray,
                 constraints: Constraints, rng: random.Random) -> list[SubnetConfig | None]:
    """Repair encoded configs (`repair_rows`), add the feasible results to `pools`; per row, its
    repaired config or None."""
    fixed, ok = repair_rows(cost_model, rows, constraints, rng)
    configs = cost_model.codec.decode(fixed[ok])
    for config, ms in zip(configs, cost_model.costs(configs).latency_ms):
        pools.add(config, float(ms))
    found = iter(configs)
    return [next(found) if good else None for good in ok]
