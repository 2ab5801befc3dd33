"""Adaptive profiling's decisions, as pure functions: what to measure first, what next, when to stop.

No I/O here: `lutnas.profiler.adaptive_run` feeds measurements in and takes proposals out, so the
same logic runs against a phone, the host, or a recorded table in a test.

- First, a space-covering sample: every kind gets blocks in proportion to its share of the plan
  (at least two, so a per-kind fit has a slope), chosen within a kind by farthest-point sampling on
  log-scaled features, starting from its smallest and largest block: the trees then interpolate
  instead of extrapolating.
- Next, the blocks where the predictor is least sure in *milliseconds*: the width of its calibrated
  90% interval (split-conformal on each kind's cross-validated errors, relative width x predicted
  latency): a whole subnet's error is a sum of block errors in ms, so a 30% doubt on a 2 ms block
  matters more than on a 0.02 ms one. A batch is spread out in feature space so it does not spend
  itself on near-twins of one uncertain block.
- Stop when the budget is spent (or the next batch would overrun it), every block is measured, or
  the held-out error of the last batch is below the bound.
"""

from __future__ import annotations

import inspect
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lutnas.errors import BadInputError
from lutnas.predictors.features import block_feature_frame, log_features
from lutnas.space import BlockSpec, as_specs


def _standardised(specs: Sequence[BlockSpec], kind: str) -> np.ndarray:
    x = log_features(block_feature_frame(specs, kind))
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def farthest_points(x: np.ndarray, n: int, start: Sequence[int] = ()) -> list[int]:
    """Indices of `n` rows of `x`, each the farthest from those already chosen."""
    chosen = list(dict.fromkeys(i for i in start if 0 <= i < len(x)))[:n]
    if not chosen and len(x):
        chosen = [0]
    if len(x) == 0:
        return []
    dist = np.min(np.linalg.norm(x[:, None, :] - x[chosen][None, :, :], axis=2), axis=1)
    while len(chosen) < min(n, len(x)):
        pick = int(np.argmax(dist))
        chosen.append(pick)
        dist = np.minimum(dist, np.linalg.norm(x - x[pick], axis=1))
    return chosen


def allocate(counts: dict[str, int], n: int, minimum: int = 2) -> dict[str, int]:
    """Split `n` over kinds proportionally to `counts`, each kind at least `minimum` (or all it has)."""
    alloc = {k: min(c, minimum) for k, c in counts.items()}
    left = n - sum(alloc.values())
    total = sum(counts.values())
    if left > 0 and total:
        shares = {k: counts[k] / total * left for k in counts}
        for k in counts:
            alloc[k] = min(counts[k], alloc[k] + int(shares[k]))
        # Hand out the remainder by largest fractional share, where room is left.
        order = sorted(counts, key=lambda k: shares[k] - int(shares[k]), reverse=True)
        left = n - sum(alloc.values())
        while left > 0 and any(alloc[k] < counts[k] for k in counts):
            for k in order:
                if left and alloc[k] < counts[k]:
                    alloc[k] += 1
                    left -= 1
    return alloc


def covering_sample(specs: Sequence[BlockSpec | str], n: int, seed: int = 0) -> list[BlockSpec]:
    """`n` blocks spanning kinds and sizes (see module docstring)."""
    specs = as_specs(specs)
    by_kind: dict[str, list[BlockSpec]] = defaultdict(list)
    for spec in specs:
        by_kind[spec.kind].append(spec)
    rng = random.Random(seed)
    chosen: list[BlockSpec] = []
    for kind, k in allocate({k: len(v) for k, v in by_kind.items()}, n).items():
        group = list(by_kind[kind])
        rng.shuffle(group)  # ties in the farthest-point walk break by seed, not by plan order
        if k >= len(group):
            chosen += group
            continue
        x = _standardised(group, kind)
        flops = block_feature_frame(group, kind)["macs"].to_numpy()
        chosen += [group[i] for i in farthest_points(x, k, [int(flops.argmin()), int(flops.argmax())])]
    return chosen


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    reason: str
    max_next: int | None = None  # how many blocks the budget still affords


