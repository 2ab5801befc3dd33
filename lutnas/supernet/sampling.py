"""Which subnets a supernet training step trains: uniform, sandwich, and ElasticViT's samplers.

ElasticViT's point is that subnets of very different size, trained in neighbouring steps, pull the
shared weights in conflicting directions. Its complexity-aware sampler walks over complexity buckets
one bucket at a time (so neighbouring steps are of similar size) while visiting them all; its
performance-aware sampler prefers subnets that already do well (a memory bank per bucket).

Every sampler is deterministic given its seed and the scores it is fed, so every rank of a
distributed run (same seed, all-reduced scores) picks the same subnets; its whole state is JSON,
so checkpoints keep banks and pools (the paper's code lost its banks on resume).

Units: the paper's buckets are "100 ... 1200 MFLOPs", but the FLOPs it reports for its models (e.g.
MobileNetV3 at 56-219 "MFLOPs") are multiply-accumulates, as is usual in NAS papers; the buckets are
therefore read as MMACs (`space.complexity(cfg).macs`), which puts the built-in `elasticvit`
space's random subnets (about 120-1000 MMACs) across the buckets as the paper describes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lutnas.errors import BadInputError
from lutnas.space import SearchSpace, StageChoice, StemChoice, SubnetConfig

CostFn = Callable[[list[SubnetConfig]], np.ndarray]
ScoreFn = Callable[[list[SubnetConfig]], Sequence[float]]
# ElasticViT's complexity buckets (upper edges, MMACs: see the module docstring).
ELASTICVIT_BUCKETS_MMACS = (100, 200, 300, 400, 500, 700, 900, 1200)
# The smallest subnet of the built-in elasticvit space (MMACs): the reference low end used to scale
# the paper's buckets to other spaces and cost measures (a test holds it to the computed value).
ELASTICVIT_MIN_MMACS = 38.286976  # with the MBConv projection shortcut (37.715584 without)
SAMPLERS = ("ca+pa", "ca", "uniform", "sandwich")


def macs_cost(space: SearchSpace) -> CostFn:
    """Cost in MMACs, computed analytically from the configs' blocks."""
    def cost(configs: list[SubnetConfig]) -> np.ndarray:
        return np.array([space.complexity(c).macs / 1e6 for c in configs], dtype=np.float64)
    return cost


def bucket_edges(space: SearchSpace, cost_fn: CostFn, paper_units: bool) -> list[float]:
    """Upper edges of the buckets, in the units of `cost_fn`.

    `paper_units`: the cost is MMACs of the built-in elasticvit space, so the paper's edges apply
    as they are. Otherwise the edges keep their relative positions, mapped from the paper's range
    (elasticvit's smallest subnet .. 1200) onto this space's range (smallest .. largest subnet).
    """
    if paper_units:
        return [float(e) for e in ELASTICVIT_BUCKETS_MMACS]
    low, high = (float(v) for v in cost_fn([space.smallest(), space.largest()]))
    if not high > low:
        raise BadInputError(f"the cost of space {space.name!r}'s largest subnet ({high:g}) is not above "
                            f"its smallest's ({low:g}); complexity buckets need a range")
    top = ELASTICVIT_BUCKETS_MMACS[-1]
    return [low + (e - ELASTICVIT_MIN_MMACS) / (top - ELASTICVIT_MIN_MMACS) * (high - low)
            for e in ELASTICVIT_BUCKETS_MMACS]


def bucket_of(cost: float, edges: Sequence[float]) -> int | None:
    """Index of the bucket holding `cost`, or None above the last edge."""
    for index, edge in enumerate(edges):
        if cost <= edge * (1 + 1e-9):
            return index
    return None


def biased_sample(space: SearchSpace, rng: random.Random, level: float) -> SubnetConfig:
    """A random config whose choices lean towards the `level` quantile (0 small .. 1 large).

    Uniform sampling almost never reaches the extreme buckets (a product of many choices concentrates
    in the middle), so pools are filled with configs drawn around a random size level as well.
    """
    def pick(values: tuple[int, ...]) -> int:
        position = level * (len(values) - 1) + rng.gauss(0.0, 0.6)
        return values[min(len(values) - 1, max(0, round(position)))]

    stem = StemChoice(**{k: pick(v) for k, v in space.stem.choices().items()})
    stages = tuple(StageChoice(**{k: pick(v) for k, v in s.choices().items()}) for s in space.stages)
    # Widths picked one by one may shrink; a monotone space gets them repaired (a no-op otherwise).
    return space.repair_widths(SubnetConfig(pick(space.resolutions), stem, stages))


