"""The command manifest of `lutnas.cli` matches what its modules register."""

from __future__ import annotations

import argparse
import importlib

from lutnas.cli import COMMANDS, build_parser


def _registered(module_name: str) -> set[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    importlib.import_module(f"lutnas.cli.{module_name}").register(sub)
    return set(sub.choices)


def test_each_module_registers_exactly_its_commands() -> None:
    for module_name in {owner for owner, _ in COMMANDS.values()}:
        listed = {cmd for cmd, (owner, _) in COMMANDS.items() if owner == module_name}
        assert _registered(module_name) == listed, module_name


def test_full_arguments_only_for_the_requested_command() -> None:
    parser = build_parser(["space", "show", "tiny"])
    args = parser.parse_args(["space", "show", "tiny"])
    assert args.command == "space" and callable(args.handler)
