"""Helpers shared by CLI modules: argument types and console output."""

from __future__ import annotations

import argparse

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