def build_pools(space: SearchSpace, cost_fn: CostFn, edges: Sequence[float], pool_size: int,
                rng: random.Random, max_draws: int = 20_000, chunk: int = 256) -> list[list[SubnetConfig]]:
    """Pre-sample `pool_size` distinct configs per bucket (rejection sampling at train time is slow)."""
    pools: list[list[SubnetConfig]] = [[] for _ in edges]
    seen: set[SubnetConfig] = set()
    drawn = 0
    while drawn < max_draws and any(len(p) < pool_size for p in pools):
        batch = [space.sample(rng) if i % 2 else biased_sample(space, rng, rng.random())
                 for i in range(chunk)]
        drawn += chunk
        for config, cost in zip(batch, cost_fn(batch)):
            index = bucket_of(float(cost), edges)
            if index is not None and config not in seen and len(pools[index]) < pool_size:
                seen.add(config)
                pools[index].append(config)
    return pools


def _rng_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(rng: random.Random, state: list[Any]) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


class SubnetSampler:
    """Picks the subnets of one step, besides the largest (always trained first, as the teacher)."""

    name = "base"

    def __init__(self, space: SearchSpace, num_subnets: int, seed: int) -> None:
        if num_subnets < 1:
            raise BadInputError(f"a step must train at least one sampled subnet, got {num_subnets}")
        self.space, self.num_subnets, self.seed = space, num_subnets, seed
        self.rng = random.Random(seed)
        self.total_steps = 1

    def set_total_steps(self, total_steps: int) -> None:
        self.total_steps = max(1, total_steps)

    def sample(self, step: int, score_fn: ScoreFn | None = None) -> list[SubnetConfig]:
        raise NotImplementedError

    def observe(self, configs: Sequence[SubnetConfig], losses: Sequence[float]) -> None:
        """Feedback: the training loss of each subnet just trained (used by performance-aware)."""

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "num_subnets": self.num_subnets,
                "total_steps": self.total_steps, "rng": _rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise BadInputError(f"checkpoint was trained with sampler {state.get('name')!r}, "
                                f"not {self.name!r}; resume with --sampler {state.get('name')}")
        self.seed, self.num_subnets = state["seed"], state["num_subnets"]
        self.total_steps = state["total_steps"]
        _set_rng_state(self.rng, state["rng"])


class UniformSampler(SubnetSampler):
    name = "uniform"

    def sample(self, step: int, score_fn: ScoreFn | None = None) -> list[SubnetConfig]:
        return [self.space.sample(self.rng) for _ in range(self.num_subnets)]


class SandwichSampler(SubnetSampler):
    """BigNAS's sandwich rule: the smallest plus random subnets (the largest is always trained)."""

    name = "sandwich"

    def sample(self, step: int, score_fn: ScoreFn | None = None) -> list[SubnetConfig]:
        return [self.space.smallest()] + [self.space.sample(self.rng)
                                          for _ in range(self.num_subnets - 1)]


class ComplexityAwareSampler(SubnetSampler):
    """Random walk over complexity buckets (index moves -1, 0 or +1 a step); subnets from its pool."""

    name = "ca"

    def __init__(self, space: SearchSpace, num_subnets: int, seed: int, cost_fn: CostFn | None = None,
                 paper_units: bool | None = None, pool_size: int = 200, cost_name: str = "mmacs") -> None:
        super().__init__(space, num_subnets, seed)
        if cost_fn is None:
            cost_fn = macs_cost(space)
            paper_units = space.name == "elasticvit" if paper_units is None else paper_units
        self.cost_name = cost_name
        self.edges = bucket_edges(space, cost_fn, bool(paper_units))
        pools = build_pools(space, cost_fn, self.edges, pool_size, random.Random(f"pools-{seed}"))
        # A bucket no draw reached cannot be visited; it is dropped rather than left as a dead end.
        kept = [i for i, pool in enumerate(pools) if pool]
        if not kept:
            raise BadInputError(f"no subnet of space {space.name!r} fell into any complexity bucket")
        self.dropped_buckets = [i for i in range(len(pools)) if i not in kept]
        self.edges = [self.edges[i] for i in kept]
        self.pools = [pools[i] for i in kept]
        self.bucket_index = self.rng.randrange(len(self.pools))
        self.history: list[int] = []

    def _move(self) -> int:
        last = len(self.pools) - 1
        moves = [m for m in (-1, 0, 1) if 0 <= self.bucket_index + m <= last]
        self.bucket_index += self.rng.choice(moves)
        self.history.append(self.bucket_index)
        return self.bucket_index

    def sample(self, step: int, score_fn: ScoreFn | None = None) -> list[SubnetConfig]:
        pool = self.pools[self._move()]
        return [self.rng.choice(pool) for _ in range(self.num_subnets)]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(cost_name=self.cost_name, edges=self.edges, bucket_index=self.bucket_index,
                     dropped_buckets=self.dropped_buckets,
                     pools=[[c.to_dict() for c in pool] for pool in self.pools])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.cost_name, self.edges = state["cost_name"], list(state["edges"])
        self.bucket_index, self.dropped_buckets = state["bucket_index"], state["dropped_buckets"]
        self.pools = [[self.space.validate(SubnetConfig.from_dict(c)) for c in pool]
                      for pool in state["pools"]]


