"""Helpers shared by CLI modules: argument types and console output."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console

from lutnas.errors import BadInputError
from lutnas.space import SearchSpace, SubnetConfig
from lutnas.space import read_config as read_space_config

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def load_space(name_or_path: str) -> SearchSpace:
    return SearchSpace.load(name_or_path)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BadInputError(message)


def read_config(space: SearchSpace, source: str) -> SubnetConfig:
    """The one reader of `--config` (and of every other flag that names a subnet), validated.

    Accepts a SubnetConfig as JSON text or a .json file, a JSON object holding one under "config"
    (search's best.json), ElasticViT's 10-tuple as a JSON list, `smallest` / `largest`, and the
    released ElasticViT models by name (`elasticvit:S1` or `elastic_S1`). Raises ConfigError (exit
    code 2) naming what was wrong and listing the accepted forms."""
    return read_space_config(space, source)


class LazyChoices(Sequence[str]):
    """argparse `choices` read from a registry only when used (checking a value, printing help).

    Registering a command's arguments must not import what only another command needs: the
    `table` module registers `build-table`, whose `--predictor` names come from the predictor
    registry (pandas and every predictor, about 0.5 s here), and `table show` never reads them.
    Give the argument a `metavar`: argparse formats the choices of one without it when adding it."""

    def __init__(self, names: Callable[[], Sequence[str]]) -> None:
        self._names = names
        self._loaded: tuple[str, ...] | None = None

    def _values(self) -> tuple[str, ...]:
        if self._loaded is None:
            self._loaded = tuple(self._names())
        return self._loaded

    def __getitem__(self, index: Any) -> Any:
        return self._values()[index]

    def __len__(self) -> int:
        return len(self._values())

    def __contains__(self, value: object) -> bool:
        return value in self._values()

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())
