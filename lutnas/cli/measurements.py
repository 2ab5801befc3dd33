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

from rich.table import Table

from lutnas.cli._common import add_json_flag, console, json_aware, print_json, require
from lutnas.cli.device_options import add_accelerator_flag
from lutnas.cli.table import DEFAULT_STORE
from lutnas.device_agents.base import RUNTIMES


def _open(path: str) -> Any:
    require(Path(path).is_file(), f"no measurement store at {path}; pass --store PATH (profile-device "
                                  f"writes {DEFAULT_STORE} by default)")
    from lutnas.tables.store import MeasurementStore

    return MeasurementStore(path)


def register(subparsers: argparse._SubParsersAction) -> None:
    runs = subparsers.add_parser("runs", help="list the profiling sessions in a store")
    runs.add_argument("--store", default=DEFAULT_STORE)
    add_json_flag(runs, "one object per run")
    runs.set_defaults(handler=json_aware(list_runs))
    meas = subparsers.add_parser("measurements", help="print or export (CSV) what a device measured")
    meas.add_argument("--device", help="device id (see `lutnas runs`); optional when the store "
                                       "holds one device")
    meas.add_argument("--store", default=DEFAULT_STORE)
    meas.add_argument("--runtime", choices=RUNTIMES, help="only this runtime's measurements")
    add_accelerator_flag(meas, "only measurements taken on this accelerator (default: all)")
    meas.add_argument("--kind", action="append", help="only these kinds (e.g. mbconv, subnet)")
    meas.add_argument("--csv", type=Path, metavar="PATH", help="write every trial row to this CSV")
    meas.add_argument("--all", action="store_true", help="include failed and discarded measurements")
    add_json_flag(meas, "one object per block (median of trial medians, trials, CV, flag)")
    meas.set_defaults(handler=json_aware(show_measurements))


def _time(stamp: float | None) -> str:
    if stamp is None or math.isnan(stamp):
        return "-"
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def list_runs(args: argparse.Namespace) -> int:
    with _open(args.store) as store:
        frame = store.runs_frame()
    if args.json:
        print_json([_run_record(row) for row in frame.to_dict(orient="records")])
        return 0
    table = Table(title=f"runs in {args.store}")
    for column in ("run", "device", "runtime", "threads", "cores", "space", "started", "finished",
                   "trial rows", "summary"):
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
    # The units differ on purpose: say so, or the two commands seem to disagree.
    console.print("trial rows: one per block per trial, failed ones included (a run's summary and "
                  "`lutnas measurements` count blocks)")
    return 0


def _run_record(row: dict[str, Any]) -> dict[str, Any]:
    """A runs_frame row as JSON-ready data: NaN times become null, `measurements` is trial rows."""
    record = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
    record["trial_rows"] = record.pop("measurements")
    return record


def show_measurements(args: argparse.Namespace) -> int:
    with _open(args.store) as store:
        known = [d.device_id for d in store.devices()]
        require(bool(known), f"{args.store} is empty: nothing has been measured yet; run "
                             f"`profile-device --store {args.store}` first")
        if args.device is None:
            require(len(known) == 1, f"{args.store} holds {len(known)} devices; choose one with "
                                     f"--device ({', '.join(known) or 'none'})")
            args.device = known[0]
        require(args.device in known, f"no device {args.device!r} in {args.store}; devices: "
                                      f"{', '.join(known) or 'none'}")
        frame = store.measurements_frame(device_id=args.device, runtime=args.runtime, kinds=args.kind,
                                         ok_only=not args.all, accelerator=args.accelerator)
        quality = store.quality_frame(device_id=args.device, runtime=args.runtime,
                                      accelerator=args.accelerator)
    if args.csv:
        require(args.csv.parent.is_dir(), f"--csv {args.csv}: directory {args.csv.parent} does not exist")
        out = frame.copy()
        out["samples_ms"] = [json.dumps(s) for s in out["samples_ms"]]
        out["operator_ms"] = [json.dumps(o) if o is not None else "" for o in out["operator_ms"]]
        out.to_csv(args.csv, index=False)
        # `lutnas runs` counts every trial row: say which these are, or the two seem to disagree
        which = "trial rows (failed and discarded included)" if args.all else \
            "ok trial rows (--all adds failed and discarded ones)"
        console.print(f"wrote {len(out)} {which} of {out['key'].nunique()} blocks to {args.csv}")
        return 0
    rows = _block_rows(frame, quality)
    failed = frame[frame["status"] != "ok"]
    if args.json:
        print_json(rows)
        return 0
    console.print(_blocks_table(args.device, rows))
    # Same units as `lutnas runs` (trial rows) and a run's summary (blocks): say both.
    console.print(f"{len(rows)} blocks from {len(frame) - len(failed)} ok trial rows")
    if len(failed):
        console.print(f"{len(failed)} failed or discarded measurements, e.g. {failed['key'].iloc[0]}: "
                      f"{failed['status'].iloc[0][:120]}")
    return 0