@dataclass(frozen=True)
class StoppingRule:
    """Stop when the budget is spent or the held-out block error is below `error_bound`."""

    budget_s: float
    error_bound: float = 0.05

    def __post_init__(self) -> None:
        if not self.budget_s > 0:
            raise BadInputError(f"--budget-minutes must be positive, got {self.budget_s / 60:g}")
        if not 0 < self.error_bound < 1:
            raise BadInputError(f"the error bound is a fraction in (0, 1), got {self.error_bound}")

    def check(self, elapsed_s: float, heldout_error: float | None, remaining: int,
              per_block_s: float) -> StopDecision:
        if remaining <= 0:
            return StopDecision(True, "every block of the plan is measured", 0)
        if heldout_error is not None and heldout_error < self.error_bound:
            return StopDecision(True, f"held-out block error {heldout_error:.1%} is below the bound "
                                      f"{self.error_bound:.1%}", 0)
        left = self.budget_s - elapsed_s
        affordable = int(left // per_block_s) if per_block_s > 0 else remaining
        if left <= 0 or affordable < 1:
            return StopDecision(True, f"budget of {self.budget_s / 60:.1f} device-minutes spent", 0)
        return StopDecision(False, "continue", min(affordable, remaining))


class AdaptiveSelector:
    """Proposals for adaptive profiling over a fixed plan of blocks."""

    def __init__(self, specs: Sequence[BlockSpec | str], initial: int | None = None,
                 batch: int | None = None, seed: int = 0, level: float = 0.9) -> None:
        self.specs = as_specs(specs)
        self.level = level  # coverage of the intervals whose width ranks the candidates
        if not self.specs:
            raise BadInputError("adaptive profiling needs a non-empty plan of blocks")
        n = len(self.specs)
        kinds = len({s.kind for s in self.specs})
        self.initial = min(n, initial if initial is not None else max(2 * kinds, math.ceil(0.08 * n)))
        self.batch = batch if batch is not None else max(4, math.ceil(0.04 * n))
        if self.initial < 1 or self.batch < 1:
            raise BadInputError("initial sample and batch size must be at least 1")
        self.seed = seed

    def initial_sample(self) -> list[BlockSpec]:
        return covering_sample(self.specs, self.initial, self.seed)

    def next_batch(self, predictor: Any, remaining: Sequence[BlockSpec],
                   limit: int | None = None) -> list[BlockSpec]:
        """The `batch` (or `limit`) remaining blocks whose calibrated interval is widest in ms (the
        predictor's spread where it has no intervals), spread out in feature space."""
        remaining = list(remaining)
        size = min(self.batch, limit if limit is not None else self.batch, len(remaining))
        if size <= 0:
            return []
        return pick_uncertain(remaining, uncertainty_ms(predictor, remaining, self.level), size)


def uncertainty_ms(predictor: Any, specs: Sequence[BlockSpec], level: float = 0.9) -> np.ndarray:
    """Per block, the width in ms of the predictor's calibrated `level` interval (learned:
    split-conformal per kind), or twice its spread for a predictor without intervals."""
    if "interval" in inspect.signature(predictor.predict_blocks).parameters:
        _, lower, upper = predictor.predict_blocks(specs, use_measured=False, interval=level)
        return np.asarray(upper, dtype=float) - np.asarray(lower, dtype=float)
    _, spread = predictor.predict_blocks(specs, return_spread=True, use_measured=False)
    return 2.0 * np.asarray(spread, dtype=float)


def pick_uncertain(candidates: Sequence[BlockSpec], spread_ms: np.ndarray, size: int) -> list[BlockSpec]:
    """Greedy: highest spread first, a candidate's score shrinking with its nearness (same kind,
    standardised feature space) to blocks already picked in this batch."""
    candidates = list(candidates)
    if size >= len(candidates):
        return candidates
    coords: dict[int, np.ndarray] = {}
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, spec in enumerate(candidates):
        by_kind[spec.kind].append(i)
    for kind, idx in by_kind.items():
        x = _standardised([candidates[i] for i in idx], kind)
        for row, i in enumerate(idx):
            coords[i] = x[row]
    score = spread_ms.copy()
    picked: list[int] = []
    for _ in range(size):
        best = int(np.argmax(score))
        picked.append(best)
        score[best] = -np.inf
        for i in by_kind[candidates[best].kind]:
            if np.isfinite(score[i]):
                d = float(np.linalg.norm(coords[i] - coords[best]))
                score[i] *= min(1.0, d / 1.0)  # within one standard deviation: discounted
    return [candidates[i] for i in picked]
