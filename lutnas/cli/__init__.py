"""The `lutnas` command line: argument parsing, progress and printing; the logic lives elsewhere.

Every module of this package that defines `register(subparsers)` adds its subcommands, so a new
command is a new file. Any `LutnasError` becomes one line on stderr and its exit code (2: bad input,
1: device or environment failure).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from lutnas import __version__
from lutnas.cli.stopping import EXIT_TERMINATED, interrupted_exit_code, stop_on_sigterm
from lutnas.errors import LutnasError

# Command -> (module that registers it, one-line help). Only the module of the command being run is
# imported, so `lutnas --help` and light commands never pay for torch, pandas or onnxruntime (5.6 s
# before this split). A module registers every command listed for it here.
COMMANDS: dict[str, tuple[str, str]] = {
    "space": ("space", "inspect search spaces"),
    "devices": ("devices", "list reachable devices and their fingerprints"),
    "profile-device": ("profile", "measure every block of a space on a device"),
    "runs": ("measurements", "list the profiling sessions in a store"),
    "measurements": ("measurements", "print or export (CSV) what a device measured"),
    "build-table": ("table", "build a latency table from a measurement store"),
    "table": ("table", "inspect, compare, export and import latency tables"),
    "predict": ("predict", "predict a subnet's latency from a latency table"),
    "evaluate": ("evaluate", "score predictors against whole subnets measured end to end"),
    "transfer": ("transfer", "predict a new device's table from a full table of another device"),
    "train-supernet": ("train", "train the weight-sharing supernet of a space"),
    "search": ("search", "evolutionary search for the best subnet under a latency target"),
    "cache": ("cache", "show or trim the exported-model cache (~/.cache/lutnas/models, $LUTNAS_CACHE)"),
}


# Commands whose SIGTERM keeps its default (the process ends at once). torchrun's agent SIGTERMs
# its workers and SIGKILLs them 30 s later; a rank stuck in a collective whose peer is gone would
# never reach Python's handler, and DataLoader workers dying of a group SIGTERM would raise in the
# middle of the unwinding. Training checkpoints are written atomically and `--resume` continues.
SIGTERM_KILLS = frozenset({"train-supernet"})


def _requested(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv (its first word that is not an option), if any."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] = (), script: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the full arguments of the command named in `argv` and stubs for the rest.

    The stubs carry each command's help line, so `lutnas --help` lists every command. `script`: the
    command runs as its own console script (`profile-device`), whose name its usage line shows."""
    parser = argparse.ArgumentParser(
        prog="lutnas",
        description="On-device latency profiling, lookup tables and latency-constrained NAS.",
    )
    parser.add_argument("--version", action="version", version=f"lutnas {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = _requested(argv)
    module_name = COMMANDS[wanted][0] if wanted in COMMANDS else None
    if module_name is not None:
        importlib.import_module(f"{__name__}.{module_name}").register(subparsers)
        if script is not None:
            subparsers.choices[wanted].prog = script
    for command, (owner, help_text) in COMMANDS.items():
        if owner != module_name:
            subparsers.add_parser(command, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None, script: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for plugin in filter(None, (n.strip() for n in os.environ.get("LUTNAS_PLUGINS", "").split(","))):
        importlib.import_module(plugin)  # user block kinds; export workers import them too
    parser = build_parser(argv, script)
    args = parser.parse_args(argv)
    name = script or f"{parser.prog} {args.command}"  # as the user typed it
    try:
        with stop_on_sigterm(enabled=args.command not in SIGTERM_KILLS):
            result = args.handler(args)
    except LutnasError as exc:
        message = str(exc).replace("\n", " ")
        print(f"{name}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (stopping.Terminated)
        code = interrupted_exit_code()
        print(f"{name}: {'terminated' if code == EXIT_TERMINATED else 'interrupted'}", file=sys.stderr)
        return code
    except BrokenPipeError:  # `lutnas ... | head`: the reader has all it wanted; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(result or 0)


def profile_device_main(argv: Sequence[str] | None = None) -> int:
    """`profile-device ...` is `lutnas profile-device ...` under its own name."""
    return main(["profile-device", *(sys.argv[1:] if argv is None else argv)], script="profile-device")


def run() -> None:
    sys.exit(main())


def profile_device_run() -> None:
    sys.exit(profile_device_main())
