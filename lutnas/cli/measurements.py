"""`lutnas runs` and `lutnas measurements`: what a measurement store holds.

Parsing and printing only; pandas and the store are imported by the handler that runs, so these
commands start without the profiler (and torch) that `profile-device` needs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lutnas.cli._common import require
from lutnas.cli.table import DEFAULT_STORE

# Keys are ~60 characters: when piped, print wide rather than truncating them at rich's 80 columns.
console = Console(highlight=False, width=None if Console().is_terminal else 220)


def _open(path: str) -> Any:
    require(Path(path).is_file(), f"no measurement store at {path}; pass --store PATH (profile-device "
                                  f"writes {DEFAULT_STORE} by default)")
    from lutnas.tables.store import MeasurementStore

    return MeasurementStore(path)


def register(subparsers: argparse._SubParsersAction) -> None:
    runs = subparsers.add_parser("runs", help="list the profiling sessions in a store")
    runs.add_argument("--store", default=DEFAULT_STORE)
    runs.set_defaults(handler=list_runs)
    meas = subparsers.add_parser("measurements", help="print or export (CSV) what a device measured")
    meas.add_argument("--device", help="device id (see `lutnas runs`); optional when the store "
                                       "holds one device")
    meas.add_argument("--store", default=DEFAULT_STORE)
    meas.add_argument("--runtime")
    meas.add_argument("--kind", action="append", help="only these kinds (e.g. mbconv, subnet)")
    meas.add_argument("--csv", type=Path, metavar="PATH", help="write every trial row to this CSV")
    meas.add_argument("--all", action="store_true", help="include failed and discarded measurements")
    meas.set_defaults(handler=show_measurements)


def _time(stamp: float | None) -> str:
    if stamp is None or math.isnan(stamp):
        return "-"
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def list_runs(args: argparse.Namespace) -> int:
    with _open(args.store) as store:
        frame = store.runs_frame()
    table = Table(title=f"runs in {args.store}")
    for column in ("run", "device", "runtime", "threads", "cores", "space", "started", "finished",
                   "measurements", "summary"):
        table.add_column(column)
    for row in frame.itertuples():
        summary = row.summary or {}
        brief = ", ".join(f"{k} {summary[k]}" for k in ("measured", "skipped", "re_measured", "flagged")
                          if k in summary)
        if summary.get("interrupted"):
            brief += ", interrupted"
        if "error" in summary:
            brief = f"error: {summary['error'][:60]}"
        table.add_row(str(row.run_id), row.device_id, row.runtime, str(row.threads), row.core_mask,
                      row.space, _time(row.started),
                      _time(row.finished) if row.finished is not None else "unfinished",
                      str(row.measurements), brief)
    console.print(table)
    return 0


def show_measurements(args: argparse.Namespace) -> int:
    from lutnas.tables.store import cv_of, figure_of

    with _open(args.store) as store:
        known = [d.device_id for d in store.devices()]
        if args.device is None:
            require(len(known) == 1, f"{args.store} holds {len(known)} devices; choose one with "
                                     f"--device ({', '.join(known) or 'none'})")
            args.device = known[0]
        require(args.device in known, f"no device {args.device!r} in {args.store}; devices: "
                                      f"{', '.join(known) or 'none'}")
        frame = store.measurements_frame(device_id=args.device, runtime=args.runtime, kinds=args.kind,
                                         ok_only=not args.all)
        quality = store.quality_frame(device_id=args.device, runtime=args.runtime)
    if args.csv:
        require(args.csv.parent.is_dir(), f"--csv {args.csv}: directory {args.csv.parent} does not exist")
        out = frame.copy()
        out["samples_ms"] = [json.dumps(s) for s in out["samples_ms"]]
        out["operator_ms"] = [json.dumps(o) if o is not None else "" for o in out["operator_ms"]]
        out.to_csv(args.csv, index=False)
        console.print(f"wrote {len(out)} measurements of {out['key'].nunique()} keys to {args.csv}")
        return 0
    # The QC verdict and its CV (of the latest set of trials, the one QC judged) where there is one.
    flags = {(r.runtime, r.threads, r.core_mask, r.key): (r.flag, r.cv) for r in quality.itertuples()}
    table = Table(title=f"{args.device}: median of trial medians (ms)")
    for column in ("runtime", "threads", "cores", "key", "kind", "trials", "median ms", "cv", "flag"):
        table.add_column(column, justify="right" if column in ("trials", "median ms", "cv") else "left")
    ok = frame[frame["status"] == "ok"]
    for (runtime, threads, mask, key, kind), group in ok.groupby(
            ["runtime", "threads", "core_mask", "key", "kind"], sort=True):
        medians = group["median_ms"].tolist()
        flag, cv = flags.get((runtime, threads, mask, key), ("-", cv_of(medians)))
        table.add_row(runtime, str(threads), mask, key, kind, str(len(medians)), f"{figure_of(medians):.4f}",
                      f"{cv:.1%}" if cv is not None and cv == cv else "-", flag)
    console.print(table)
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        console.print(f"{len(failed)} failed or discarded measurements, e.g. {failed['key'].iloc[0]}: "
                      f"{failed['status'].iloc[0][:120]}")
    return 0
