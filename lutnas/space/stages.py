"""Stage types: how a stage of a space YAML turns its choices into blocks (one record per type).

`mbconv` stages are MBConv layers (the first one strided); `transformer` stages open with a
downsample MBConv and then alternate attention and FFN blocks (ElasticViT's layout). A new stage type
is one `StageType` record: the YAML lists it reads, an optional check, and the rule that emits its
blocks. Each block a stage emits sits in a *slot* (its position in the stage), which is where the
supernet keeps that layer's shared weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lutnas.space.fields as F
from lutnas.errors import BlockKeyError, SpaceFileError
from lutnas.space.blockspec import BlockSpec
from lutnas.space.vocabulary import conv_out

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from lutnas.space.searchspace import SearchSpace, StageChoice, StageSpace

MBCONV, TRANSFORMER = "mbconv", "transformer"
# Every choice field a StageChoice can hold, and the YAML list that offers its values.
PLURAL = {"depth": "depths", "width": "widths", "expand": "expands", "kernel": "kernels",
          "mlp_ratio": "mlp_ratios", "v_scale": "v_scales"}
# How each choice field's YAML list is read: positive integers; kernels also odd, because blocks
# pad k // 2, which keeps the spatial size (`conv_out`) only for odd k.
CHOICE_LISTS: dict[str, Callable[[Any], Any]] = {
    field: F.integers(odd=field == "kernel") for field in PLURAL}


@dataclass(frozen=True)
class StageType:
    """One kind of stage.

    fields: its choice fields in config order (always starting with depth, width; names from PLURAL).
    blocks: (space, stage, input hw, input width, choice) -> its blocks in execution order.
    options: YAML keys beyond the choice lists: (key, parser of the raw value, default), e.g. `se`
        read by `fields.boolean`; a parser raises `fields.FieldError` (or ValueError) for a bad
        value, which the loader reports naming the stage and the key.
    check: (stage, where) -> None, raising SpaceFileError for a stage the type cannot build.
    """

    name: str
    fields: tuple[str, ...]
    blocks: Callable[["SearchSpace", "StageSpace", int, int, "StageChoice"], list[BlockSpec]]
    options: tuple[tuple[str, Callable[[Any], Any], Any], ...] = ()
    check: Callable[["StageSpace", str], None] | None = None


_STAGE_TYPES: dict[str, StageType] = {}


def register_stage_type(stage_type: StageType, replace: bool = False) -> StageType:
    """Add a stage type; raises BlockKeyError for a taken name unless `replace`."""
    if stage_type.name in _STAGE_TYPES and not replace:
        raise BlockKeyError(f"stage type {stage_type.name!r} is already registered")
    unknown = [f for f in stage_type.fields if f not in PLURAL]
    if unknown or stage_type.fields[:2] != ("depth", "width"):
        raise BlockKeyError(f"stage type {stage_type.name!r}: fields must start with depth, width "
                            f"and come from {list(PLURAL)}; got {list(stage_type.fields)}")
    _STAGE_TYPES[stage_type.name] = stage_type
    return stage_type


def unregister_stage_type(name: str) -> None:
    _STAGE_TYPES.pop(name, None)


def stage_types() -> dict[str, StageType]:
    """Name -> record of every registered stage type, in registration order (a copy)."""
    return dict(_STAGE_TYPES)


def stage_keys(stage_type: StageType) -> tuple[str, ...]:
    """The keys a stage of this type may have in a space YAML, in the order messages list them."""
    return ("name", "type", "stride", *(PLURAL[f] for f in stage_type.fields),
            *(key for key, _, _ in stage_type.options))


def get_stage_type(name: Any, where: str = "stage") -> StageType:
    """The record of stage type `name`; raises SpaceFileError naming the known types."""
    if not isinstance(name, str) or name not in _STAGE_TYPES:
        raise SpaceFileError(f"{where}: type {name!r} is not one of {list(_STAGE_TYPES)}")
    return _STAGE_TYPES[name]


def _mbconv_blocks(space: "SearchSpace", stage: "StageSpace", hw: int, cin: int,
                   choice: "StageChoice") -> list[BlockSpec]:
    act, se = space.activation, int(stage.se)
    first = BlockSpec.make("mbconv", hw=hw, cin=cin, cout=choice.width, k=choice.kernel,
                           s=stage.stride, e=choice.expand, se=se, act=act)
    rest = BlockSpec.make("mbconv", hw=conv_out(hw, stage.stride), cin=choice.width,
                          cout=choice.width, k=choice.kernel, s=1, e=choice.expand, se=se, act=act)
    return [first] + [rest] * (choice.depth - 1)


def _transformer_blocks(space: "SearchSpace", stage: "StageSpace", hw: int, cin: int,
                        choice: "StageChoice") -> list[BlockSpec]:
    act, ho = space.activation, conv_out(hw, stage.stride)
    down = BlockSpec.make("mbconv", hw=hw, cin=cin, cout=choice.width, k=space.downsample_kernel,
                          s=stage.stride, e=space.downsample_expand, se=int(space.downsample_se),
                          act=act)
    attn = BlockSpec.make("attn", hw=ho, c=choice.width, hd=stage.head_dim, vs=choice.v_scale, act=act)
    ffn = BlockSpec.make("ffn", hw=ho, c=choice.width, r=choice.mlp_ratio, act=act)
    return [down] + [attn, ffn] * choice.depth


def _check_head_dim(stage: "StageSpace", where: str) -> None:
    bad = [w for w in stage.widths if w % stage.head_dim]
    if bad:
        raise SpaceFileError(f"{where}: widths {bad} are not multiples of head_dim {stage.head_dim}")


def register_builtin_stage_types() -> None:
    """Register `mbconv` and `transformer` (idempotent)."""
    register_stage_type(StageType(MBCONV, ("depth", "width", "expand", "kernel"), _mbconv_blocks,
                                  options=(("se", F.boolean, False),)), replace=True)
    register_stage_type(StageType(TRANSFORMER, ("depth", "width", "mlp_ratio", "v_scale"),
                                  _transformer_blocks, options=(("head_dim", F.integer(), 16),),
                                  check=_check_head_dim), replace=True)
