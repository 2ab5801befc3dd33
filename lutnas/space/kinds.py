"""The `BlockKind` registry: one record per block or operator kind, and nothing else switches on kinds.

A record says everything the torch-free layers need to know about a kind: its key fields (in key
order), the shape of its input, the size of its output, the operators it executes and its analytic
cost. The torch module that implements a kind is registered separately in `supernet/blocks.py`
(`register_module`), so adding a kind is one record here (or in user code) plus its module class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lutnas.errors import BlockKeyError

Params = Mapping[str, Any]


@dataclass(frozen=True)
class BlockKind:
    """Everything lutnas knows about one kind of block or operator.

    name: the key prefix (`mbconv` in `mbconv:hw=56,...`).
    fields: the key's fields in canonical order (the order is part of the key format).
    input_shape: params -> input shape without the batch dimension (NCHW for maps, (N, C) for tokens).
    output_elements: params -> values in the output tensor (what the next block reads).
    cost: (tally, params) -> None; adds each layer's MACs, weights and activation traffic.
    operators: params -> the operator BlockSpecs the block executes; None for an operator kind.
    spatial_input: True when the input is an NCHW map (exported to TFLite with NHWC I/O).
    parallel_field: the channel-like field a kernel vectorises over (learned-predictor feature).
    """

    name: str
    fields: tuple[str, ...]
    input_shape: Callable[[Params], tuple[int, ...]]
    output_elements: Callable[[Params], int]
    cost: Callable[[Any, Params], None]
    operators: Callable[[Params], list[Any]] | None = None
    spatial_input: bool = True
    parallel_work: Callable[[Params], int] | None = None

    @property
    def is_operator(self) -> bool:
        return self.operators is None


_KINDS: dict[str, BlockKind] = {}


def register_kind(kind: BlockKind, replace: bool = False) -> BlockKind:
    """Add a kind to the registry; returns it. Raises BlockKeyError for a taken name unless `replace`."""
    if kind.name in _KINDS and not replace:
        raise BlockKeyError(f"block kind {kind.name!r} is already registered; pass replace=True")
    if not kind.name.isidentifier():
        raise BlockKeyError(f"block kind name {kind.name!r} must be an identifier")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Remove a kind (tests that register a toy kind clean up with this)."""
    _KINDS.pop(name, None)


def get_kind(name: str) -> BlockKind:
    """The record of `name`; raises BlockKeyError naming the known kinds."""
    try:
        return _KINDS[name]
    except KeyError:
        raise BlockKeyError(f"unknown block kind {name!r}; known kinds: {', '.join(_KINDS)}") from None


def all_kinds() -> dict[str, BlockKind]:
    """Name -> record, in registration order (a copy)."""
    return dict(_KINDS)


def kind_fields() -> dict[str, tuple[str, ...]]:
    """Name -> key fields of every registered kind."""
    return {name: kind.fields for name, kind in _KINDS.items()}
