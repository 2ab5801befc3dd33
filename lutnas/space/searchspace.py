"""Search spaces (declarative YAML) and the subnet configurations they admit (no torch).

`SearchSpace.blocks_of(config)` is the single place that says which blocks a subnet executes; the
profiling plan, the lookup-table sum, the static model and the supernet all follow it.
`layers_of(config)` adds each block's slot (stage, position): where the supernet keeps its weights.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lutnas.errors import ConfigError, SpaceFileError, UnknownSpaceError
from lutnas.space.blockspec import BlockSpec
from lutnas.space.complexity import Complexity, total_complexity
from lutnas.space.stages import MBCONV, PLURAL, TRANSFORMER, get_stage_type
from lutnas.space.vocabulary import ACTIVATIONS, conv_out

__all__ = ["BUILTIN_SPACES", "MBCONV", "TRANSFORMER", "STEM_FIELDS", "SearchSpace", "StageChoice",
           "StageSpace", "StemChoice", "StemSpace", "SubnetConfig", "Slot"]

# A block's slot: (group, position). Group 0 is the stem (position 0 its conv), groups 1..n the
# stages, group n+1 the head.
Slot = tuple[int, int]
BUILTIN_SPACES = ("elasticvit", "tiny")
STEM_FIELDS = ("width", "depth", "kernel")

@dataclass(frozen=True)
class StemSpace:
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    kernel: int = 3
    stride: int = 2

    def choices(self) -> dict[str, tuple[int, ...]]:
        return {"width": self.widths, "depth": self.depths, "kernel": self.kernels}


@dataclass(frozen=True)
class StageSpace:
    name: str
    type: str
    stride: int
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    expands: tuple[int, ...] = ()
    kernels: tuple[int, ...] = ()
    se: bool = False
    mlp_ratios: tuple[int, ...] = ()
    v_scales: tuple[int, ...] = ()
    head_dim: int = 16

    @property
    def fields(self) -> tuple[str, ...]:
        """Choice fields of this stage's type, in config order (depth first)."""
        return get_stage_type(self.type).fields

    def choices(self) -> dict[str, tuple[int, ...]]:
        return {f: getattr(self, PLURAL[f]) for f in self.fields}


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


@dataclass(frozen=True)
class SubnetConfig:
    resolution: int
    stem: StemChoice
    stages: tuple[StageChoice, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "stem": asdict(self.stem),
            "stages": [{k: v for k, v in asdict(s).items() if v} for s in self.stages],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> "SubnetConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a subnet config is a JSON object, got {type(data).__name__}")
        try:
            stem = StemChoice(**data["stem"])
            stages = tuple(StageChoice(**s) for s in data["stages"])
            return cls(int(data["resolution"]), stem, stages)
        except KeyError as exc:
            raise ConfigError(
                f"subnet config misses {exc}; expected keys resolution, stem, stages"
            ) from None
        except TypeError as exc:
            raise ConfigError(f"subnet config has an unexpected field: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "SubnetConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"subnet config is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _ints(raw: Any, where: str) -> tuple[int, ...]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in raw
    ):
        raise SpaceFileError(f"{where} must be a non-empty list of positive integers, got {raw!r}")
    return tuple(sorted(set(raw)))