def _blocks_table(device: str, rows: list[dict[str, Any]]) -> Table:
    """The rows of `_block_rows` as a rich table; the delegation and peak-memory columns appear
    only when some row has them (runners that print them, stores of schema 3)."""
    delegation = any(r["total_nodes"] is not None for r in rows)
    memory = any(r["peak_mem_mb"] is not None for r in rows)
    table = Table(title=f"{device}: median of trial medians (ms)")
    numbers = ("trials", "median ms", "95% CI ms", "+-", "cv", "delegated", "peak MB")
    columns = ["runtime", "threads", "cores", "accelerator", "key", "kind", "trials", "median ms",
               "95% CI ms", "+-", "cv", "statistic"]
    columns += (["delegated"] if delegation else []) + (["peak MB"] if memory else []) + ["flag"]
    for column in columns:
        table.add_column(column, justify="right" if column in numbers else "left")
    for r in rows:
        ci = f"{r['ci_low_ms']:.4f}-{r['ci_high_ms']:.4f}" if r["ci_low_ms"] is not None else "-"
        half = f"{(r['ci_high_ms'] - r['ci_low_ms']) / 2 / r['median_ms']:.1%}" \
            if r["ci_low_ms"] is not None and r["median_ms"] > 0 else "-"
        cells = [r["runtime"], str(r["threads"]), r["cores"], r["accelerator"], r["key"], r["kind"],
                 str(r["trials"]), f"{r['median_ms']:.4f}", ci, half,
                 f"{r['cv']:.1%}" if r["cv"] is not None else "-", r["statistic"] or "-"]
        if delegation:
            cells.append(f"{r['delegated_nodes']}/{r['total_nodes']} ({r['delegation_share']:.0%})"
                         if r["total_nodes"] else "-")
        if memory:
            cells.append(f"{r['peak_mem_mb']:.1f}" if r["peak_mem_mb"] is not None else "-")
        table.add_row(*cells, r["flag"])
    return table


def _runner_facts(group: Any) -> dict[str, Any]:
    """What the runner said about a block's trials beyond timings (store schema 3): which statistic
    was stored (several joined by '/'; 'average' is the runner's last resort), delegated / total
    nodes and their share (the latest trial's), runner flags, and the median peak memory (MB).
    None where no trial recorded it (runners that do not print it, rows from older stores)."""
    import pandas as pd

    statistics = sorted({s for s in group.get("statistic", []) if isinstance(s, str) and s})
    flags = sorted({f for text in group.get("runner_flags", []) if isinstance(text, str)
                    for f in text.split(",") if f})
    nodes = group[group["total_nodes"].notna()] if "total_nodes" in group else group.iloc[0:0]
    delegated = int(nodes["delegated_nodes"].iloc[-1]) if len(nodes) and \
        pd.notna(nodes["delegated_nodes"].iloc[-1]) else None
    total = int(nodes["total_nodes"].iloc[-1]) if len(nodes) else None
    peak = group["peak_mem_mb"].dropna() if "peak_mem_mb" in group else []
    return {"statistic": "/".join(statistics) or None, "delegated_nodes": delegated, "total_nodes": total,
            "delegation_share": delegated / total if delegated is not None and total else None,
            "runner_flags": flags, "peak_mem_mb": float(peak.median()) if len(peak) else None}


def _block_rows(frame: Any, quality: Any) -> list[dict[str, Any]]:
    """One row per block and setting: median of trial medians (ms), its 95% confidence interval,
    trials, CV and QC flag.

    The QC verdict and its CV (of the latest set of trials, the one QC judged) where there is one."""
    from lutnas.tables.store import cv_of, figure_of, median_ci

    flags = {(r.runtime, r.threads, r.core_mask, r.accelerator, r.precision, r.key): (r.flag, r.cv)
             for r in quality.itertuples()}
    ok = frame[frame["status"] == "ok"]
    rows = []
    for (runtime, threads, mask, accelerator, precision, key, kind), group in ok.groupby(
            ["runtime", "threads", "core_mask", "accelerator", "precision", "key", "kind"], sort=True):
        medians = group["median_ms"].tolist()
        flag, cv = flags.get((runtime, threads, mask, accelerator, precision, key), ("-", cv_of(medians)))
        ci = median_ci(medians)  # 95% interval of the figure (order statistics)
        rows.append({"runtime": runtime, "threads": int(threads), "cores": mask,
                     "accelerator": accelerator, "precision": precision, "key": key,
                     "kind": kind, "trials": len(medians), "median_ms": float(figure_of(medians)),
                     "ci_low_ms": ci[0] if ci else None, "ci_high_ms": ci[1] if ci else None,
                     "cv": float(cv) if cv is not None and cv == cv else None, "flag": flag,
                     **_runner_facts(group)})
    return rows
