"""`profile-device --dry-run --probe` against the real run it projects (issue 19: within +-20%).

For each device (the simulated phone of the tests, `python -m tests.adbd`, whose `benchmark_model`
times the .tflite with LiteRT on this host; and the host worker): export and push the plan once (a
throwaway store), then the projection (`--dry-run --probe`), then the same profile into a fresh
store, timed. QC cannot add trials (`--max-trials` = `--trials`), so the projection's lower figure
is the one to compare, and drift re-measurement is off (`--drift-bound 10`: on a shared host
its extra trials are the host's noise, not the plan's cost); the measured side is the run's wall
time less its export time (both from the summary line `... models in X s; wall time Y s`).

    .venv/bin/python benchmarks/dry_run_projection.py
    .venv/bin/python benchmarks/dry_run_projection.py --limit 24 --trials 3 --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _seconds(text: str) -> float:
    """'~12 s' or '~4.3 min' of the dry run's device-time line, in seconds."""
    match = re.search(r"device time: ~([\d.]+) (s|min)", text)
    if not match:
        raise SystemExit(f"no device time in the dry run's output:\n{text}")
    return float(match.group(1)) * (60.0 if match.group(2) == "min" else 1.0)


def _profile(common: list[str], extra: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "profile-device"), *common, *extra], capture_output=True,
                            text=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"profile-device {' '.join(extra)} failed ({result.returncode}):\n"
                         f"{result.stdout}\n{result.stderr}")
    return result


def measure_device(name: str, device_flags: list[str], args: argparse.Namespace, work: Path,
                   env: dict[str, str]) -> dict:
    """One device: warm the caches, project, run; the row of the results."""
    common = [*device_flags, "--space", "tiny", "--limit", str(args.limit), "--trials", str(args.trials),
              "--max-trials", str(args.trials), "--warmup", str(args.warmup), "--runs", str(args.runs),
              "--seed", "1", "--drift-bound", "10"]
    _profile(common, ["--store", str(work / f"{name}-warm.sqlite")], env)  # export + push once
    start = time.perf_counter()
    dry = _profile(common, ["--dry-run", "--probe", "--store", str(work / "dry.sqlite")], env)
    probe_s = time.perf_counter() - start
    projected = _seconds(dry.stdout)
    run = _profile(common, ["--store", str(work / f"{name}.sqlite")], env)
    times = re.search(r"models in ([\d.]+) s; wall time ([\d.]+) s", run.stdout)
    if not times:
        raise SystemExit(f"no summary line in the run's output:\n{run.stdout}")
    measured = float(times.group(2)) - float(times.group(1))
    return {"device": name, "projected_s": round(projected, 2), "measured_s": round(measured, 2),
            "error_pct": round(100.0 * (projected - measured) / measured, 1), "probe_s": round(probe_s, 2),
            "probe_line": dry.stdout.splitlines()[0], "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=16, help="blocks of `tiny` (default 16)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    console = Console(highlight=False)
    work = Path(tempfile.mkdtemp(prefix="lutnas-projection-"))
    env = dict(os.environ, LUTNAS_ADB_KEY=str(work / "adbkey"), LUTNAS_CACHE=str(work / "cache"))
    port = _free_port()
    phone = subprocess.Popen([sys.executable, "-m", "tests.adbd", "--port", str(port), "--profile", "pixel7"],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        phone.stdout.readline()  # "listening on ..." once it serves
        load_before = round(os.getloadavg()[0], 2)
        rows = [measure_device("simulated-pixel7", ["--device", f"adb:127.0.0.1:{port}", "--runner",
                                                    "tests/adbd/benchmark_model"], args, work, env),
                measure_device("local", ["--device", "local"], args, work, env)]
    finally:
        phone.terminate()
        phone.wait(timeout=30)
    table = Table(title=f"dry-run projection vs run: tiny, {args.limit} blocks, {args.trials} trials, "
                        f"{args.warmup}+{args.runs} runs")
    for column in ("device", "projected s", "measured s", "error %", "probe s"):
        table.add_column(column, justify="left" if column == "device" else "right")
    for row in rows:
        table.add_row(row["device"], f"{row['projected_s']:.1f}", f"{row['measured_s']:.1f}",
                      f"{row['error_pct']:+.1f}", f"{row['probe_s']:.1f}")
    console.print(table)
    for row in rows:
        console.print(row["probe_line"])
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "dry_run_projection.json"
    out.write_text(json.dumps({"limit": args.limit, "trials": args.trials, "warmup": args.warmup,
                               "runs": args.runs,
                               "load_before": load_before, "rows": rows, "target_pct": 20}, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
