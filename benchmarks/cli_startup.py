"""CLI start-up: wall time of the light `lutnas` commands, and which heavy libraries each one loads.

The issue's target is <= 1 s wall for `--help`, `space`, `table show|export|import-*`, `predict`,
`runs` and `measurements` (5.6 s for `--help` before the CLI imported per command), and <= 0.5 s
for `predict --config elasticvit:S1` on an `elasticvit` table (issue 13). Each command is run as a
user runs it, the installed `lutnas` script in a fresh process, `--repeats` times (min and median
reported; the first run also warms the file cache and writes the table's lookup sidecar, which
the `cold` row deletes before every run). One more run of each goes through a wrapper that, at
exit, lists which of torch, pandas, pyarrow, onnxruntime, sklearn, matplotlib, litert were
imported; that run is not timed, so the wrapper costs the timings nothing.

Inputs are made here: synthetic `tiny` and `elasticvit` tables (every block's latency from its
MACs, no device measured it), the OFA Note10 tables of tests/predictors/data imported with `table
import-ofa`, and an empty measurement store and one of 60 synthetic measurements.

    .venv/bin/python benchmarks/cli_startup.py               # 5 runs per command
    .venv/bin/python benchmarks/cli_startup.py --repeats 3   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LUTNAS = Path(sys.executable).parent / "lutnas"
OFA_TABLES = sorted((ROOT / "tests" / "predictors" / "data" / "ofa-note10").glob("*.yaml"))
HEAVY = ("torch", "pandas", "pyarrow", "onnxruntime", "sklearn", "matplotlib", "litert_torch",
         "ai_edge_litert")
TARGET_S = 1.0
PREDICT_TARGET_S = 0.5  # issue 13: one subnet's prediction on elasticvit

# Runs `lutnas.cli.main` as the installed script does and, at exit (also on sys.exit), writes the
# heavy modules that got imported to the file named by LUTNAS_BENCH_MODULES.
_WRAPPER = f"""
import atexit, json, os, sys
def _report():
    loaded = [m for m in {HEAVY!r} if m in sys.modules]
    with open(os.environ["LUTNAS_BENCH_MODULES"], "w") as f:
        json.dump(loaded, f)
atexit.register(_report)
from lutnas.cli import run
sys.argv[0] = "lutnas"
run()
"""


def tiny_table(path: Path, space_name: str = "tiny") -> Path:
    """A table of `space_name` whose block latencies come from their MACs (synthetic, for `predict`)."""
    from lutnas.device_agents.base import DeviceInfo
    from lutnas.space import SearchSpace, block_complexity
    from lutnas.tables.table import LatencyTable

    space = SearchSpace.load(space_name)
    latencies = {s.key: 0.02 + block_complexity(s).macs / 2e7 for s in space.unique_blocks()}
    device = DeviceInfo(device_id="synthetic-macs", kind="host", model="MACs model")
    settings = {"device_id": device.device_id, "runtime": "tflite", "threads": 1, "core_mask": "all",
                "accelerator": "cpu"}
    LatencyTable.from_latencies(latencies, device, settings, space_name, {"synthetic": True},
                                source="synthetic:macs").save(path)
    return path


def empty_store(path: Path) -> Path:
    from lutnas.tables.store import MeasurementStore

    MeasurementStore(path).close()
    return path


def small_store(path: Path, keys: int = 20, trials: int = 3) -> Path:
    """A store with one device, one run and `keys` x `trials` synthetic measurements of tiny's blocks."""
    from lutnas.device_agents.base import DeviceInfo, Measurement, RunnerInfo, RunSettings
    from lutnas.space import SearchSpace
    from lutnas.tables.store import MeasurementStore

    settings = RunSettings(runtime="onnxruntime", warmup=1, runs=5)
    device = DeviceInfo(device_id="synthetic-host", kind="host", model="synthetic")
    specs = SearchSpace.load("tiny").unique_blocks()[:keys]
    with MeasurementStore(path) as store:
        store.upsert_device(device)
        run = store.start_run(device.device_id, settings, "tiny", "block", [])
        for trial in range(trials):
            for i, spec in enumerate(specs):
                m = Measurement(spec.key, f"{i:064x}", trial, RunnerInfo("synthetic", "1"),
                                samples_ms=[0.1 + 0.01 * i] * settings.runs).fill_stats_from_samples()
                store.add_measurement(run, device.device_id, settings, spec.kind, m)
        store.finish_run(run, {})
    return path


def commands(work: Path) -> list[tuple[str, list[str]]]:
    ofa, tiny, ev = work / "ofa.parquet", work / "tiny.parquet", work / "elasticvit.parquet"
    empty, small = work / "empty.sqlite", work / "small.sqlite"
    return [
        ("--help", ["--help"]),
        ("space show tiny", ["space", "show", "tiny"]),
        ("space sample tiny -n 3", ["space", "sample", "tiny", "-n", "3", "--seed", "1"]),
        ("table import-ofa (2 YAMLs)", ["table", "import-ofa", *map(str, OFA_TABLES), "--out", str(ofa)]),
        ("table show (OFA import)", ["table", "show", str(ofa)]),
        ("table export --csv --json", ["table", "export", str(ofa), "--csv", str(work / "t.csv"),
                                       "--json", str(work / "t.json")]),
        ("predict tiny largest", ["predict", "--table", str(tiny), "--config", "largest"]),
        ("predict elasticvit:S1", ["predict", "--table", str(ev), "--config", "elasticvit:S1"]),
        (COLD, ["predict", "--table", str(ev), "--config", "elasticvit:S1"]),
        ("runs (empty store)", ["runs", "--store", str(empty)]),
        ("runs (60 measurements)", ["runs", "--store", str(small)]),
        ("measurements (empty store)", ["measurements", "--store", str(empty)]),
        ("measurements (60 measurements)", ["measurements", "--store", str(small)]),
    ]


