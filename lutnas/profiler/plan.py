"""The profiling plan: every distinct block (and, on request, operator) a space needs.

Pure and cheap: it walks the space stage by stage (`SearchSpace.unique_blocks`) instead of
enumerating subnets, so the plan of `elasticvit` takes well under a second.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from lutnas.errors import BadInputError
from lutnas.space import BlockSpec, SearchSpace

GRANULARITIES = ("block", "op", "both")


@dataclass(frozen=True)
class Plan:
    space: SearchSpace
    blocks: tuple[BlockSpec, ...]
    operators: tuple[BlockSpec, ...]

    @property
    def specs(self) -> tuple[BlockSpec, ...]:
        """Everything to measure: blocks first, then operators not already listed."""
        return self.blocks + self.operators

    def counts_by_kind(self) -> dict[str, int]:
        return dict(Counter(spec.kind for spec in self.specs))


def make_plan(
    space: SearchSpace,
    resolutions: Iterable[int] | None = None,
    granularity: str = "block",
    limit: int | None = None,
    sample_fraction: float | None = None,
    seed: int = 0,
) -> Plan:
    """Unique blocks of `space` at `resolutions`, optionally cut to a reproducible subset.

    `limit` keeps the first N blocks in a seeded shuffle and `sample_fraction` a seeded share; both
    shuffle before cutting so a partial plan still spans every stage and kind.
    """
    if granularity not in GRANULARITIES:
        raise BadInputError(f"granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}")
    if limit is not None and sample_fraction is not None:
        raise BadInputError("give --limit or --sample, not both")
    blocks = list(space.unique_blocks(list(resolutions) if resolutions else None))
    if limit is not None or sample_fraction is not None:
        rng = random.Random(seed)
        rng.shuffle(blocks)
        if sample_fraction is not None:
            if not 0 < sample_fraction <= 1:
                raise BadInputError(f"--sample must be in (0, 1], got {sample_fraction}")
            limit = max(1, round(sample_fraction * len(blocks)))
        if limit is not None and limit < 1:
            raise BadInputError(f"--limit must be at least 1, got {limit}")
        blocks = sorted(blocks[:limit], key=lambda s: (s.kind, s.key))
    operators: list[BlockSpec] = []
    if granularity in ("op", "both"):
        seen: dict[str, BlockSpec] = {}
        for block in blocks:
            for op in block.operators():
                seen.setdefault(op.key, op)
        operators = list(seen.values())
    if granularity == "op":
        blocks = []
    return Plan(space, tuple(blocks), tuple(operators))
