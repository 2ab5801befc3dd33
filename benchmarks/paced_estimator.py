"""Which paced statistic varies least from trial to trial: each run against its own pace invoke, or
the two medians against each other (issue 19: QC and the proof are bounded by trial-to-trial noise).

Profiles a seeded slice of a space with `profile-device --pace` (host worker, 1 thread, no QC
extension: every block gets exactly `--trials` fresh-process trials) into a fresh store, once per
cache state, then reads each trial's two ratios from the store: "medians", `median_ms / pace_ms`
(the ratio of the medians, what paced figures were before store schema 5), and "paired",
`pace_ratio` (the median over runs of run ms / the pace invoke's ms right after it). Reported per
cache state and statistic: the trial-to-trial CV of the blocks (median and 90th percentile), the
trials a ±2% 95% interval of the median would need at that CV (the QC's advice line,
`trials_for_half_width`), the share of blocks whose 95% interval (order statistics, `ci_half_width`) is
within ±2% after the trials taken, and the median over blocks of paired / medians (their systematic
difference).

Models come from profile-device's model cache ($LUTNAS_CACHE or its default): .onnx exports of a
60-block slice take seconds; a run took 135-150 s cold-llc and 20 s warm on this 2-core host.

    .venv/bin/python benchmarks/paced_estimator.py --limit 60 --trials 10 --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from _report import print_rows, timed_command

from lutnas.tables.frame import WHOLE_MODEL_KINDS
from lutnas.tables.store import MeasurementStore, ci_half_width, cv_of, trials_for_half_width

RESULTS = Path(__file__).parent / "results"
BIN = Path(sys.executable).parent


def profile(store: Path, args: argparse.Namespace, cache_state: str) -> float:
    """Wall seconds of one profile-device run into `store`."""
    argv = [str(BIN / "lutnas"), "profile-device", "--space", args.space, "--resolution",
            str(args.resolution), "--runtime", args.runtime, "--limit", str(args.limit), "--seed",
            str(args.seed), "--pace", "--cache-state", cache_state, "--trials", str(args.trials),
            "--max-trials", str(args.trials), "--runs", str(args.runs), "--warmup", str(args.warmup),
            "--store", str(store)]
    return timed_command(argv)


def trial_ratios(store_path: Path) -> dict[str, dict[str, list[float]]]:
    """statistic -> key -> that statistic of every ok trial of the key (unitless ratios)."""
    with MeasurementStore(store_path) as store:
        frame = store.measurements_frame(ok_only=True)
    blocks = frame[~frame["kind"].isin(WHOLE_MODEL_KINDS) & frame["pace_ratio"].notna()]
    out: dict[str, dict[str, list[float]]] = {"medians": {}, "paired": {}}
    for key, group in blocks.groupby("key"):
        out["medians"][key] = (group["raw_median_ms"] / group["pace_ms"]).tolist()
        out["paired"][key] = group["pace_ratio"].tolist()
    return out


def summarise(per_key: dict[str, list[float]], bound: float) -> dict[str, float]:
    cvs = sorted(c for c in (cv_of(v) for v in per_key.values()) if c is not None)
    settled = [(ci_half_width(v) or float("inf")) / statistics.median(v) <= bound
               for v in per_key.values()]
    cv = statistics.median(cvs)
    return {"blocks": len(per_key), "cv_median_pct": round(100 * cv, 2),
            "cv_p90_pct": round(100 * cvs[round(0.9 * (len(cvs) - 1))], 2),
            "trials_for_bound": trials_for_half_width(cv, bound),
            "settled_share": round(float(np.mean(settled)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="elasticvit")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-states", nargs="+", default=["cold-llc", "warm"])
    parser.add_argument("--ci-bound", type=float, default=0.02)
    parser.add_argument("--json", default=str(RESULTS / "paced_estimator.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cache_state in args.cache_states:
            store = Path(tmp) / f"{cache_state}.sqlite"
            load_before = round(os.getloadavg()[0], 2)
            seconds = profile(store, args, cache_state)
            ratios = trial_ratios(store)
            rom, mor = ratios["medians"], ratios["paired"]
            shift = statistics.median(statistics.median(mor[k]) / statistics.median(rom[k]) for k in mor)
            for name, per_key in ratios.items():
                rows.append({"cache_state": cache_state, "statistic": name,
                             **summarise(per_key, args.ci_bound),
                             "paired_over_medians": round(shift, 4),
                             "profile_s": round(seconds, 1), "load_before": load_before,
                             "load_after": round(os.getloadavg()[0], 2)})
    print_rows(f"paced statistics, {args.space} {args.resolution} px, {args.runtime}, "
               f"{args.limit} blocks x {args.trials} trials x {args.runs} runs", rows, width=160)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"args": vars(args), "cpu_count": os.cpu_count(),
                                           "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
