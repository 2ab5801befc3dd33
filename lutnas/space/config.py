"""Subnet configurations: one choice per stage, JSON round trip, and ElasticViT's 10-tuple encoding.

ElasticViT (microsoft/Moonlit, `ElasticViT/models/model.py`, `set_arch`) describes a subnet as
`(resolution, channels, depths, conv_ratios, kernel_sizes, mlp_ratio, num_heads, window_size,
qk_scale, v_scale)`: channels and depths list the stem then every stage; conv ratios and kernel
sizes list every MBConv layer (stem layers first, whose ratio is 1); the last five list every
transformer layer. lutnas takes one value per stage, global attention (window 1) and qk scale 1, so a
tuple whose layers of one stage differ, or that uses windows, does not fit and is refused naming the
element.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from lutnas.errors import ConfigError
from lutnas.space.fields import Section, integer, items
from lutnas.space.stages import MBCONV, TRANSFORMER

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from lutnas.space.searchspace import SearchSpace

__all__ = ["ELASTICVIT_ELEMENTS", "StageChoice", "StemChoice", "SubnetConfig"]

# The 10 elements of ElasticViT's encoding, in order (error messages name them 1-based).
ELASTICVIT_ELEMENTS = ("resolution", "channels", "depths", "conv expand ratios", "conv kernel sizes",
                       "mlp ratios", "num heads", "window sizes", "qk scales", "v scales")


@dataclass(frozen=True)
class StemChoice:
    width: int
    depth: int
    kernel: int


@dataclass(frozen=True)
class StageChoice:
    """One stage's choices; fields that do not apply to the stage type are 0."""

    depth: int
    width: int
    expand: int = 0
    kernel: int = 0
    mlp_ratio: int = 0
    v_scale: int = 0


CONFIG_SOURCE = "subnet config"
CONFIG_KEYS = ("resolution", "stem", "stages")
STEM_KEYS = tuple(f.name for f in fields(StemChoice))
STAGE_KEYS = tuple(f.name for f in fields(StageChoice))
STAGE_REQUIRED = ("depth", "width")
POSITIVE, NON_NEGATIVE, STAGE_LIST = integer(1), integer(0), items("objects, one per stage")


