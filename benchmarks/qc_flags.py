"""How many blocks the QC flags on this host with profile-device's defaults (issue 19: "QC flags
<= 10% of `elasticvit` 128 px blocks on a quiet host").

Profiles a seeded slice of a space (`--limit` blocks of `--space` at `--resolution`) with
`profile-device`'s own defaults (5 trials, QC adding trials up to 20 until the 95% interval of each
block's median is within +-2%, warm cache, 10 warm-up and 50 timed runs) into a fresh store per
mode, unpaced (the default) and `--pace`, and reads the QC's verdicts back from the store: the share
of blocks flagged never-settled or below-resolution, trials taken per block, the median trial-to-trial
CV and the median relative half-width of the interval. Load averages before and after each mode say
how quiet the host was.

Models come from profile-device's model cache ($LUTNAS_CACHE or its default); exporting 100 .tflite
blocks from nothing takes ~2 min here; the script exports first (`export_s`), so the
profile times are measurement only.

    .venv/bin/python benchmarks/qc_flags.py --limit 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _report import print_rows, timed_command

from lutnas.profiler.export import ModelCache, export_many, format_for, pace_file, shutdown_export_pool
from lutnas.profiler.plan import make_plan
from lutnas.space import SearchSpace
from lutnas.tables.frame import WHOLE_MODEL_KINDS
from lutnas.tables.store import MeasurementStore, ci_half_width, cv_of

RESULTS = Path(__file__).parent / "results"
BIN = Path(sys.executable).parent
FLAGGED = ("never-settled", "below-resolution")


def export(args: argparse.Namespace) -> float:
    """Seconds to export the slice and the pace model into the model cache (0 when cached)."""
    start = time.perf_counter()
    space = SearchSpace.load(args.space)
    specs = make_plan(space, [args.resolution], "block", args.limit, None, args.seed).specs
    cache = ModelCache()
    export_many(specs, format_for(args.runtime), cache, workers=2)
    pace_file(args.runtime, "fp32", cache)
    shutdown_export_pool()
    return time.perf_counter() - start


def profile(store: Path, args: argparse.Namespace, pace: bool) -> float:
    """Wall seconds of one profile-device run into `store`."""
    argv = [str(BIN / "lutnas"), "profile-device", "--space", args.space, "--resolution",
            str(args.resolution), "--runtime", args.runtime, "--limit", str(args.limit), "--seed",
            str(args.seed), "--cache-state", args.cache_state, "--store", str(store)]
    return timed_command(argv + (["--pace"] if pace else []))


def verdicts(store_path: Path) -> dict[str, float]:
    """The QC's flags and the spread of the blocks' trial figures in one store."""
    with MeasurementStore(store_path) as store:
        frame = store.measurements_frame(ok_only=True)
        blocks = frame[~frame["kind"].isin(WHOLE_MODEL_KINDS)]
        quality = store.quality_frame()
        figures: dict[str, list[float]] = {}
        for key, group in blocks.groupby("key"):
            figures[key] = group["median_ms"].tolist()  # paced rows: in the pace model's units
    quality = quality[quality["key"].isin(figures)]
    flagged = quality[quality["flag"].isin(FLAGGED)]
    cvs = [c for c in (cv_of(v) for v in figures.values()) if c is not None]
    halves = [ci_half_width(v) or float("inf") for v in figures.values()]  # relative already
    counts = quality["flag"].value_counts().to_dict()
    return {"blocks": len(figures), "flagged": len(flagged),
            "flagged_share": round(len(flagged) / max(1, len(figures)), 3),
            "flags": {str(k): int(v) for k, v in counts.items()},
            "trials_mean": round(statistics.mean(len(v) for v in figures.values()), 2),
            "cv_median_pct": round(100 * statistics.median(cvs), 2),
            "ci_half_width_median_pct": round(100 * statistics.median(halves), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="elasticvit")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--runtime", default="tflite")
    parser.add_argument("--cache-state", default="warm")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["unpaced", "paced"], choices=["unpaced", "paced"])
    parser.add_argument("--json", default=None, help="default results/qc_flags_<runtime>_<cache>.json")
    args = parser.parse_args()
    export_s = round(export(args), 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            store = Path(tmp) / f"{mode}.sqlite"
            load_before = round(os.getloadavg()[0], 2)
            seconds = profile(store, args, mode == "paced")
            rows.append({"mode": mode, **verdicts(store), "profile_s": round(seconds, 1),
                         "export_s": export_s, "load_before": load_before,
                         "load_after": round(os.getloadavg()[0], 2)})
    print_rows(f"QC verdicts, profile-device defaults: {args.space} {args.resolution} px, "
               f"{args.runtime}, {args.cache_state}, {args.limit} blocks", rows)
    out = Path(args.json or RESULTS / f"qc_flags_{args.runtime}_{args.cache_state}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "cpu_count": os.cpu_count(), "rows": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
