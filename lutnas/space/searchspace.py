"""Search spaces (declarative YAML) and the subnet configurations they admit (no torch).

`SearchSpace.blocks_of(config)` is the single place that says which blocks a subnet executes; the
profiling plan, the lookup-table sum, the static model and the supernet all follow it.
`layers_of(config)` adds each block's slot (stage, position): where the supernet keeps its weights.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

import lutnas.space.fields as F
import lutnas.space.widths as W
from lutnas.errors import ConfigError, SpaceFileError, UnknownSpaceError
from lutnas.space.blockspec import BlockSpec
from lutnas.space.complexity import Complexity, total_complexity
from lutnas.space.config import StageChoice, StemChoice, SubnetConfig
from lutnas.space.paths import is_dir, is_file, looks_like_path
from lutnas.space.stages import (
    CHOICE_LISTS,
    MBCONV,
    PLURAL,
    TRANSFORMER,
    get_stage_type,
    stage_keys,
    stage_types,
)
from lutnas.space.vocabulary import ACTIVATIONS, conv_out

__all__ = ["BUILTIN_SPACES", "MBCONV", "TRANSFORMER", "STEM_FIELDS", "SearchSpace", "StageChoice",
           "StageSpace", "StemChoice", "StemSpace", "SubnetConfig", "Slot"]

# A block's slot: (group, position). Group 0 is the stem (position 0 its conv), groups 1..n the
# stages, group n+1 the head.
Slot = tuple[int, int]
BUILTIN_SPACES = ("elasticvit", "tiny", "evmini")
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


# The keys a space YAML may hold, per mapping (a stage's keys depend on its type: `stage_keys`).
SPACE_KEYS = ("name", "num_classes", "activation", "resolutions", "monotone_widths", "stem", "stages",
              "downsample", "head")
STEM_KEYS = ("widths", "depths", "kernels", "kernel", "stride")
DOWNSAMPLE_KEYS = ("expand", "kernel", "se")
HEAD_KEYS = ("expand", "hidden")
# Sizes are positive; kernels also odd, as a stage's kernel list is read (stages.CHOICE_LISTS says
# why): the stem's and the downsampling blocks' kernels follow the same rule.
SIZE, SIZES = F.integer(), F.integers()
KERNEL, KERNELS = F.integer(odd=True), CHOICE_LISTS["kernel"]


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently, so a repeated `head:` would drop the first one's settings)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` may legitimately repeat keys it merges
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # SafeLoader refuses it itself, with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


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
    # Only subnets whose widths never shrink from the stem through the last stage (ElasticViT's rule).
    monotone_widths: bool = False
    source: str = field(default="", compare=False)

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, name_or_path: str | Path) -> "SearchSpace":
        """A built-in name (`elasticvit`, `tiny`, `evmini`) or the path of a YAML file.

        Raises UnknownSpaceError for a name that is neither (saying so when a path-like name is no
        file) and SpaceFileError for a file that is unreadable or not a valid space (`from_yaml`)."""
        text_name = str(name_or_path)
        if text_name in BUILTIN_SPACES:
            text = resources.files("lutnas.space.builtin").joinpath(f"{text_name}.yaml").read_text()
            return cls.from_yaml(text, source=text_name)
        path = Path(text_name)
        text = _read_space_file(path)
        return cls.from_yaml(text, source=str(path))

    @classmethod
    def from_yaml(cls, text: str, source: str = "<yaml>") -> "SearchSpace":
        """The space a YAML text describes. Raises SpaceFileError naming the line of a syntax
        error, or the key path, what is allowed and what was given for an unknown key, a missing
        key, or a value of the wrong type or range (see `lutnas.space.fields`)."""
        try:
            data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
        except yaml.YAMLError as exc:
            raise SpaceFileError(f"{source}: not valid YAML ({_yaml_problem(exc)}); fix the file") from None
        return cls._from_mapping(data, source)

    @classmethod
    def _from_mapping(cls, data: Any, source: str) -> "SearchSpace":
        top = F.Section.of(data, source, "", SPACE_KEYS, SpaceFileError)
        part = top.section("stem", STEM_KEYS)
        stem = StemSpace(widths=part.get("widths", SIZES), depths=part.get("depths", SIZES, [1]),
                         kernels=part.get("kernels", KERNELS, [3]), kernel=part.get("kernel", KERNEL, 3),
                         stride=part.get("stride", SIZE, 2))
        stages = tuple(_parse_stage(raw, source, index) for index, raw in
                       enumerate(top.get("stages", F.items("mappings, one per stage")), start=1))
        down = top.section("downsample", DOWNSAMPLE_KEYS, {})
        head = top.section("head", HEAD_KEYS, {})
        monotone = top.get("monotone_widths", F.boolean, False)
        space = cls(
            name=top.get("name", F.text) if "name" in top.raw else source,
            num_classes=top.get("num_classes", SIZE, 1000),
            activation=top.get("activation", F.one_of(ACTIVATIONS), "hswish"),
            resolutions=top.get("resolutions", SIZES), stem=stem, stages=stages,
            downsample_expand=down.get("expand", SIZE, 6), downsample_kernel=down.get("kernel", KERNEL, 3),
            downsample_se=down.get("se", F.boolean, True), head_expand=head.get("expand", SIZE, 6),
            head_hidden=head.get("hidden", SIZE, 1984), monotone_widths=monotone, source=source,
        )
        if monotone and W.lowest_chain(space.width_options()) is None:
            raise SpaceFileError(f"{source}: monotone_widths is true but no choice of widths is "
                                 f"non-decreasing from the stem to the last stage; widen the lists "
                                 f"or set monotone_widths: false")
        return space

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
        shrinking = self.shrinking_widths(config)
        if shrinking:
            raise ConfigError(f"space {self.name!r} has monotone_widths (no stage narrower than the "
                              f"one before): {'; '.join(shrinking)}; widen the later stage")
        return config

    # ---------------------------------------------------------------- width chains
    def width_options(self) -> list[tuple[int, ...]]:
        """Allowed widths of the stem, then of every stage (sorted)."""
        return [self.stem.widths] + [stage.widths for stage in self.stages]

    def width_names(self) -> list[str]:
        return ["stem"] + [stage.name for stage in self.stages]

    @staticmethod
    def width_chain(config: SubnetConfig) -> list[int]:
        """The config's widths: the stem's, then each stage's."""
        return [config.stem.width] + [stage.width for stage in config.stages]

    @staticmethod
    def with_widths(config: SubnetConfig, chain: list[int]) -> SubnetConfig:
        """`config` with the stem's and stages' widths replaced by `chain` (the same object when
        nothing changes: search calls this ~40k times a run, mostly with the widths it has)."""
        if list(chain) == SearchSpace.width_chain(config):
            return config
        stem = config.stem if config.stem.width == chain[0] else replace(config.stem, width=chain[0])
        return SubnetConfig(config.resolution, stem,
                            tuple(s if s.width == w else replace(s, width=w)
                                  for s, w in zip(config.stages, chain[1:])))

    def shrinking_widths(self, config: SubnetConfig) -> list[str]:
        """Where `config`'s widths shrink, e.g. ['stage4 width=80 < stage3 width=96'], when the space
        has `monotone_widths`; always [] otherwise (an empty list: the config's widths are fine)."""
        if not self.monotone_widths:
            return []
        return W.decreases(self.width_chain(config), self.width_names())

    def repair_widths(self, config: SubnetConfig) -> SubnetConfig:
        """`config` with shrinking widths fixed (`widths.repair_chain`) when the space is monotone;
        unchanged otherwise. For samplers that build configs choice by choice."""
        if not self.monotone_widths:
            return config
        return self.with_widths(config, W.repair_chain(self.width_chain(config), self.width_options()))

    def config_from_json(self, text: str) -> SubnetConfig:
        return self.validate(SubnetConfig.from_json(text))

    def sample(self, rng: random.Random) -> SubnetConfig:
        """A config drawn uniformly from the space's subnets.

        Every choice is uniform and independent; with `monotone_widths` the width chain is then
        redrawn uniformly among the non-decreasing chains (`widths.sample_chain`), which is exactly
        the uniform distribution over the space's (monotone) subnets."""
        stem = StemChoice(**{k: rng.choice(v) for k, v in self.stem.choices().items()})
        stages = tuple(StageChoice(**{k: rng.choice(v) for k, v in s.choices().items()})
                       for s in self.stages)
        config = SubnetConfig(rng.choice(self.resolutions), stem, stages)
        if self.monotone_widths:
            config = self.with_widths(config, W.sample_chain(self.width_options(), rng))
        return config

    def _extreme(self, pick: Any) -> SubnetConfig:
        stem = StemChoice(**{k: pick(v) for k, v in self.stem.choices().items()})
        stages = tuple(StageChoice(**{k: pick(v) for k, v in s.choices().items()})
                       for s in self.stages)
        return SubnetConfig(pick(self.resolutions), stem, stages)

    def largest(self) -> SubnetConfig:
        """Every choice at its largest; with `monotone_widths`, the largest non-decreasing widths."""
        config = self._extreme(max)
        if self.monotone_widths:
            config = self.with_widths(config, W.highest_chain(self.width_options()) or [])
        return config

    def smallest(self) -> SubnetConfig:
        """Every choice at its smallest; with `monotone_widths`, the smallest non-decreasing widths."""
        config = self._extreme(min)
        if self.monotone_widths:
            config = self.with_widths(config, W.lowest_chain(self.width_options()) or [])
        return config

    def mutate(self, config: SubnetConfig, rng: random.Random, prob: float) -> SubnetConfig:
        """Resample each choice independently with probability `prob`.

        With `monotone_widths`, a resampled width is drawn among the widths between its neighbours'
        (`widths.mutate_chain`), so a valid parent always gives a valid child."""
        def maybe(value: int, allowed: tuple[int, ...]) -> int:
            return rng.choice(allowed) if rng.random() < prob else value

        resolution = maybe(config.resolution, self.resolutions)
        stem = StemChoice(**{k: maybe(getattr(config.stem, k), v)
                             for k, v in self.stem.choices().items()})
        stages = tuple(
            replace(choice, **{k: maybe(getattr(choice, k), v) for k, v in stage.choices().items()})
            for stage, choice in zip(self.stages, config.stages)
        )
        child = SubnetConfig(resolution, stem, stages)
        if self.monotone_widths:
            # The independent width draws above are overridden: keep the parent's chain, mutate it.
            chain = W.mutate_chain(self.width_chain(config), self.width_options(), rng, prob)
            child = self.with_widths(child, chain)
        return child

    def crossover(self, a: SubnetConfig, b: SubnetConfig, rng: random.Random) -> SubnetConfig:
        """Uniform crossover: each choice comes from either parent with equal probability.

        With `monotone_widths`, widths cross over by `widths.cross_chains` (either parent's width,
        among those not below the child's previous width), so valid parents give a valid child."""
        def pick(x: Any, y: Any) -> Any:
            return x if rng.random() < 0.5 else y

        stem = StemChoice(**{k: pick(getattr(a.stem, k), getattr(b.stem, k)) for k in STEM_FIELDS})
        stages = tuple(
            StageChoice(**{k: pick(getattr(sa, k), getattr(sb, k)) for k in st.fields})
            for st, sa, sb in zip(self.stages, a.stages, b.stages)
        )
        child = SubnetConfig(pick(a.resolution, b.resolution), stem, stages)
        if self.monotone_widths:
            a, b = self.repair_widths(a), self.repair_widths(b)
            child = self.with_widths(child, W.cross_chains(self.width_chain(a), self.width_chain(b), rng))
        return child

    def num_subnets(self, monotone: bool | None = None) -> int:
        """Subnets of the space, exactly; with monotone widths (the space's setting unless `monotone`
        says otherwise) only those whose widths never shrink, counted by a DP over the stages."""
        count = len(self.resolutions) * math.prod(len(v) for v in self.stem.choices().values())
        for stage in self.stages:
            count *= math.prod(len(v) for v in stage.choices().values())
        if self.monotone_widths if monotone is None else monotone:
            options = self.width_options()
            count = count // math.prod(len(v) for v in options) * W.count_chains(options)
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
        covers every subnet in a few thousand steps even for `elasticvit`. With `monotone_widths`
        only widths some non-decreasing chain uses are walked, and only pairs with input width <=
        output width, so the plan holds exactly the blocks the admitted subnets execute.
        The walk is kept on this instance: a search asks for it three times (table coverage, the
        LUT's fill, the cost grids), 0.3 s each on `elasticvit`.
        """
        key = tuple(resolutions) if resolutions else None
        memo = self.__dict__.setdefault("_unique_blocks", {})  # not a field: eq/hash ignore it
        if key not in memo:
            memo[key] = tuple(self._walk_unique_blocks(key))
        return list(memo[key])

    def _walk_unique_blocks(self, resolutions: tuple[int, ...] | None) -> list[BlockSpec]:
        seen: dict[str, BlockSpec] = {}

        def add(specs: Iterable[BlockSpec]) -> None:
            for spec in specs:
                seen.setdefault(spec.key, spec)

        options = self.width_options()
        usable = W.usable_widths(options) if self.monotone_widths else options
        for resolution in resolutions or self.resolutions:
            if resolution not in self.resolutions:
                raise ConfigError(f"resolution {resolution} is not in {list(self.resolutions)} "
                                  f"of space {self.name!r}")
            hw = conv_out(resolution, self.stem.stride)
            for width, kernel in itertools.product(usable[0], self.stem.kernels):
                add(self.stem_blocks(resolution, width, max(self.stem.depths), kernel))
            widths_in = usable[0]
            for stage, widths in zip(self.stages, usable[1:]):
                choices = {**stage.choices(), "width": widths}
                for cin in widths_in:
                    for values in _product(choices, exclude="depth"):
                        if self.monotone_widths and values["width"] < cin:
                            continue
                        add(self.stage_blocks(stage, hw, cin, StageChoice(depth=max(stage.depths),
                                                                          **values)))
                hw, widths_in = conv_out(hw, stage.stride), widths
            for cin in widths_in:
                add([self.head_block(hw, cin)])
        return list(seen.values())


def _product(choices: dict[str, tuple[int, ...]], exclude: str) -> Iterator[dict[str, int]]:
    names = [n for n in choices if n != exclude]
    for values in itertools.product(*(choices[n] for n in names)):
        yield dict(zip(names, values))


def _read_space_file(path: Path) -> str:
    """The text of a user's space file. Raises UnknownSpaceError for a name that is no file (saying
    the file does not exist when the name looks like a path) and SpaceFileError for a file that
    cannot be read as text."""
    name, known = str(path), ", ".join(BUILTIN_SPACES)
    if not is_file(path):
        if is_dir(path):
            raise UnknownSpaceError(f"space {name!r} is a directory; give the path of a space YAML "
                                    f"file or one of {known}")
        if looks_like_path(name, (".json", ".yaml", ".yml")):
            raise UnknownSpaceError(f"space file {name!r} does not exist; check the path, or use "
                                    f"one of {known}")
        raise UnknownSpaceError(f"unknown search space {name!r}: use one of {known} "
                                f"or the path of a space YAML file")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceFileError(f"{name}: cannot be read as a text file ({exc})") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """'found duplicate key ... at line 3, column 1': the problem and where, in one line."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if not problem:
        first = str(exc).splitlines()
        return first[0] if first else "parse error"
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _parse_stage(raw: Any, source: str, index: int) -> StageSpace:
    """Stage `index` (1-based) of a space YAML. Raises SpaceFileError naming the stage and the
    key: a missing or unknown type, an unknown key (allowed keys depend on the type), a value of
    the wrong type or range, or what the type's own check refuses."""
    where = f"stage {index}"
    # Unknown keys first, against every type's keys, so that `tpye:` is reported as a typo.
    every_key = dict.fromkeys(k for t in stage_types().values() for k in stage_keys(t))
    first = F.Section.of(raw, source, where, tuple(every_key), SpaceFileError)
    stage_type = get_stage_type(first.get("type", F.one_of(tuple(stage_types()))))
    part = F.Section.of(raw, source, where, stage_keys(stage_type), SpaceFileError,
                        label=f"{where} (a {stage_type.name} stage)")
    values: dict[str, Any] = {
        PLURAL[f]: part.get(PLURAL[f], CHOICE_LISTS[f]) for f in stage_type.fields
    }
    for key, parse, default in stage_type.options:
        values[key] = part.get(key, parse, default)
    stage = StageSpace(name=part.get("name", F.text, f"stage{index}"), type=stage_type.name,
                       stride=part.get("stride", F.one_of((1, 2)), 1), **values)
    if stage_type.check is not None:
        stage_type.check(stage, f"{source}: {where}")
    return stage
