"""Helpers shared by CLI modules: argument types and console output."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from lutnas.errors import BadInputError
from lutnas.space import SearchSpace, SubnetConfig

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
    """A subnet config from a JSON file path or from JSON text, validated against `space`."""
    text = source
    if not source.lstrip().startswith("{"):
        path = Path(source)
        if not path.is_file():
            raise BadInputError(f"config {source!r} is neither a JSON file nor JSON text; "
                                f"write one with `lutnas space sample {space.source or space.name}`")
        text = path.read_text()
    return space.config_from_json(text)
