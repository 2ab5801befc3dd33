"""Analytic cost of a block: MACs, parameters and memory traffic.

Computed from the BlockSpec alone so that search and samplers can price millions of subnets without
building modules. MACs count what `torch.utils.flop_counter` counts (convolutions, linear layers and
matmuls; its "FLOPs" are 2 x MACs), and the tests hold the kinds' formulas to that measured count.
Memory traffic is the fp32 bytes of weights read plus, per layer, the activations it reads and
writes: what a memory-bound phone CPU pays for, which MACs miss (AutoViT's point).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lutnas.errors import ConfigError
from lutnas.space.blockspec import BlockSpec

BYTES_PER_VALUE = 4  # fp32


@dataclass(frozen=True)
class Complexity:
    """Cost of a block or subnet: multiply-accumulates, parameters and bytes moved (fp32)."""

    macs: int
    params: int
    bytes_read: int
    bytes_written: int

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def arithmetic_intensity(self) -> float:
        """MACs per byte moved: low values are memory-bound on every phone CPU."""
        return self.macs / max(1, self.bytes_moved)

    def __add__(self, other: "Complexity") -> "Complexity":
        return Complexity(self.macs + other.macs, self.params + other.params,
                          self.bytes_read + other.bytes_read,
                          self.bytes_written + other.bytes_written)


ZERO = Complexity(0, 0, 0, 0)


class Tally:
    """Accumulates layers: (MACs, weights, activation values in, activation values out)."""

    def __init__(self) -> None:
        self.macs = self.params = self.read = self.written = 0

    def layer(self, macs: int, weights: int, values_in: int, values_out: int) -> None:
        self.macs += macs
        self.params += weights
        self.read += weights + values_in
        self.written += values_out

    def result(self) -> Complexity:
        b = BYTES_PER_VALUE
        return Complexity(self.macs, self.params, self.read * b, self.written * b)


def block_complexity(spec: BlockSpec) -> Complexity:
    """The block's cost, from its kind's `cost` rule."""
    tally = Tally()
    spec.record.cost(tally, spec.as_dict())
    return tally.result()


def total_complexity(specs: Iterable[BlockSpec]) -> Complexity:
    """Sum of `block_complexity` over `specs`."""
    total = ZERO
    for spec in specs:
        total = total + block_complexity(spec)
    return total


# Bytes a stored weight takes at a table's precision (`RunSettings.precision`): fp16 models keep
# fp16 weights, int8 (full-integer) models int8 ones.
BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "int8": 1}
MIB = 2 ** 20


def bytes_per_param(precision: str) -> int:
    """Bytes of one weight at `precision` (fp32 4, fp16 2, int8 1); ConfigError for another."""
    try:
        return BYTES_PER_PARAM[precision]
    except KeyError:
        raise ConfigError(f"unknown precision {precision!r}; use one of "
                          f"{', '.join(BYTES_PER_PARAM)}") from None


def weight_mib(specs: Iterable[BlockSpec], precision: str = "fp32") -> float:
    """A subnet's weights in MiB, from its blocks alone (`space.blocks_of(config)`): the parameters
    of every block (`block_complexity`) x `bytes_per_param(precision)` / 2**20. What the whole-model
    `Correction`'s weight term charges per MiB (lutnas.predictors.correction); the LUT predictor
    sums the same parameters through its per-stage index for batches (`SpaceIndex` params grid)."""
    return sum(block_complexity(s).params for s in specs) * bytes_per_param(precision) / MIB
