"""`lutnas space show SPACE`: what a search space holds and what profiling it will cost."""

from __future__ import annotations

import argparse
from collections import Counter

from rich.table import Table

from lutnas.cli._common import console, load_space
from lutnas.profiler.plan import make_plan


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("space", help="inspect search spaces")
    sub = parser.add_subparsers(dest="space_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="count subnets, unique blocks per kind and operators")
    show.add_argument("space", help="built-in space name (elasticvit, tiny) or a space YAML file")
    show.add_argument("--resolution", type=int, action="append", help="only these resolutions")
    show.set_defaults(handler=show_space)


def show_space(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    plan = make_plan(space, args.resolution, granularity="both")
    small, large = space.complexity(space.smallest()), space.complexity(space.largest())
    console.print(f"[bold]{space.name}[/]  ({space.source})")
    console.print(f"subnets: {space.num_subnets():,}   resolutions: {list(space.resolutions)}")
    console.print(f"MMACs: {small.macs / 1e6:.1f} (smallest) .. {large.macs / 1e6:.1f} (largest); "
                  f"params: {small.params / 1e6:.2f}M .. {large.params / 1e6:.2f}M")
    table = Table(title="unique blocks to profile")
    table.add_column("kind")
    table.add_column("count", justify="right")
    for kind, count in sorted(Counter(b.kind for b in plan.blocks).items()):
        table.add_row(kind, str(count))
    table.add_row("[bold]blocks[/]", f"[bold]{len(plan.blocks)}[/]")
    for kind, count in sorted(Counter(o.kind for o in plan.operators).items()):
        table.add_row(f"op:{kind}", str(count))
    table.add_row("[bold]operators[/]", f"[bold]{len(plan.operators)}[/]")
    console.print(table)
    return 0
