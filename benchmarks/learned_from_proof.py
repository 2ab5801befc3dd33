"""Learned and transfer predictors on the LUT proof's fresh-process measurements (issue 17).

`predictor_accuracy.py` measures every block of its sampled subnets and the subnets themselves
through the profiling loop (a fresh process per trial, QC on the median's interval, host checks):
its work folder keeps the table (blocks + calibration subnets) and its JSON the held-out subnets.
This script measures nothing. It hides blocks from that table and asks how well a predictor that
saw only some of them prices the same held-out subnets, under the same whole-model correction:

- learned: `LearnedPredictor` fitted on N blocks, N = 10/25/50 % of the resolution's plan (the share
  of the plan a user would profile), the rest of each subnet's blocks predicted; `--repeats` random
  block samples per share, reported as mean and range (the spread between repeats);
- transfer: `TransferPredictor` from another table of the same blocks (`--source`: another runtime
  or precision standing in for another device) with 50 measured blocks of this one, `--repeats`
  choices of those 50;
- the LUT with every block measured, the ceiling both are held to.

    .venv/bin/python benchmarks/learned_from_proof.py \
        --proof benchmarks/results/predictor_accuracy_elasticvit-onnxruntime-t1-r128-coldl2.json \
        --table /tmp/pa/elasticvit-onnxruntime-t1-r128-coldl2.parquet \
        --source /tmp/pa/elasticvit-tflite-t1-r128-coldl2-int8.parquet
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmark's CompletedTable
from predictor_accuracy_learned import CompletedTable  # noqa: E402

from lutnas.predictors.learned import LearnedPredictor  # noqa: E402
from lutnas.predictors.metrics import accuracy  # noqa: E402
from lutnas.predictors.transfer import TransferPredictor, choose_samples  # noqa: E402
from lutnas.space import SubnetConfig  # noqa: E402
from lutnas.tables.table import LatencyTable  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SHARES = (0.10, 0.25, 0.50)


def _calibration(table: LatencyTable, space) -> tuple[list, np.ndarray, float | None]:
    """The proof's calibration subnets (configs, measured ms, measured invoke ms) from the table."""
    record = table.correction or {}
    if not record.get("configs"):
        raise SystemExit(f"{table.path if hasattr(table, 'path') else 'the table'} has no calibration "
                         f"subnets; give the table predictor_accuracy.py saved (build with --calibrate)")
    configs = [space.validate(SubnetConfig.from_dict(c)) for c in record["configs"]]
    invoke = float(record["invoke_ms"]) if record.get("invoke_measured") else None
    return configs, np.asarray(record["measured_ms"], dtype=float), invoke