@dataclass(frozen=True)
class SubnetConfig:
    resolution: int
    stem: StemChoice
    stages: tuple[StageChoice, ...]

    def to_dict(self) -> dict[str, Any]:
        # vars(), not asdict(): the choices are flat ints, and search writes ~10k configs a run
        # (asdict's recursive copy was 40% of writing candidates.csv)
        return {
            "resolution": self.resolution,
            "stem": dict(vars(self.stem)),
            "stages": [{k: v for k, v in vars(s).items() if v} for s in self.stages],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, source: str = CONFIG_SOURCE) -> SubnetConfig:
        """The config a parsed JSON object describes (not yet checked against a space: see
        `SearchSpace.validate`); `source` names it in messages (e.g. the file it came from).

        Raises ConfigError naming the key path: unknown keys first, at every level (with the close
        match and the allowed keys), then a missing key, then a value that is not an integer
        (strings and booleans are not) or is out of range (fields that do not apply may be 0)."""
        # Every mapping's keys are checked before any value is read or any key found missing, so
        # a typo is reported as such rather than as the key it hides being missing.
        top = Section.of(data, source, "", CONFIG_KEYS, ConfigError)
        stem = top.section("stem", STEM_KEYS) if "stem" in top.raw else None
        stages = None
        if "stages" in top.raw:
            stages = [Section.of(raw, source, f"stage {index}", STAGE_KEYS, ConfigError)
                      for index, raw in enumerate(top.get("stages", STAGE_LIST), start=1)]
        resolution = top.get("resolution", POSITIVE)
        stem = stem or top.section("stem", STEM_KEYS)
        stages = stages or top.get("stages", STAGE_LIST)
        return cls(resolution, StemChoice(**{k: stem.get(k, POSITIVE) for k in STEM_KEYS}),
                   tuple(_stage_choice(stage) for stage in stages))

    @classmethod
    def from_json(cls, text: str) -> SubnetConfig:
        """`from_dict` of a JSON text; raises ConfigError for text that is not JSON, a key given
        twice in one object, or what `from_dict` refuses."""
        return cls.from_dict(loads_json(text, CONFIG_SOURCE))

    # ---------------------------------------------------------------- ElasticViT's encoding
    def to_elasticvit(self, space: SearchSpace) -> tuple[Any, ...]:
        """ElasticViT's 10-tuple for this config (validated against `space` first).

        Returns (resolution, channels, depths, conv ratios, kernels, mlp ratios, heads, windows,
        qk scales, v scales), the lists as lists (JSON-ready). Raises ConfigError when the space has
        a stage type the encoding cannot express (only `mbconv` and `transformer` stages can)."""
        space.validate(self)
        conv_ratios, kernels = [1] * self.stem.depth, [self.stem.kernel] * self.stem.depth
        mlp, heads, vs = [], [], []
        for stage, choice in zip(space.stages, self.stages):
            if stage.type == MBCONV:
                conv_ratios += [choice.expand] * choice.depth
                kernels += [choice.kernel] * choice.depth
            elif stage.type == TRANSFORMER:
                mlp += [choice.mlp_ratio] * choice.depth
                heads += [choice.width // stage.head_dim] * choice.depth
                vs += [choice.v_scale] * choice.depth
            else:
                raise ConfigError(f"{stage.name} is a {stage.type!r} stage, which ElasticViT's "
                                  f"encoding cannot express (it has mbconv and transformer stages)")
        return (self.resolution, [self.stem.width] + [s.width for s in self.stages],
                [self.stem.depth] + [s.depth for s in self.stages], conv_ratios, kernels, mlp, heads,
                [1] * len(mlp), [1] * len(mlp), vs)

    @classmethod
    def from_elasticvit(cls, encoding: Sequence[Any], space: SearchSpace) -> SubnetConfig:
        """The config ElasticViT's 10-tuple describes, validated against `space`.

        Raises ConfigError naming the element (1-based, with its name) that does not fit: a wrong
        length, per-layer values that differ inside a stage, a window size or qk scale other than 1,
        head counts that disagree with width / head_dim, or a value outside the space."""
        if isinstance(encoding, str | bytes) or not isinstance(encoding, Sequence) \
                or len(encoding) != len(ELASTICVIT_ELEMENTS):
            raise ConfigError(f"ElasticViT's encoding is a list of {len(ELASTICVIT_ELEMENTS)} elements "
                              f"({', '.join(ELASTICVIT_ELEMENTS)}); got {_describe(encoding)}")
        reader = _TupleReader(encoding, space)
        config = reader.config()
        try:
            return space.validate(config)
        except ConfigError as exc:
            raise ConfigError(f"ElasticViT encoding does not fit space {space.name!r}: {exc}") from None


def _stage_choice(stage: Section) -> StageChoice:
    """One stage of a config JSON; depth and width are required, the others default to 0."""
    return StageChoice(**{key: stage.get(key, POSITIVE) if key in STAGE_REQUIRED
                          else stage.get(key, NON_NEGATIVE, 0) for key in STAGE_KEYS})


def loads_json(text: str, source: str, hint: str = "") -> Any:
    """Parsed JSON; raises ConfigError naming `source` for invalid JSON (adding `hint`) or a key
    given twice in one object (json keeps the last one silently)."""
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(pairs, source))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not valid JSON ({exc}){hint}") from None