@dataclass(frozen=True)
class SearchSpace:
    name: str
    num_classes: int
    activation: str
    resolutions: tuple[int, ...]
    stem: StemSpace
    stages: tuple[StageSpace, ...]
    downsample_expand: int = 6
    downsample_kernel: int = 3
    downsample_se: bool = True
    head_expand: int = 6
    head_hidden: int = 1984
    source: str = field(default="", compare=False)

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, name_or_path: str | Path) -> "SearchSpace":
        """A built-in name (`elasticvit`, `tiny`) or the path of a YAML file."""
        text_name = str(name_or_path)
        if text_name in BUILTIN_SPACES:
            text = resources.files("lutnas.space.builtin").joinpath(f"{text_name}.yaml").read_text()
            return cls.from_yaml(text, source=text_name)
        path = Path(text_name)
        if not path.is_file():
            raise UnknownSpaceError(
                f"unknown search space {text_name!r}: use one of {', '.join(BUILTIN_SPACES)} "
                f"or the path of a space YAML file"
            )
        return cls.from_yaml(path.read_text(), source=str(path))

    @classmethod
    def from_yaml(cls, text: str, source: str = "<yaml>") -> "SearchSpace":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "parse error"
            raise SpaceFileError(f"{source}: not valid YAML ({first}); fix the file") from None
        if not isinstance(data, dict):
            raise SpaceFileError(f"{source}: a space file is a YAML mapping, got {type(data).__name__}")
        try:
            return cls._from_mapping(data, source)
        except KeyError as exc:
            raise SpaceFileError(f"{source}: missing required key {exc}") from None

    @classmethod
    def _from_mapping(cls, data: dict[str, Any], source: str) -> "SearchSpace":
        act = data.get("activation", "hswish")
        if act not in ACTIVATIONS:
            raise SpaceFileError(f"{source}: activation {act!r} is not one of {ACTIVATIONS}")
        stem_raw = data["stem"]
        stem = StemSpace(
            widths=_ints(stem_raw["widths"], f"{source}: stem.widths"),
            depths=_ints(stem_raw.get("depths", [1]), f"{source}: stem.depths"),
            kernels=_ints(stem_raw.get("kernels", [3]), f"{source}: stem.kernels"),
            kernel=int(stem_raw.get("kernel", 3)), stride=int(stem_raw.get("stride", 2)),
        )
        stages = []
        raw_stages = data["stages"]
        if not isinstance(raw_stages, list) or not raw_stages:
            raise SpaceFileError(f"{source}: stages must be a non-empty list")
        for index, raw in enumerate(raw_stages):
            stages.append(_parse_stage(raw, f"{source}: stage {index + 1}", index))
        down = data.get("downsample", {})
        head = data.get("head", {})
        return cls(
            name=str(data.get("name", source)), num_classes=int(data.get("num_classes", 1000)),
            activation=act, resolutions=_ints(data["resolutions"], f"{source}: resolutions"),
            stem=stem, stages=tuple(stages),
            downsample_expand=int(down.get("expand", 6)), downsample_kernel=int(down.get("kernel", 3)),
            downsample_se=bool(down.get("se", True)), head_expand=int(head.get("expand", 6)),
            head_hidden=int(head.get("hidden", 1984)), source=source,
        )

    # ---------------------------------------------------------------- configs
    def validate(self, config: SubnetConfig) -> SubnetConfig:
        """Return the config unchanged, or raise naming the stage, field, value and allowed values."""
        if config.resolution not in self.resolutions:
            raise ConfigError(f"resolution={config.resolution} is not in {list(self.resolutions)} "
                              f"of space {self.name!r}")
        for name, allowed in self.stem.choices().items():
            value = getattr(config.stem, name)
            if value not in allowed:
                raise ConfigError(f"stem: {name}={value} is not one of {list(allowed)}")
        if len(config.stages) != len(self.stages):
            raise ConfigError(f"space {self.name!r} has {len(self.stages)} stages, "
                              f"config has {len(config.stages)}")
        for stage, choice in zip(self.stages, config.stages):
            for name, allowed in stage.choices().items():
                value = getattr(choice, name)
                if value not in allowed:
                    raise ConfigError(f"{stage.name} ({stage.type}): {name}={value} "
                                      f"is not one of {list(allowed)}")
            unused = [f for f in PLURAL if f not in stage.fields and getattr(choice, f)]
            if unused:
                raise ConfigError(f"{stage.name} ({stage.type}): fields {unused} do not apply; "
                                  f"allowed fields are {list(stage.fields)}")
        return config

    def config_from_json(self, text: str) -> SubnetConfig:
        return self.validate(SubnetConfig.from_json(text))

    def sample(self, rng: random.Random) -> SubnetConfig:
        stem = StemChoice(**{k: rng.choice(v) for k, v in self.stem.choices().items()})
        stages = tuple(StageChoice(**{k: rng.choice(v) for k, v in s.choices().items()})
                       for s in self.stages)
        return SubnetConfig(rng.choice(self.resolutions), stem, stages)

    def _extreme(self, pick: Any) -> SubnetConfig:
        stem = StemChoice(**{k: pick(v) for k, v in self.stem.choices().items()})
        stages = tuple(StageChoice(**{k: pick(v) for k, v in s.choices().items()})
                       for s in self.stages)
        return SubnetConfig(pick(self.resolutions), stem, stages)

    def largest(self) -> SubnetConfig:
        return self._extreme(max)

    def smallest(self) -> SubnetConfig:
        return self._extreme(min)

    def mutate(self, config: SubnetConfig, rng: random.Random, prob: float) -> SubnetConfig:
        """Resample each choice independently with probability `prob`."""
        def maybe(value: int, allowed: tuple[int, ...]) -> int:
            return rng.choice(allowed) if rng.random() < prob else value

        resolution = maybe(config.resolution, self.resolutions)
        stem = StemChoice(**{k: maybe(getattr(config.stem, k), v)
                             for k, v in self.stem.choices().items()})
        stages = tuple(
            replace(choice, **{k: maybe(getattr(choice, k), v) for k, v in stage.choices().items()})
            for stage, choice in zip(self.stages, config.stages)
        )
        return SubnetConfig(resolution, stem, stages)

    def crossover(self, a: SubnetConfig, b: SubnetConfig, rng: random.Random) -> SubnetConfig:
        """Uniform crossover: each choice comes from either parent with equal probability."""
        def pick(x: Any, y: Any) -> Any:
            return x if rng.random() < 0.5 else y

        stem = StemChoice(**{k: pick(getattr(a.stem, k), getattr(b.stem, k)) for k in STEM_FIELDS})
        stages = tuple(
            StageChoice(**{k: pick(getattr(sa, k), getattr(sb, k)) for k in st.fields})
            for st, sa, sb in zip(self.stages, a.stages, b.stages)
        )
        return SubnetConfig(pick(a.resolution, b.resolution), stem, stages)

    def num_subnets(self) -> int:
        count = len(self.resolutions) * math.prod(len(v) for v in self.stem.choices().values())
        for stage in self.stages:
            count *= math.prod(len(v) for v in stage.choices().values())
        return count

    # ---------------------------------------------------------------- blocks
    def stem_blocks(self, resolution: int, width: int, depth: int, kernel: int) -> list[BlockSpec]:
        act = self.activation
        blocks = [BlockSpec.make("conv", hw=resolution, cin=3, cout=width, k=self.stem.kernel,
                                 s=self.stem.stride, act=act)]
        hw = conv_out(resolution, self.stem.stride)
        blocks += [BlockSpec.make("mbconv", hw=hw, cin=width, cout=width, k=kernel, s=1, e=1, se=0,
                                  act=act)] * depth
        return blocks

    def stage_blocks(self, stage: StageSpace, hw: int, cin: int, choice: StageChoice) -> list[BlockSpec]:
        """Blocks of one stage given its input size and width, in execution order."""
        return get_stage_type(stage.type).blocks(self, stage, hw, cin, choice)

    def head_block(self, hw: int, cin: int) -> BlockSpec:
        return BlockSpec.make("head", hw=hw, cin=cin, cmid=self.head_expand * cin,
                              chid=self.head_hidden, ncls=self.num_classes, act=self.activation)

    def blocks_of(self, config: SubnetConfig) -> list[BlockSpec]:
        """The subnet's blocks in execution order; their composition is its static model.

        Raises ConfigError when `config` does not fit the space (naming stage, field and values)."""
        return [spec for _, spec in self.layers_of(config)]

    def layers_of(self, config: SubnetConfig) -> list[tuple[Slot, BlockSpec]]:
        """`blocks_of` with each block's slot (group, position); see `Slot`."""
        self.validate(config)
        stem = self.stem_blocks(config.resolution, config.stem.width, config.stem.depth,
                                config.stem.kernel)
        layers: list[tuple[Slot, BlockSpec]] = [((0, i), spec) for i, spec in enumerate(stem)]
        hw = conv_out(config.resolution, self.stem.stride)
        cin = config.stem.width
        for group, (stage, choice) in enumerate(zip(self.stages, config.stages), start=1):
            specs = self.stage_blocks(stage, hw, cin, choice)
            layers += [((group, i), spec) for i, spec in enumerate(specs)]
            hw, cin = conv_out(hw, stage.stride), choice.width
        layers.append(((len(self.stages) + 1, 0), self.head_block(hw, cin)))
        return layers

    def complexity(self, config: SubnetConfig) -> Complexity:
        return total_complexity(self.blocks_of(config))

    def unique_blocks(self, resolutions: Iterable[int] | None = None) -> list[BlockSpec]:
        """Every distinct block some subnet executes, without enumerating subnets.

        A stage's blocks depend only on its input size, its input width (the previous stage's width
        choice) and its own choices, so walking stage by stage over reachable (size, width) pairs
        covers every subnet in a few thousand steps even for `elasticvit`.
        """
        seen: dict[str, BlockSpec] = {}

        def add(specs: Iterable[BlockSpec]) -> None:
            for spec in specs:
                seen.setdefault(spec.key, spec)

        for resolution in resolutions or self.resolutions:
            if resolution not in self.resolutions:
                raise ConfigError(f"resolution {resolution} is not in {list(self.resolutions)} "
                                  f"of space {self.name!r}")
            hw = conv_out(resolution, self.stem.stride)
            widths_in = set()
            for width, kernel in itertools.product(self.stem.widths, self.stem.kernels):
                add(self.stem_blocks(resolution, width, max(self.stem.depths), kernel))
                widths_in.add(width)
            for stage in self.stages:
                for cin in sorted(widths_in):
                    for values in _product(stage.choices(), exclude="depth"):
                        choice = StageChoice(depth=max(stage.depths), **values)
                        add(self.stage_blocks(stage, hw, cin, choice))
                hw, widths_in = conv_out(hw, stage.stride), set(stage.widths)
            for cin in sorted(widths_in):
                add([self.head_block(hw, cin)])
        return list(seen.values())


def _product(choices: dict[str, tuple[int, ...]], exclude: str) -> Iterator[dict[str, int]]:
    names = [n for n in choices if n != exclude]
    for values in itertools.product(*(choices[n] for n in names)):
        yield dict(zip(names, values))


def _parse_stage(raw: Any, where: str, index: int) -> StageSpace:
    """One stage of a space YAML; raises SpaceFileError naming the stage and key."""
    if not isinstance(raw, dict):
        raise SpaceFileError(f"{where}: a stage is a mapping, got {type(raw).__name__}")
    stage_type = get_stage_type(raw.get("type"), where)
    values: dict[str, Any] = {
        PLURAL[f]: _ints(raw[PLURAL[f]], f"{where}.{PLURAL[f]}") for f in stage_type.fields
    }
    for key, parse, default in stage_type.options:
        values[key] = parse(raw.get(key, default))
    stage = StageSpace(name=str(raw.get("name", f"stage{index + 1}")), type=stage_type.name,
                       stride=int(raw.get("stride", 1)), **values)
    if stage_type.check is not None:
        stage_type.check(stage, where)
    if stage.stride not in (1, 2):
        raise SpaceFileError(f"{where}: stride must be 1 or 2, got {stage.stride}")
    return stage