def _scores(name: str, predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    report = accuracy(name, predicted, measured).to_dict()
    return {k: report[k] for k in ("within_5", "within_10", "mape", "spearman", "max_abs_pct_error")}


def _completed(space, measured: dict[str, float], fill: Any, cal, precision: str) -> CompletedTable:
    predictor = CompletedTable(space, measured, fill)
    predictor.calibrate(cal[0], cal[1], cal[2], precision=precision)
    return predictor


def learned_rows(space, blocks: dict[str, float], plan: int, cal, held, precision: str,
                 repeats: int) -> list[dict[str, Any]]:
    """Per share and repeat: the learned predictor on a random N of the measured blocks."""
    keys = np.array(sorted(blocks))
    rows = []
    for share in SHARES:
        n = min(int(round(share * plan)), len(keys) - 1)
        for seed in range(repeats):
            train = np.random.default_rng(seed).choice(keys, size=n, replace=False)
            start = time.perf_counter()
            fill = LearnedPredictor(space, random_state=seed).fit({k: blocks[k] for k in train})
            predictor = _completed(space, {k: blocks[k] for k in train}, fill, cal, precision)
            row = _scores("learned", predictor.predict(held[0]), held[1])
            row.update(share=share, blocks=n, seed=seed, fit_s=time.perf_counter() - start,
                       weight_term=bool(predictor.correction.weight_ms_per_mib))
            rows.append(row)
            print(f"learned {share:4.0%} ({n:3d} blocks) seed {seed}: within 5% {row['within_5']:.0%}, "
                  f"10% {row['within_10']:.0%}, MAPE {row['mape']:.2f}%", flush=True)
    return rows


def transfer_rows(space, source: LatencyTable, blocks: dict[str, float], cal, held, precision: str,
                  samples: int, repeats: int) -> list[dict[str, Any]]:
    """Per repeat: transfer from `source` with `samples` measured blocks of this table."""
    rows = []
    for seed in range(repeats):
        picked = {s.key: blocks[s.key] for s in choose_samples(source, samples, seed) if s.key in blocks}
        transfer = TransferPredictor(space, random_state=seed).fit(source, picked)
        transfer.calibrate(cal[0], cal[1], cal[2], precision=precision)
        row = _scores("transfer", transfer.predict(held[0]), held[1])
        row.update(samples=len(picked), seed=seed, weight_term=bool(transfer.correction.weight_ms_per_mib))
        rows.append(row)
        print(f"transfer {len(picked)} blocks seed {seed}: within 5% {row['within_5']:.0%}, "
              f"10% {row['within_10']:.0%}, MAPE {row['mape']:.2f}%", flush=True)
    return rows


def _summary(rows: list[dict[str, Any]], group: str | None) -> list[dict[str, Any]]:
    """Mean and range over repeats, per `group` value (or all rows)."""
    groups = sorted({r[group] for r in rows}) if group else [None]
    out = []
    for value in groups:
        mine = [r for r in rows if group is None or r[group] == value]
        entry: dict[str, Any] = {group: value} if group else {}
        for metric in ("within_5", "within_10", "mape"):
            values = np.array([r[metric] for r in mine])
            entry[metric] = {"mean": float(values.mean()), "min": float(values.min()),
                             "max": float(values.max())}
        entry["repeats"] = len(mine)
        out.append(entry)
    return out


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proof", type=Path, required=True, help="predictor_accuracy.py's JSON")
    parser.add_argument("--table", type=Path, required=True, help="the table it saved in --work")
    parser.add_argument("--source", type=Path, help="another table of the same blocks (transfer)")
    parser.add_argument("--transfer-samples", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="random block samples per share")
    return parser.parse_args()


def main() -> None:
    args = _parse()
    proof = json.loads(args.proof.read_text())
    table = LatencyTable.load(args.table)
    space = table.load_space()
    precision = proof["settings"].get("precision", "fp32")
    blocks = dict(table.lookup())
    held_configs = [space.validate(SubnetConfig.from_dict(s["config"])) for s in proof["subnets"]]
    held = (held_configs, np.array([s["measured_ms"] for s in proof["subnets"]], dtype=float))
    resolutions = sorted({c.resolution for c in held_configs})
    plan = len({b.key for b in space.unique_blocks(resolutions)})
    cal = _calibration(table, space)
    full = _completed(space, blocks, None, cal, precision)
    ceiling = _scores("LUT (all blocks measured)", full.predict(held[0]), held[1])
    print(f"{len(blocks)} measured blocks of a {plan}-block plan; {len(held[0])} held-out subnets; "
          f"LUT with all blocks: within 5% {ceiling['within_5']:.0%}, 10% {ceiling['within_10']:.0%}, "
          f"MAPE {ceiling['mape']:.2f}%")
    learned = learned_rows(space, blocks, plan, cal, held, precision, args.repeats)
    transfer = []
    if args.source:
        source = LatencyTable.load(args.source)
        transfer = transfer_rows(space, source, blocks, cal, held, precision, args.transfer_samples,
                                 args.repeats)
    out = RESULTS / f"learned_from_{args.proof.stem.removeprefix('predictor_accuracy_')}.json"
    out.write_text(json.dumps({
        "proof": args.proof.name, "table": args.table.name,
        "source": args.source.name if args.source else None, "settings": proof["settings"],
        "measured_blocks": len(blocks), "plan_blocks": plan, "held_out": len(held[0]),
        "calibration": len(cal[0]), "ceiling": ceiling,
        "learned": {"rows": learned, "summary": _summary(learned, "share")},
        "transfer": {"rows": transfer, "summary": _summary(transfer, None) if transfer else []},
        "targets": {"learned_25_within_10": 0.95, "transfer_50_within_10": 0.90},
    }, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