def _unique_keys(pairs: list[tuple[str, Any]], source: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(f"{source}: key {key!r} is given twice in one JSON object; keep one")
        seen[key] = value
    return seen


def _describe(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return f"{len(value)} elements"
    return type(value).__name__


class _TupleReader:
    """Reads ElasticViT's 10-tuple stage by stage, with errors that name the element and stage."""

    def __init__(self, encoding: Sequence[Any], space: SearchSpace) -> None:
        self.raw, self.space = encoding, space
        self.lists = {i: self._ints(i) for i in range(1, len(ELASTICVIT_ELEMENTS))}
        stages = space.stages
        self.conv_layers = [s for s in stages if s.type == MBCONV]
        self.attn_layers = [s for s in stages if s.type == TRANSFORMER]
        other = [s for s in stages if s.type not in (MBCONV, TRANSFORMER)]
        if other:
            raise ConfigError(f"{other[0].name} is a {other[0].type!r} stage, which ElasticViT's "
                              f"encoding cannot express (it has mbconv and transformer stages)")

    def _where(self, index: int) -> str:
        return f"element {index + 1} ({ELASTICVIT_ELEMENTS[index]})"

    def _int(self, value: Any, index: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ConfigError(f"{self._where(index)}: {value!r} is not an integer")
        return int(value)

    def _ints(self, index: int) -> list[int]:
        value = self.raw[index]
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ConfigError(f"{self._where(index)} is a list, got {value!r}")
        return [self._int(v, index) for v in value]

    def _take(self, index: int, cursor: list[int], count: int, stage: str) -> int:
        """The one value of `count` layers from list `index` at `cursor`; errors if they differ."""
        values = self.lists[index][cursor[0]:cursor[0] + count]
        cursor[0] += count
        if len(set(values)) > 1:
            raise ConfigError(f"{self._where(index)}: {stage} layers have {values}; lutnas takes one "
                              f"value per stage, so every layer of a stage must agree")
        return values[0]

    def _check_lengths(self, channels: list[int], depths: list[int]) -> None:
        want = 1 + len(self.space.stages)
        for index, values in ((1, channels), (2, depths)):
            if len(values) != want:
                raise ConfigError(f"{self._where(index)} has {len(values)} values; space "
                                  f"{self.space.name!r} needs {want} (stem and {want - 1} stages)")
        stages = self.space.stages
        conv = depths[0] + sum(d for s, d in zip(stages, depths[1:]) if s.type == MBCONV)
        attn = sum(d for s, d in zip(stages, depths[1:]) if s.type == TRANSFORMER)
        for index in range(3, 10):
            need, what = (conv, "MBConv layers (stem included)") if index < 5 else \
                (attn, "transformer layers")
            if len(self.lists[index]) != need:
                raise ConfigError(f"{self._where(index)} has {len(self.lists[index])} values; the "
                                  f"depths (element 3) give {need} {what}")

    def config(self) -> SubnetConfig:
        channels, depths = self.lists[1], self.lists[2]
        self._check_lengths(channels, depths)
        if min(depths) < 1:
            raise ConfigError(f"{self._where(2)}: depths {depths} must be at least 1")
        conv, attn = [0], [0]
        ratio = self._take(3, [0], depths[0], "stem")
        if ratio != 1:
            raise ConfigError(f"{self._where(3)}: stem layers have ratio {ratio}; the stem's MBConv "
                              f"layers do not expand (1)")
        conv[0] = depths[0]
        stem = StemChoice(channels[0], depths[0], self._take(4, [0], depths[0], "stem"))
        stages = [self._stage(stage, width, depth, conv, attn)
                  for stage, width, depth in zip(self.space.stages, channels[1:], depths[1:])]
        return SubnetConfig(self._int(self.raw[0], 0), stem, tuple(stages))

    def _stage(self, stage: Any, width: int, depth: int, conv: list[int], attn: list[int]) -> StageChoice:
        if stage.type == MBCONV:
            start = conv[0]
            expand = self._take(3, conv, depth, stage.name)
            return StageChoice(depth, width, expand=expand,
                               kernel=self._take(4, [start], depth, stage.name))
        start = attn[0]
        values = {i: self._take(i, [start], depth, stage.name) for i in range(5, 10)}
        attn[0] += depth
        if values[6] != width // stage.head_dim:
            raise ConfigError(f"{self._where(6)}: {stage.name} has {values[6]} heads; its width "
                              f"{width} / head dim {stage.head_dim} gives {width // stage.head_dim}")
        for index in (7, 8):
            if values[index] != 1:
                raise ConfigError(f"{self._where(index)}: {stage.name} has {values[index]}; lutnas "
                                  f"supports only 1 (global attention, qk dim = head dim)")
        return StageChoice(depth, width, mlp_ratio=values[5], v_scale=values[9])


def elasticvit_or_none(config: SubnetConfig, space: SearchSpace) -> tuple[Any, ...] | None:
    """`config.to_elasticvit(space)`, or None when the space has stages the encoding cannot express
    (records such as search's best.json carry the tuple only where it means something)."""
    try:
        return config.to_elasticvit(space)
    except ConfigError:
        return None
