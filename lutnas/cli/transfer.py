"""`lutnas transfer --from TABLE_A (--device B | --to-table TABLE_B) --samples K --out TABLE`."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from lutnas.cli._common import console, err_console, positive_int
from lutnas.predictors.features import measured_latencies
from lutnas.predictors.serialize import predictor_path, save_predictor
from lutnas.predictors.transfer import TransferPredictor, choose_samples, transfer_report
from lutnas.tables.table import LatencyTable


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("transfer", help="predict a new device's table from a full table of "
                              "another device and K blocks measured on the new one")
    p.add_argument("--from", dest="source", required=True, type=Path, metavar="TABLE_A",
                   help="full latency table of the known device (.parquet)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--device", metavar="ADDRESS",
                       help="new device to measure the K blocks on (local, adb:HOST[:PORT], usb)")
    where.add_argument("--to-table", type=Path, metavar="TABLE_B",
                       help="use blocks already measured on the new device: K of them fit, the "
                            "rest are the held-out report")
    p.add_argument("--samples", type=positive_int, default=50, metavar="K",
                   help="blocks of the new device to fit on (default 50)")
    p.add_argument("--holdout", type=int, default=0, metavar="H",
                   help="with --device: also measure H other blocks to report the error (default 0)")
    p.add_argument("--runtime", help="runtime on the new device (default: table A's)")
    p.add_argument("--threads", type=int, help="threads on the new device (default: table A's)")
    p.add_argument("--trials", type=positive_int, default=5, help="fresh processes per block (default 5)")
    p.add_argument("--store", default="measurements.sqlite", help="measurement store for --device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="table of the new device to write (.parquet); "
                   "the transfer predictor is saved beside it")
    p.set_defaults(handler=transfer_command)


def transfer_command(args: argparse.Namespace) -> int:
    table_a = LatencyTable.load(args.source)
    samples = choose_samples(table_a, args.samples, args.seed)
    if args.to_table is not None:
        table_b = LatencyTable.load(args.to_table)
        known_b = measured_latencies(table_b)
        picked = {s.key: float(known_b[s.key]) for s in samples if s.key in known_b.index}
        if len(picked) < min(len(samples), 3):
            # Table B lacks some chosen blocks: fill from what B has, still spanning kinds.
            picked = {s.key: float(known_b[s.key])
                      for s in choose_samples(known_b[known_b.index.isin(table_a.frame.index)],
                                              args.samples, args.seed)}
        heldout = known_b.drop(index=list(picked))
        device, settings = table_b.device, dict(table_b.settings)
        base_rows = table_b.frame
    else:
        picked, heldout, device, settings = _measure_on_device(args, table_a, samples)
        base_rows = None
    predictor = TransferPredictor(random_state=args.seed).fit_transfer(table_a, picked)
    report = transfer_report(predictor, heldout)
    # Held-out blocks measured on B are measurements of B: the table keeps them, not predictions.
    extra_measured = heldout if args.to_table is None else None
    out = _write_table(args.out, predictor, table_a, device, settings, base_rows, report, args,
                       extra_measured)
    saved = save_predictor(predictor, predictor_path(out, "transfer"),
                           extra={"from": str(args.source), "report": report})
    _print(report, out, saved, len(picked))
    return 0


def _measure_on_device(args: argparse.Namespace, table_a: LatencyTable,
                       samples: list[Any]) -> tuple[dict[str, float], pd.Series, Any, dict[str, Any]]:
    from lutnas.device_agents.base import RunSettings
    from lutnas.device_agents.factory import open_agent
    from lutnas.profiler.adaptive_run import store_measurer
    from lutnas.space import BlockSpec
    from lutnas.tables.store import MeasurementStore

    settings = RunSettings(runtime=args.runtime or str(table_a.settings.get("runtime", "tflite")),
                           threads=int(args.threads or table_a.settings.get("threads") or 1))
    extra: list[BlockSpec] = []
    if args.holdout > 0:
        chosen = {s.key for s in samples}
        rest = [k for k in table_a.keys if k not in chosen and not k.startswith("subnet:")]
        drawn = random.Random(args.seed).sample(rest, min(args.holdout, len(rest)))
        extra = [BlockSpec.parse(k) for k in drawn]
    with open_agent(args.device) as agent, MeasurementStore(args.store) as store:
        measure = store_measurer(agent, settings, args.trials, store)
        err_console.print(f"measuring {len(samples)} + {len(extra)} blocks on {args.device} ...")
        figures = measure(list(samples) + extra)
        info = agent.info()
    picked = {s.key: figures[s.key] for s in samples if s.key in figures}
    heldout = pd.Series({s.key: figures[s.key] for s in extra if s.key in figures}, dtype=float)
    return picked, heldout, info, LatencyTable.settings_from(info.device_id, settings)


def _write_table(out: Path, predictor: TransferPredictor, table_a: LatencyTable, device: Any,
                 settings: dict[str, Any], base_rows: pd.DataFrame | None, report: dict[str, Any],
                 args: argparse.Namespace, extra_measured: pd.Series | None = None) -> Path:
    predicted = predictor.predict_table()
    # Blocks measured on B: the K fitted ones, held-out ones measured here, B's own rows where known.
    measured = predicted.loc[predicted["source"] == "measured", "median_ms"]
    if extra_measured is not None and len(extra_measured):
        extra = extra_measured[extra_measured.index.isin(predicted.index)].astype(float)
        measured = pd.concat([measured.drop(index=extra.index, errors="ignore"), extra])
    rows = measured.to_frame("median_ms")
    if base_rows is not None:
        own = rows.index.intersection(base_rows.index)
        rows = pd.concat([base_rows.loc[own], rows.drop(index=own)])
    metadata = {"transfer": {"from": str(args.source), "samples": len(predictor.measured_),
                             "report": report}, "space_yaml": table_a.metadata.get("space_yaml")}
    table = LatencyTable.from_latencies(rows, device, settings, table_a.space, metadata)
    return table.completed_with(predicted[["median_ms"]], source="predicted:transfer").save(out)


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
    console.print(json.dumps({k: v for k, v in report.items() if k != "by_kind"}))

