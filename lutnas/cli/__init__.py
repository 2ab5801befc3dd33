"""The `lutnas` command line: argument parsing, progress and printing; the logic lives elsewhere.

Every module of this package that defines `register(subparsers)` adds its subcommands, so a new
command is a new file. Any `LutnasError` becomes one line on stderr and its exit code (2: bad input,
1: device or environment failure).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from lutnas import __version__
from lutnas.errors import LutnasError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lutnas",
        description="On-device latency profiling, lookup tables and latency-constrained NAS.",
    )
    parser.add_argument("--version", action="version", version=f"lutnas {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except LutnasError as exc:
        message = str(exc).replace("\n", " ")
        print(f"{parser.prog} {args.command}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def profile_device_main(argv: Sequence[str] | None = None) -> int:
    """`profile-device ...` is `lutnas profile-device ...` under its own name."""
    return main(["profile-device", *(sys.argv[1:] if argv is None else argv)])


def run() -> None:
    sys.exit(main())


def profile_device_run() -> None:
    sys.exit(profile_device_main())
