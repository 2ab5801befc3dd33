"""Helpers shared by CLI modules: argument types and console output."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console, ConsoleDimensions

from lutnas.errors import BadInputError
from lutnas.space import BUILTIN_SPACES, SearchSpace, SubnetConfig
from lutnas.space import read_config as read_space_config

# Width rich lays out tables at when its stream is not a terminal: wide enough that no block key,
# config JSON or summary line is ever wrapped or cut with "…" in a pipe or a file.
PIPE_WIDTH = 100_000
# The help of every --space / space argument: the built-in names as the package has them.
SPACE_HELP = f"a built-in space ({', '.join(BUILTIN_SPACES)}) or a space YAML file"


class _StreamConsole(Console):
    """A rich Console whose width follows *its own* stream: a terminal's width when that stream is a
    terminal, unlimited (PIPE_WIDTH, soft wrap) when it is a pipe or file.

    Rich alone asks stdin/stdout/stderr for a terminal size, so `lutnas ... | cat` run from a
    terminal still wrapped stdout at the terminal's width (80 columns without one). Decided at each
    print, so a console made at import time is right under pytest's capture too."""

    @property
    def size(self) -> ConsoleDimensions:
        dimensions = super().size
        if self.is_terminal:
            return dimensions
        return ConsoleDimensions(PIPE_WIDTH, dimensions.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def print(self, *objects: Any, **kwargs: Any) -> None:  # noqa: A003 - rich's name
        """`Console.print`, with soft wrap (no wrapping, no cropping) when the stream is a pipe or file."""
        if not self.is_terminal:
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)


def make_console(stderr: bool = False) -> Console:
    """The one way a CLI module gets a console (stdout, or stderr for progress and warnings).

    No syntax highlighting (numbers in block keys must not change colour); on a terminal, rich's
    usual wrapping; in a pipe or file, nothing is wrapped or cut (see `_StreamConsole`)."""
    return _StreamConsole(stderr=stderr, highlight=False)


console = make_console()
err_console = make_console(stderr=True)


def print_json(data: Any) -> None:
    """One JSON document on stdout, for `--json`: plain `print`, so rich never styles or wraps it."""
    print(json.dumps(data, indent=None, sort_keys=False, default=str))


def load_space(name_or_path: str) -> SearchSpace:
    return SearchSpace.load(name_or_path)


def space_of_table(table: Any, space_arg: str | None) -> SearchSpace:
    """The space a command on `table` (a LatencyTable or TableLookup) works in: the table's own,
    from the YAML it embeds (the space's file may be gone), unless --space names one. A --space
    that is not the table's space gets one warning line on stderr naming both and which to use."""
    if not space_arg:
        return table.load_space()
    from rich.markup import escape

    space = SearchSpace.load(space_arg)
    mismatch = table.space_mismatch(space, space_arg)
    if mismatch:
        err_console.print(f"[yellow]warning:[/] {escape(mismatch)}")
    return space


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_host_change_flag(parser: argparse.ArgumentParser) -> None:
    """`--max-host-change PCT`: how far the host check's reference blocks (their median) may move
    from their table figures before whole-subnet measurements are refused
    (lutnas.profiler.subnets.HOST_REFUSE). Parsed to a fraction (30 -> 0.3), what the measuring
    functions take."""
    default = os.environ.get("LUTNAS_MAX_HOST_CHANGE", "30")
    parser.add_argument("--max-host-change", type=_percent, default=default, metavar="PCT",
                        help="refuse whole-subnet measurements when the table's reference blocks, "
                             "timed in the same processes, moved more than PCT%% (median, plus "
                             "the uncertainty of their table and session figures) from their table "
                             "figures; smaller moves are "
                             "normalised "
                             f"(default {default}: $LUTNAS_MAX_HOST_CHANGE, else 30)")


def _percent(text: str) -> float:
    """A positive percentage, as a fraction."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value / 100


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


def add_json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """`--json`: the command's results as one JSON document on stdout, nothing else there."""
    parser.add_argument("--json", action="store_true",
                        help=f"print {what} as one JSON document on stdout (no table)")


def json_aware(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a handler so that under `--json` the human-readable console output is silenced.

    The handler prints its JSON with `print_json`, which bypasses the console; warnings and progress
    still go to stderr. The console is restored afterwards (tests call `main` many times)."""

    def run(args: argparse.Namespace) -> int:
        if not getattr(args, "json", False):
            return handler(args)
        before = console.quiet
        console.quiet = True
        try:
            return handler(args)
        finally:
            console.quiet = before

    run.__doc__ = handler.__doc__
    return run