# Reference rows, not lutnas commands: what an empty interpreter and `import pandas` cost right now,
# so a slow figure on a busy host can be told apart from a slow command.
REFERENCES = [("(python, nothing imported)", ["-c", "pass"]),
              ("(python -c 'import pandas')", ["-c", "import pandas"])]


COLD = "predict elasticvit:S1 (cold: no sidecar)"


def target_of(label: str) -> float:
    return PREDICT_TARGET_S if label.startswith("predict elasticvit") and label != COLD else TARGET_S


def time_command(argv: list[str], repeats: int, program: str = str(LUTNAS),
                 before: Callable[[], object] | None = None) -> tuple[list[float], int, str]:
    """Wall seconds of `repeats` runs of `program` (default lutnas), `before` called (untimed)
    ahead of each; exit code and last stderr line."""
    times, result = [], None
    for _ in range(repeats):
        if before is not None:
            before()
        started = time.perf_counter()
        result = subprocess.run([program, *argv], capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    assert result is not None
    errors = result.stderr.strip().splitlines()
    return times, result.returncode, errors[-1] if errors else ""


def heavy_modules(argv: list[str], work: Path) -> list[str]:
    report = work / "modules.json"
    report.unlink(missing_ok=True)
    env = dict(os.environ, LUTNAS_BENCH_MODULES=str(report))
    subprocess.run([sys.executable, "-c", _WRAPPER, *argv], capture_output=True, text=True, cwd=ROOT,
                   env=env)
    return json.loads(report.read_text()) if report.is_file() else ["?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS / "cli_startup.json")
    args = parser.parse_args()
    console = Console()
    load_before = os.getloadavg()[0]  # the host is shared: say how busy it was, start and end
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny_table(work / "tiny.parquet")
        tiny_table(work / "elasticvit.parquet", "elasticvit")
        sidecar = work / ".elasticvit.parquet.lookup.json"
        empty_store(work / "empty.sqlite")
        small_store(work / "small.sqlite")
        for label, argv in commands(work):
            before = (lambda: sidecar.unlink(missing_ok=True)) if label == COLD else None
            times, code, last_err = time_command(argv, args.repeats, before=before)
            if before:
                before()
            rows.append({"command": label, "argv": argv[:3], "exit_code": code, "target_s": target_of(label),
                         "min_s": min(times), "median_s": statistics.median(times),
                         "times_s": [round(t, 4) for t in times],
                         "heavy_modules": heavy_modules(argv, work),
                         "stderr_last_line": last_err})
        for label, argv in REFERENCES:
            times, code, last_err = time_command(argv, args.repeats, sys.executable)
            rows.append({"command": label, "argv": argv, "exit_code": code, "reference": True,
                         "min_s": min(times), "median_s": statistics.median(times),
                         "times_s": [round(t, 4) for t in times], "heavy_modules": [],
                         "stderr_last_line": last_err})

    table = Table(title=f"lutnas start-up, {args.repeats} runs each (target <= {TARGET_S:g} s; "
                        f"predict elasticvit <= {PREDICT_TARGET_S:g} s)")
    for column in ("command", "min s", "median s", "target s", "exit", "heavy modules imported"):
        table.add_column(column, justify="left" if column in ("command", "heavy modules imported")
                         else "right")
    for row in rows:
        slow = not row.get("reference") and row["median_s"] > row["target_s"]
        table.add_row(row["command"], f"{row['min_s']:.2f}",
                      f"[red]{row['median_s']:.2f}[/]" if slow else f"{row['median_s']:.2f}",
                      "-" if row.get("reference") else f"{row['target_s']:g}",
                      str(row["exit_code"]), ", ".join(row["heavy_modules"]) or "-")
    console.print(table)
    for row in rows:
        if row["exit_code"]:
            console.print(f"[yellow]{row['command']}: exit {row['exit_code']}: {row['stderr_last_line']}[/]")
    over = [r["command"] for r in rows if not r.get("reference") and r["median_s"] > r["target_s"]]
    console.print(f"over target (median): {', '.join(over) or 'none'}")

    result = {"benchmark": "cli_startup", "target_s": TARGET_S, "predict_target_s": PREDICT_TARGET_S,
              "repeats": args.repeats,
              "host": {"machine": platform.machine(), "python": platform.python_version(),
                       "cpus": os.cpu_count(), "load_avg_1min_before": load_before,
                       "load_avg_1min": os.getloadavg()[0]},
              "commands": rows, "over_target": over}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
