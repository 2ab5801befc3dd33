"""The key of a whole subnet: what stores, tables and calibration records call a measured subnet."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lutnas.space.searchspace import SearchSpace, SubnetConfig


def subnet_key(space: SearchSpace, config: SubnetConfig) -> str:
    """`subnet:<space>:r<resolution>:<digest>`: a readable prefix plus a digest of the block keys the
    subnet executes, so two configs that run the same blocks share a key."""
    blocks = "|".join(b.key for b in space.blocks_of(config))
    return f"subnet:{space.name}:r{config.resolution}:{hashlib.sha256(blocks.encode()).hexdigest()[:16]}"
