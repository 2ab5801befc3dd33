"""int8 vs fp32 LiteRT latency per block kind on this host (issue 15).

A few blocks of each kind of a space at one resolution are exported twice, fp32 TFLite and
full-integer int8 TFLite (profiler/quantize.py), then measured by the local agent: every trial is a
fresh worker process over all files of one precision in a shuffled order, fp32 and int8 trials
alternating. A block's latency is the median of its trial medians; its speed-up is fp32 / int8.
The host's `uptime` is recorded before and after (other jobs may share it).

    .venv/bin/python benchmarks/int8_speedup.py --per-kind 3 --trials 5

Prints a table; writes benchmarks/results/int8_speedup.json and int8_speedup.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import time
from pathlib import Path

from lutnas.device_agents.base import ModelFile, RunSettings, parse_cores
from lutnas.device_agents.local import LocalAgent
from lutnas.profiler.export import ModelCache, export_many, format_for, tool_versions
from lutnas.space import SearchSpace

RESULTS = Path(__file__).parent / "results"
PRECISIONS = ("fp32", "int8")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def pick_blocks(space: SearchSpace, resolution: int, per_kind: int, seed: int) -> list:
    """`per_kind` blocks of each kind, drawn with `seed` from the blocks the space has at `resolution`."""
    rng = random.Random(seed)
    by_kind: dict[str, list] = {}
    for spec in space.unique_blocks([resolution]):
        by_kind.setdefault(spec.kind, []).append(spec)
    return [s for kind in sorted(by_kind)
            for s in rng.sample(by_kind[kind], min(per_kind, len(by_kind[kind])))]


def measure(files: dict[str, list[ModelFile]], trials: int, settings: dict[str, RunSettings],
            seed: int) -> dict[str, dict[str, list[float]]]:
    """precision -> key -> the median of each trial (ms); fresh worker process per trial."""
    rng = random.Random(seed)
    medians: dict[str, dict[str, list[float]]] = {p: {} for p in files}
    agent = LocalAgent()
    for trial in range(trials):
        for precision in (PRECISIONS if trial % 2 == 0 else PRECISIONS[::-1]):
            batch = list(files[precision])
            rng.shuffle(batch)
            for m in agent.measure_batch(batch, settings[precision], trial):
                if m.ok and m.median_ms is not None:
                    medians[precision].setdefault(m.key, []).append(m.median_ms)
                else:
                    print(f"  {precision} {m.key}: {m.status}")
        print(f"trial {trial + 1}/{trials} done")
    return medians


def summarise(specs: list, medians: dict[str, dict[str, list[float]]]) -> dict:
    """Per block: fp32, int8 ms and speed-up; per kind: median and range of the speed-ups."""
    blocks = []
    for spec in specs:
        fp32, int8 = (medians[p].get(spec.key) for p in PRECISIONS)
        if not fp32 or not int8:
            continue
        f, i = statistics.median(fp32), statistics.median(int8)
        blocks.append({"key": spec.key, "kind": spec.kind, "fp32_ms": f, "int8_ms": i, "speedup": f / i})
    kinds = {}
    for kind in sorted({b["kind"] for b in blocks}):
        ups = [b["speedup"] for b in blocks if b["kind"] == kind]
        kinds[kind] = {"blocks": len(ups), "median_speedup": statistics.median(ups),
                       "min_speedup": min(ups), "max_speedup": max(ups),
                       "fp32_ms_sum": sum(b["fp32_ms"] for b in blocks if b["kind"] == kind),
                       "int8_ms_sum": sum(b["int8_ms"] for b in blocks if b["kind"] == kind)}
    return {"blocks": blocks, "kinds": kinds}


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(summary["kinds"])
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for x, kind in enumerate(kinds):
        ups = [b["speedup"] for b in summary["blocks"] if b["kind"] == kind]
        ax.scatter([x] * len(ups), ups, color="tab:blue", alpha=0.7, zorder=3)
        ax.hlines(summary["kinds"][kind]["median_speedup"], x - 0.3, x + 0.3, color="tab:red", zorder=4)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("fp32 / int8 latency (speed-up)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="elasticvit")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--per-kind", type=int, default=3)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cores", help="pin to these cores, e.g. 0")
    parser.add_argument("--workers", type=int, default=2, help="export processes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    uptime_before, started = _uptime(), time.time()
    space = SearchSpace.load(args.space)
    specs = pick_blocks(space, args.resolution, args.per_kind, args.seed)
    cache = ModelCache()
    files, settings = {}, {}
    for precision in PRECISIONS:
        fmt = format_for("tflite", precision)
        entries = export_many(specs, fmt, cache, workers=args.workers)
        files[precision] = [ModelFile(e.path, k, e.sha256) for k, e in entries.items()]
        settings[precision] = RunSettings(runtime="tflite", precision=precision, threads=args.threads,
                                          warmup=args.warmup, runs=args.runs,
                                          cores=parse_cores(args.cores) if args.cores else None)
    exported_s = time.time() - started
    summary = summarise(specs, measure(files, args.trials, settings, args.seed))
    print(f"\n{'kind':8} {'blocks':>6} {'fp32 ms':>9} {'int8 ms':>9} {'speed-up median':>16} {'range':>13}")
    for kind, k in summary["kinds"].items():
        print(f"{kind:8} {k['blocks']:>6} {k['fp32_ms_sum']:>9.3f} {k['int8_ms_sum']:>9.3f} "
              f"{k['median_speedup']:>16.2f} {k['min_speedup']:>6.2f}-{k['max_speedup']:.2f}")
    record = {"space": args.space, "resolution": args.resolution, "per_kind": args.per_kind,
              "trials": args.trials, "warmup": args.warmup, "runs": args.runs, "threads": args.threads,
              "cores": args.cores, "host": platform.processor() or platform.machine(),
              "versions": tool_versions(), "export_s": round(exported_s, 1),
              "total_s": round(time.time() - started, 1), "uptime_before": uptime_before,
              "uptime_after": _uptime(), **summary}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "int8_speedup.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(summary, RESULTS / "int8_speedup.png",
         f"int8 vs fp32 LiteRT, {args.space} {args.resolution} px, {args.threads} thread(s), host "
         f"(load: {uptime_before.split('load average:')[-1].strip()})")
    print(f"\nwrote {RESULTS / 'int8_speedup.json'} and .png; uptime before: {uptime_before}; "
          f"after: {record['uptime_after']}")


if __name__ == "__main__":
    main()
