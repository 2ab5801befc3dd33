"""BlockSpec, the unit that is built, exported, measured, stored, predicted and searched.

A BlockSpec is a kind plus the shape parameters that change its latency; its `key` is the one
string every table, store and predictor uses for it. What a kind means lives in its `BlockKind`
record (`kinds.py`); this class only validates, prints and parses keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from lutnas.errors import BlockKeyError
from lutnas.space.kinds import BlockKind, get_kind
from lutnas.space.vocabulary import ACTIVATIONS, STRING_FIELDS


@dataclass(frozen=True)
class BlockSpec:
    """A block kind and its shape parameters, in the kind's canonical field order.

    Build with `BlockSpec.make(kind, **fields)` or `BlockSpec.parse(key)`; both raise BlockKeyError
    naming the kind, the field and the allowed values when something does not fit.
    """

    kind: str
    params: tuple[tuple[str, int | str], ...]

    @classmethod
    def make(cls, kind: str, **values: int | str) -> "BlockSpec":
        fields = get_kind(kind).fields
        missing = [f for f in fields if f not in values]
        extra = [f for f in values if f not in fields]
        if missing or extra:
            raise BlockKeyError(
                f"block kind {kind!r} takes fields {','.join(fields)}; "
                f"missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
        return cls(kind, tuple((name, _checked(kind, name, values[name])) for name in fields))

    @classmethod
    def parse(cls, key: str) -> "BlockSpec":
        """Inverse of `key`; any deviation from the canonical form is an error naming the key."""
        kind, sep, rest = key.strip().partition(":")
        if not sep or not rest:
            raise BlockKeyError(
                f"block key {key!r} is not of the form KIND:field=value,... "
                f"(e.g. mbconv:hw=56,cin=24,cout=32,k=5,s=2,e=4,se=1,act=hswish)"
            )
        values: dict[str, int | str] = {}
        for item in rest.split(","):
            name, eq, raw = item.partition("=")
            if not eq or not name or not raw:
                raise BlockKeyError(f"block key {key!r}: {item!r} is not field=value")
            if name in STRING_FIELDS:
                values[name] = raw
            else:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise BlockKeyError(f"block key {key!r}: {name}={raw!r} is not an integer") from None
        return cls.make(kind, **values)

    @cached_property
    def key(self) -> str:
        # Cached: indexing a space asks a block for its key ~1M times (profiled: 40% of building
        # a LUT index); the dataclass compares and hashes only `kind` and `params`.
        return f"{self.kind}:" + ",".join(f"{n}={v}" for n, v in self.params)

    @property
    def record(self) -> BlockKind:
        """The kind's registry record."""
        return get_kind(self.kind)

    @property
    def is_operator(self) -> bool:
        return self.record.is_operator

    def __getattr__(self, name: str) -> int | str:
        # Only reached for names that are not dataclass fields: the shape parameters.
        for field_name, value in object.__getattribute__(self, "params"):
            if field_name == name:
                return value
        raise AttributeError(f"{self.kind} block has no field {name!r}")

    def as_dict(self) -> dict[str, int | str]:
        return dict(self.params)

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The input tensor's shape with a leading batch dimension."""
        return (batch, *self.record.input_shape(self.as_dict()))

    def output_elements(self) -> int:
        """Values in the block's output tensor (what the next block must read)."""
        return int(self.record.output_elements(self.as_dict()))

    def operators(self) -> list["BlockSpec"]:
        """The operators the block executes, for operator-level profiling; an operator is its own."""
        record = self.record
        if record.operators is None:
            return [self]
        return list(record.operators(self.as_dict()))

    def __str__(self) -> str:
        return self.key


def _checked(kind: str, name: str, value: object) -> int | str:
    if name in STRING_FIELDS:
        if value not in ACTIVATIONS:
            raise BlockKeyError(f"{kind}: act={value!r} is not one of {', '.join(ACTIVATIONS)}")
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BlockKeyError(f"{kind}: {name}={value!r} must be a non-negative integer")
    return int(value)


def as_specs(items: object) -> list[BlockSpec]:
    """BlockSpecs from an iterable of specs or keys (keys are parsed; a bad key raises BlockKeyError)."""
    return [item if isinstance(item, BlockSpec) else BlockSpec.parse(str(item))
            for item in items]  # type: ignore[attr-defined]
