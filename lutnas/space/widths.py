"""Non-decreasing widths (ElasticViT's rule) as pure functions over width chains.

A *chain* is the stem's width followed by each stage's width; `options[i]` are the widths position i
allows (sorted). ElasticViT's sampler only draws a stage width >= the previous stage's
(`SuperCNNLayer.arch_sampling` / `SuperTransformerBlock.arch_sampling`: `sampled_channels >=
in_channels`), so a space with `monotone_widths: true` admits exactly the non-decreasing chains.

Everything here is exact and cheap: counts come from a dynamic programme over positions (never an
enumeration), so `elasticvit`'s 7 positions cost a few hundred additions.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence

Options = Sequence[Sequence[int]]


def suffix_counts(options: Options) -> list[dict[int, int]]:
    """counts[i][w]: non-decreasing completions of positions i.. that put width w at position i."""
    counts: list[dict[int, int]] = [{} for _ in options]
    after: dict[int, int] = {}
    for i in range(len(options) - 1, -1, -1):
        counts[i] = {w: (sum(c for v, c in after.items() if v >= w) if i < len(options) - 1 else 1)
                     for w in options[i]}
        after = counts[i]
    return counts


def count_chains(options: Options) -> int:
    """Number of non-decreasing chains (0 when none exists)."""
    if not options:
        return 1
    return sum(suffix_counts(options)[0].values())


def sample_chain(options: Options, rng: random.Random) -> list[int]:
    """A chain drawn uniformly from all non-decreasing chains (one `rng.random()` per position).

    Each position is drawn with weights equal to its number of completions, so every valid chain is
    equally likely: the distribution of rejection sampling from independent uniform widths, without
    the rejections (about 60% of `elasticvit`'s independent draws are not monotone)."""
    counts = suffix_counts(options)
    chain: list[int] = []
    low = None
    for position, allowed in enumerate(options):
        values = [w for w in allowed if low is None or w >= low]
        weights = [counts[position][w] for w in values]
        low = rng.choices(values, weights)[0]
        chain.append(low)
    return chain


def lowest_chain(options: Options) -> list[int] | None:
    """The element-wise smallest non-decreasing chain (greedy from the stem), or None."""
    chain: list[int] = []
    for allowed in options:
        at = bisect.bisect_left(allowed, chain[-1]) if chain else 0
        if at == len(allowed):
            return None
        chain.append(allowed[at])
    return chain


def highest_chain(options: Options) -> list[int] | None:
    """The element-wise largest non-decreasing chain (greedy from the last stage), or None."""
    chain: list[int] = []
    for allowed in reversed(options):
        at = bisect.bisect_right(allowed, chain[-1]) if chain else len(allowed)
        if at == 0:
            return None
        chain.append(allowed[at - 1])
    return chain[::-1]


def usable_widths(options: Options) -> list[tuple[int, ...]]:
    """Per position, the widths that some non-decreasing chain uses (empty lists when none exists).

    A width is usable when the smallest chain reaches it from the left and the largest chain can
    continue from it to the right."""
    low, high = lowest_chain(options), highest_chain(options)
    if low is None or high is None:
        return [() for _ in options]
    return [tuple(w for w in allowed if low[i] <= w <= high[i]) for i, allowed in enumerate(options)]


def repair_chain(chain: Sequence[int], options: Options) -> list[int]:
    """The chain made non-decreasing by moving only the widths that break it.

    Each width is first capped at the largest chain's width there (a width no chain can continue
    from is lowered), then every width below its predecessor is raised to the smallest allowed
    width that is not. A chain that is already non-decreasing comes back unchanged. Raises
    ValueError when no chain exists (the space loader refuses such spaces)."""
    high = highest_chain(options)
    if high is None:
        raise ValueError("no non-decreasing chain of widths exists")
    out: list[int] = []
    for i, allowed in enumerate(options):
        floor = out[-1] if out else allowed[0]
        width = min(chain[i], high[i])
        if width < floor or width not in allowed:
            # <= high[i] (an allowed width), since floor <= high[i - 1] <= high[i]
            width = allowed[bisect.bisect_left(allowed, max(width, floor))]
        out.append(width)
    return out


def mutate_chain(chain: Sequence[int], options: Options, rng: random.Random, prob: float) -> list[int]:
    """Resample each width with probability `prob` among the widths its neighbours allow.

    Position i is redrawn uniformly from the allowed widths between the (possibly new) width before
    it and the current width after it, so a non-decreasing chain stays one and a mutation stays a
    local move; one `rng.random()` per position, plus one draw per resampled position."""
    out = list(repair_chain(chain, options))
    for i, allowed in enumerate(options):
        if rng.random() >= prob:
            continue
        low = out[i - 1] if i else allowed[0]
        high = out[i + 1] if i + 1 < len(out) else allowed[-1]
        out[i] = rng.choice([w for w in allowed if low <= w <= high])
    return out


def cross_chains(a: Sequence[int], b: Sequence[int], rng: random.Random) -> list[int]:
    """Uniform crossover of two non-decreasing chains that stays non-decreasing.

    Each position takes either parent's width with equal chance among those not below the child's
    previous width; the parent the previous width came from always qualifies, so there is always
    a choice and the child mixes its parents as evenly as the constraint allows."""
    out: list[int] = []
    for x, y in zip(a, b):
        candidates = [w for w in (x, y) if not out or w >= out[-1]]
        out.append(candidates[0] if len(candidates) == 1 or rng.random() < 0.5 else candidates[1])
    return out


def decreases(chain: Sequence[int], names: Sequence[str]) -> list[str]:
    """Human-readable places where the chain shrinks, e.g. 'stage4 width=80 < stage3 width=96'."""
    return [f"{names[i]} width={chain[i]} < {names[i - 1]} width={chain[i - 1]}"
            for i in range(1, len(chain)) if chain[i] < chain[i - 1]]
