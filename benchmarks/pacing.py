"""Paced against unpaced timing, end to end through the CLI a user runs (issue 19: trust at scale).

For each round and mode (unpaced, then `--pace`; the order alternates between rounds so a host
that drifts over the run hits both alike), into a fresh store: `profile-device` every block of
the space (LiteRT, 1 thread, fresh process per trial), `build-table --calibrate 6`, and `evaluate`
on held-out subnets measured end to end. Reported per mode: the trial-to-trial CV of the blocks
(median and 90th percentile), the share QC flagged, profiling wall time, and the raw LUT and
corrected LUT against the held-out subnets (MAPE, within +-5% / +-10%, Spearman).

Models come from the model cache (`--cache`, default $LUTNAS_CACHE): export cost is not what is
compared, so a warm cache keeps the run to ~2-3 min per mode and round on `evmini`.

    .venv/bin/python benchmarks/pacing.py --space evmini --rounds 2 --samples 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _report import timed_command
from rich.console import Console
from rich.table import Table

from lutnas.tables.store import MeasurementStore, cv_of
from lutnas.tables.table import build_table

RESULTS = Path(__file__).parent / "results"
BIN = Path(sys.executable).parent


def _block_stats(store_path: Path) -> dict[str, float]:
    with MeasurementStore(store_path) as store:
        frame = store.measurements_frame(kinds=None)
        blocks = frame[~frame["kind"].isin(["subnet", "hostcheck"])]
        device = str(blocks["device_id"].iloc[0])
        settings = build_table(store).run_settings()
        medians = store.trial_medians(device, settings, set(blocks["key"]))
        quality = store.quality_frame(device_id=device)
    cvs = sorted(c for c in (cv_of(v) for v in medians.values()) if c is not None)
    # QC's flags (never settled, or within a few timer steps); "re-measured" settled with more trials
    flagged = quality[quality["key"].isin(medians) & quality["flag"].isin(["never-settled",
                                                                           "below-resolution"])]
    return {"blocks": len(medians), "cv_median": statistics.median(cvs),
            "cv_p90": cvs[round(0.9 * (len(cvs) - 1))], "flagged_share": len(flagged) / len(medians)}


def one(space: str, pace: bool, samples: int, trials: int, work: Path, env: dict[str, str]) -> dict:
    store, table, report = work / "host.sqlite", work / "table.parquet", work / "evaluate.json"
    profile = [str(BIN / "profile-device"), "--device", "local", "--space", space, "--runtime", "tflite",
               "--threads", "1", "--trials", str(trials), "--warmup", "20", "--runs", "100",
               "--store", str(store)] + (["--pace"] if pace else [])
    profile_s = timed_command(profile, env)
    timed_command([str(BIN / "lutnas"), "build-table", "--store", str(store), "--out", str(table),
          "--calibrate", "6"], env)
    timed_command([str(BIN / "lutnas"), "evaluate", "--device", "local", "--table", str(table), "--samples",
          str(samples), "--store", str(store), "--plot", str(work / "evaluate.png"), "--json", str(report)],
         env)
    reports = {r["predictor"]: r for r in json.loads(report.read_text())["reports"]}
    row: dict = {"mode": "paced" if pace else "unpaced", "profile_s": profile_s,
                 "load_avg": os.getloadavg()[0], **_block_stats(store)}
    for label, name in (("LUT", "raw"), ("LUT + correction", "corrected")):
        r = reports[label]
        row.update({f"{name}_mape": r["mape"], f"{name}_within_5": r["within_5"],
                    f"{name}_within_10": r["within_10"], f"{name}_spearman": r["spearman"]})
    return row


def show(rows: list[dict]) -> None:
    table = Table(title="paced vs unpaced timing (LiteRT, 1 thread, host CPU)")
    columns = ["mode", "blocks", "cv_median", "cv_p90", "flagged_share", "profile_s", "raw_mape",
               "raw_within_5", "corrected_mape", "corrected_within_5", "corrected_within_10",
               "corrected_spearman", "load_avg"]
    for column in columns:
        table.add_column(column, justify="left" if column == "mode" else "right")
    for row in rows:
        table.add_row(*[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns])
    Console(width=220).print(table)  # whole columns in logs and pipes too


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="evmini")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=20, help="held-out subnets per evaluation")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--cache", default=os.environ.get("LUTNAS_CACHE"),
                        help="model cache (default $LUTNAS_CACHE, else lutnas's default)")
    parser.add_argument("--json", default=str(RESULTS / "pacing.json"))
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if args.cache:
        env["LUTNAS_CACHE"] = args.cache
    rows = []
    with tempfile.TemporaryDirectory(prefix="lutnas-pacing-") as tmp:
        for round_index in range(args.rounds):
            order = (False, True) if round_index % 2 == 0 else (True, False)
            for pace in order:
                work = Path(tmp) / f"r{round_index}-{'paced' if pace else 'unpaced'}"
                work.mkdir()
                rows.append({"round": round_index,
                             **one(args.space, pace, args.samples, args.trials, work, env)})
                show(rows)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"space": args.space, "samples": args.samples,
                                           "trials": args.trials, "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
