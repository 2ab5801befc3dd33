"""`lutnas transfer --from TABLE_A (--device B | --to-table TABLE_B) --samples K --out TABLE`.

Parsing and printing only: the transfer is `lutnas.predictors.transfer` (from a table of B) or
`lutnas.profiler.subnets.transfer_on_device` (measuring B); both are imported when the command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from lutnas.cli._common import console, err_console, positive_int
from lutnas.cli.device_options import DEVICE_FORMS, add_device_flags, agent_options
from lutnas.device_agents.base import RUNTIMES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("transfer", help="predict a new device's table from a full table of "
                              "another device and K blocks measured on the new one")
    p.add_argument("--from", dest="source", required=True, type=Path, metavar="TABLE_A",
                   help="full latency table of the known device (.parquet)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--device", metavar="ADDRESS",
                       help=f"new device to measure the K blocks on ({DEVICE_FORMS})")
    where.add_argument("--to-table", type=Path, metavar="TABLE_B",
                       help="use blocks already measured on the new device: K of them fit, the "
                            "rest are the held-out report")
    p.add_argument("--samples", type=positive_int, default=50, metavar="K",
                   help="blocks of the new device to fit on (default 50)")
    p.add_argument("--holdout", type=int, default=0, metavar="H",
                   help="with --device: also measure H other blocks to report the error (default 0)")
    p.add_argument("--runtime", choices=RUNTIMES, help="runtime on the new device (default: table A's)")
    p.add_argument("--threads", type=int, help="threads on the new device (default: table A's)")
    p.add_argument("--trials", type=positive_int, default=5, help="fresh processes per block (default 5)")
    p.add_argument("--store", default="measurements.sqlite", help="measurement store for --device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="table of the new device to write (.parquet); "
                   "the transfer predictor is saved beside it")
    p.add_argument("--json", type=Path, metavar="OUT",
                   help="also write the held-out report as JSON to OUT (the table stays on stdout)")
    add_device_flags(p, "--device options")
    p.set_defaults(handler=transfer_command)


def transfer_command(args: argparse.Namespace) -> int:
    from lutnas.predictors.serialize import predictor_path, save_predictor
    from lutnas.predictors.transfer import transfer_between_tables
    from lutnas.tables.table import LatencyTable

    table_a = LatencyTable.load(args.source)
    if args.to_table is not None:
        result = transfer_between_tables(table_a, LatencyTable.load(args.to_table), args.samples,
                                         args.seed, str(args.source))
    else:
        from lutnas.profiler.subnets import transfer_on_device  # exports: torch only when measuring

        err_console.print(f"measuring {args.samples} + {max(args.holdout, 0)} blocks on {args.device} ...")
        result = transfer_on_device(table_a, args.device, args.samples, args.holdout, args.runtime,
                                    args.threads, args.trials, args.store, args.seed, str(args.source),
                                    agent_options=agent_options(args))
    out = result.table.save(args.out)
    saved = save_predictor(result.predictor, predictor_path(out, "transfer"),
                           extra={"from": str(args.source), "report": result.report})
    _print(result.report, out, saved, len(result.predictor.measured_))
    if args.json is not None:
        from lutnas.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(result.report, indent=1, default=str))
        console.print(f"report: {args.json}")
    return 0


def _print(report: dict[str, Any], out: Path, saved: Path, samples: int) -> None:
    console.print(f"fitted on {samples} blocks of the new device; table: {out}; predictor: {saved}")
    if not report.get("heldout"):
        console.print("no held-out blocks measured: no error to report (use --holdout H)")
        return
    table = Table(title=f"held-out error on {report['heldout']} blocks of the new device")
    table.add_column("kind")
    table.add_column("blocks", justify="right")
    table.add_column("MAPE", justify="right")
    for kind, row in report["by_kind"].items():
        table.add_row(kind, str(row["n"]), f"{row['mape']:.1%}")
    table.add_row("[bold]all[/]", str(report["heldout"]), f"[bold]{report['mape']:.1%}[/]")
    console.print(table)
    console.print(f"within ±10%: {report['within_10pct']:.0%}   within ±5%: {report['within_5pct']:.0%}")
