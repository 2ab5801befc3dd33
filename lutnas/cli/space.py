"""`lutnas space show SPACE`: what a search space holds and what profiling it will cost."""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter

from rich.table import Table

from lutnas.cli._common import (
    SPACE_HELP,
    add_json_flag,
    console,
    json_aware,
    load_space,
    print_json,
    read_config,
)
from lutnas.profiler.plan import make_plan
from lutnas.space import BlockSpec, block_complexity


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("space", help="inspect search spaces")
    sub = parser.add_subparsers(dest="space_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="count subnets, unique blocks per kind and operators")
    show.add_argument("space", help=SPACE_HELP)
    show.add_argument("--resolution", type=int, action="append", help="only these resolutions")
    show.set_defaults(handler=show_space)
    register_more(sub)


def show_space(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    plan = make_plan(space, args.resolution, granularity="both")
    small, large = space.complexity(space.smallest()), space.complexity(space.largest())
    console.print(f"[bold]{space.name}[/]  ({space.source})")
    console.print(f"subnets: {space.num_subnets():,}   resolutions: {list(space.resolutions)}")
    if space.monotone_widths:
        shrinking = 1 - space.num_subnets() / space.num_subnets(monotone=False)
        console.print(f"monotone widths: yes (the {shrinking:.1%} of choices whose widths shrink "
                      f"are not subnets)")
    else:
        console.print("monotone widths: no (any stage may be narrower than the one before)")
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


def register_more(sub: argparse._SubParsersAction) -> None:
    blocks = sub.add_parser("blocks", help="list a subnet's blocks (execution order) and its cost")
    blocks.add_argument("space", help=SPACE_HELP)
    blocks.add_argument("--config", required=True,
                        help="subnet config: a JSON file or text (see `lutnas space sample`), "
                             "search's best.json, ElasticViT's 10-tuple, smallest, largest, or a "
                             "released ElasticViT model (elasticvit:S1)")
    add_json_flag(blocks, "the blocks (key, MMACs, params, bytes moved) and the total")
    blocks.set_defaults(handler=json_aware(show_blocks))
    sample = sub.add_parser("sample", help="print random subnet configs of a space as JSON lines")
    sample.add_argument("space", help=SPACE_HELP)
    sample.add_argument("-n", type=int, default=1, help="how many configs (default 1)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--largest", action="store_true", help="the largest subnet instead")
    sample.add_argument("--smallest", action="store_true", help="the smallest subnet instead")
    sample.add_argument("--elasticvit", action="store_true",
                        help="print ElasticViT's 10-tuple encoding instead of lutnas's JSON")
    sample.set_defaults(handler=sample_configs)
    block = sub.add_parser("block", help="parse a block key and show its cost and operators")
    block.add_argument("key", help="e.g. mbconv:hw=56,cin=24,cout=32,k=5,s=2,e=4,se=1,act=hswish")
    block.set_defaults(handler=show_block)


def show_blocks(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    config = read_config(space, args.config)
    table = Table(title=f"{space.name} subnet at {config.resolution}px")
    for column in ("#", "block key", "MMACs", "params", "KB moved"):
        table.add_column(column, justify="left" if column == "block key" else "right")
    rows = []
    for index, spec in enumerate(space.blocks_of(config)):
        cost = block_complexity(spec)
        rows.append({"key": spec.key, "kind": spec.kind, "macs": cost.macs, "params": cost.params,
                     "bytes_moved": cost.bytes_moved})
        table.add_row(str(index), spec.key, f"{cost.macs / 1e6:.2f}", f"{cost.params:,}",
                      f"{cost.bytes_moved / 1024:.0f}")
    total = space.complexity(config)
    if args.json:
        print_json({"space": space.name, "resolution": config.resolution, "blocks": rows,
                    "total": {"macs": total.macs, "params": total.params,
                              "bytes_moved": total.bytes_moved}})
        return 0
    console.print(table)
    console.print(f"total: {total.macs / 1e6:.2f} MMACs, {total.params / 1e6:.3f}M params, "
                  f"{total.bytes_moved / 2**20:.1f} MiB moved")
    return 0


def sample_configs(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    if args.largest or args.smallest:
        configs = [space.largest() if args.largest else space.smallest()]
    else:
        rng = random.Random(args.seed)
        configs = [space.sample(rng) for _ in range(max(1, args.n))]
    for config in configs:
        print(json.dumps(config.to_elasticvit(space)) if args.elasticvit else config.to_json())
    return 0


def show_block(args: argparse.Namespace) -> int:
    spec = BlockSpec.parse(args.key)
    cost = block_complexity(spec)
    console.print(f"{spec.key}\n  MMACs {cost.macs / 1e6:.3f}  params {cost.params:,}  "
                  f"bytes read {cost.bytes_read:,}  written {cost.bytes_written:,}  "
                  f"MACs/byte {cost.arithmetic_intensity:.2f}")
    for op in spec.operators():
        console.print(f"  {op.key}")
    return 0