class PerformanceAwareSampler(ComplexityAwareSampler):
    """Complexity-aware buckets plus a memory bank of low-loss subnets per bucket.

    The bank keeps the `bank_size` subnets of lowest training loss seen in the bucket; a subnet trained
    again gets its score replaced (scores age as the weights change, so re-scoring is the refresh),
    and a new subnet with a lower loss evicts the worst. Once a bucket's bank is half full, a subnet is
    drawn from it with probability `draw_probability(step)` (rising linearly from `p_start` to `p_end`
    over training), weighted by softmax(-loss / temperature); otherwise `candidates` random subnets of
    the bucket are scored on the current minibatch and the best is trained.
    """

    name = "ca+pa"

    def __init__(self, space: SearchSpace, num_subnets: int, seed: int, cost_fn: CostFn | None = None,
                 paper_units: bool | None = None, pool_size: int = 200, cost_name: str = "mmacs",
                 bank_size: int = 10, candidates: int = 3, p_start: float = 0.2, p_end: float = 0.8,
                 temperature: float = 1.0) -> None:
        super().__init__(space, num_subnets, seed, cost_fn, paper_units, pool_size, cost_name)
        self.bank_size, self.candidates = bank_size, candidates
        self.p_start, self.p_end, self.temperature = p_start, p_end, temperature
        self.banks: list[list[dict[str, Any]]] = [[] for _ in self.pools]
        self.bank_draws = 0
        self.candidate_draws = 0

    def draw_probability(self, step: int) -> float:
        progress = min(1.0, max(0.0, step / self.total_steps))
        return self.p_start + (self.p_end - self.p_start) * progress

    def bank_ready(self, index: int) -> bool:
        return len(self.banks[index]) * 2 >= self.bank_size

    def sample(self, step: int, score_fn: ScoreFn | None = None) -> list[SubnetConfig]:
        index = self._move()
        picked = []
        for _ in range(self.num_subnets):
            if self.bank_ready(index) and self.rng.random() < self.draw_probability(step):
                bank = self.banks[index]
                losses = np.array([e["loss"] for e in bank])
                weights = np.exp(-(losses - losses.min()) / self.temperature)
                entry = self.rng.choices(bank, weights=weights.tolist())[0]
                picked.append(SubnetConfig.from_dict(entry["config"]))
                self.bank_draws += 1
                continue
            candidates = [self.rng.choice(self.pools[index]) for _ in range(self.candidates)]
            if score_fn is None or len(candidates) == 1:
                picked.append(candidates[0])
            else:
                scores = list(score_fn(candidates))
                picked.append(candidates[int(np.argmin(scores))])
            self.candidate_draws += 1
        return picked

    def observe(self, configs: Sequence[SubnetConfig], losses: Sequence[float]) -> None:
        bank = self.banks[self.bucket_index]
        for config, loss in zip(configs, losses):
            if not math.isfinite(loss):
                continue
            data = config.to_dict()
            for entry in bank:
                if entry["config"] == data:
                    entry["loss"] = float(loss)
                    break
            else:
                bank.append({"config": data, "loss": float(loss)})
            bank.sort(key=lambda e: e["loss"])
            del bank[self.bank_size:]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(bank_size=self.bank_size, candidates=self.candidates, p_start=self.p_start,
                     p_end=self.p_end, temperature=self.temperature, banks=self.banks,
                     bank_draws=self.bank_draws, candidate_draws=self.candidate_draws)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for key in ("bank_size", "candidates", "p_start", "p_end", "temperature", "bank_draws",
                    "candidate_draws"):
            setattr(self, key, state[key])
        self.banks = [list(bank) for bank in state["banks"]]


def make_sampler(name: str, space: SearchSpace, num_subnets: int, seed: int,
                 cost_fn: CostFn | None = None, cost_name: str = "mmacs",
                 **options: Any) -> SubnetSampler:
    """`cost_fn` None means MMACs (the paper's buckets for elasticvit); else e.g. predicted ms."""
    if name == "uniform":
        return UniformSampler(space, num_subnets, seed)
    if name == "sandwich":
        return SandwichSampler(space, num_subnets, seed)
    paper_units = None if cost_fn is None else False
    if name == "ca":
        return ComplexityAwareSampler(space, num_subnets, seed, cost_fn, paper_units,
                                      cost_name=cost_name, **options)
    if name == "ca+pa":
        return PerformanceAwareSampler(space, num_subnets, seed, cost_fn, paper_units,
                                       cost_name=cost_name, **options)
    raise BadInputError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")
