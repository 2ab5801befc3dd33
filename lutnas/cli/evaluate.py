"""`lutnas evaluate`: check a table's predictions against whole subnets measured on its device.

Parsing and printing only: measuring is `lutnas.profiler.subnets.evaluate_on_device`, scoring
`lutnas.predictors.evaluate`. Heavy modules are imported by the handler, not at start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from lutnas.cli._common import add_host_change_flag, console, err_console, positive_int, space_of_table
from lutnas.cli.device_options import (
    DEVICE_FORMS,
    add_accelerator_flag,
    add_device_flags,
    agent_options,
    check_table_accelerator,
)
from lutnas.errors import BadInputError

DEFAULT_STORE = "measurements.sqlite"


class _MeasuringProgress:
    """Export and measuring bars fed by `measure_subnets` and the profiling loop's callbacks."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.export_task: Any = None
        self.measure_task: Any = None

    def on_export(self, done: int, total: int) -> None:
        if self.export_task is None:
            self.export_task = self.progress.add_task("export subnets", total=total)
        self.progress.update(self.export_task, completed=done)

    def on_loop(self, event: Any) -> None:
        expected = getattr(event, "measurements_expected", 0) or None
        if self.measure_task is None:
            self.measure_task = self.progress.add_task("measure subnets", total=expected)
        cv = getattr(event, "current_cv", None)
        self.progress.update(self.measure_task, total=expected,
                             completed=getattr(event, "measurements_done", 0),
                             description=f"measure subnets (CV {cv:.3f})" if cv else "measure subnets")


@contextlib.contextmanager
def measuring_progress() -> Iterator[_MeasuringProgress]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        yield _MeasuringProgress(progress)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="score predictors against whole subnets measured end to end")
    p.add_argument("--device", default="local", help=f"device address: {DEVICE_FORMS} (default local)")
    p.add_argument("--table", required=True, type=Path)
    p.add_argument("--space", help="space of the subnets (default: the one the table embeds)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                   help="refuse a table of another precision (default: the table's)")
    add_accelerator_flag(p, "refuse a table of another accelerator (default: the table's; subnets are "
                            "measured under the table's settings)")
    p.add_argument("--calibration-data", type=Path, metavar="DIR",
                   help="ImageFolder whose images calibrate int8 models of whole subnets and stems "
                        "(default: seeded random inputs)")
    p.add_argument("--samples", type=positive_int, default=50, help="held-out subnets (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", default=DEFAULT_STORE,
                   help=f"where measured subnets go and are reused from (default {DEFAULT_STORE})")
    p.add_argument("--trials", type=positive_int,
                   help="trials per subnet (default: the table's typical trial count)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="scatter plot (default: TABLE.evaluate.png)")
    add_host_change_flag(p)
    p.add_argument("--json", type=Path, metavar="OUT", help="write the reports and every subnet as JSON")
    p.add_argument("--resolution", type=int, action="append", metavar="R",
                   help="sample subnets at these resolutions (default: those the table fully covers)")
    add_device_flags(p)
    p.set_defaults(handler=evaluate_command)


def print_reports(reports: list[Any], title: str) -> None:
    out = Table(title=title)
    for column in ("predictor", "n", "RMSE ms", "MAPE %", "within ±5%", "within ±10%", "Spearman",
                   "Kendall", "max |err| %"):
        out.add_column(column, justify="left" if column == "predictor" else "right")
    for r in reports:
        out.add_row(r.predictor, str(r.n), f"{r.rmse_ms:.4f}", f"{r.mape:.2f}", f"{r.within_5:.0%}",
                    f"{r.within_10:.0%}", f"{r.spearman:.3f}", f"{r.kendall:.3f}",
                    f"{r.max_abs_pct_error:.1f}")
    console.print(out)


def evaluate_command(args: argparse.Namespace) -> int:
    from lutnas.device_agents.factory import open_agent
    from lutnas.predictors.correction import Correction
    from lutnas.predictors.evaluate import scatter_plot
    from lutnas.profiler.subnets import evaluate_on_device
    from lutnas.tables.store import MeasurementStore
    from lutnas.tables.table import LatencyTable

    if args.samples < 2:
        raise BadInputError("--samples must be at least 2 to rank subnets")
    if args.calibration_data:
        from lutnas.profiler.quantize import use_calibration_data

        use_calibration_data(args.calibration_data)
    table = LatencyTable.load(args.table)
    if args.precision not in (None, table.precision):
        raise BadInputError(f"--precision {args.precision}: {args.table} holds {table.precision} "
                            f"latencies; build a table with build-table --precision {args.precision}")
    check_table_accelerator(args.accelerator, table, args.table)
    space = space_of_table(table, args.space)
    if table.correction:
        err_console.print(f"correction: {Correction.from_dict(table.correction).describe()}; every "
                          f"block-sum predictor is corrected on the same subnets")
    else:
        err_console.print("[yellow]note:[/] the table has no whole-model correction "
                          "(build-table --calibrate K); 'LUT + correction' is not reported")
    with MeasurementStore(args.store) as store, open_agent(args.device, agent_options(args)) as agent, \
            measuring_progress() as progress:
        result = evaluate_on_device(agent, table, space, args.samples, args.seed, store, args.trials,
                                    resolutions=args.resolution,
                                    argv=["evaluate", "--table", str(args.table)],
                                    progress=progress.on_loop, on_export=progress.on_export,
                                    max_host_change=args.max_host_change)
    print_reports(result.reports, f"{len(result.configs)} held-out {space.name} subnets on "
                                  f"{table.describe_settings()}")
    plot = args.plot or args.table.with_suffix(".evaluate.png")
    scatter_plot(plot, result.measured_ms, result.predictions,
                 title=f"{space.name} on {table.device.device_id} ({table.settings.get('runtime')})")
    console.print(f"wrote {plot}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_dict(), indent=1))
        console.print(f"wrote {args.json}")
    return 0
