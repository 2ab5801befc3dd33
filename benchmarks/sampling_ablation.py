"""ElasticViT's sampling claim at toy scale: the same training budget with uniform, sandwich and
ca+pa sampling on `tiny` + builtin:digits; top-1 of 20 fixed random subnets (BN recalibrated) after
training, over several seeds. Reports what it sees, whichever way it goes.

Every run trains the largest subnet plus `--subnets` sampled ones per step, for `--steps` steps:
the same number of trained subnets (forward + backward) for every sampler. ca+pa additionally
scores 3 candidates per sampled subnet with a forward pass (no backward) when it does not draw from
its bank, as the paper's does: extra compute that this budget does not count.

Usage: .venv/bin/python benchmarks/sampling_ablation.py [--steps 80] [--seeds 3] [--batch-size 16]
Prints a table and writes benchmarks/results/sampling_ablation.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lutnas.space import SearchSpace
from lutnas.supernet.checkpoint import load_supernet
from lutnas.supernet.data import calibration_loader, eval_loader, load_data
from lutnas.supernet.train import TrainOptions, evaluate_top1, train_supernet

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", default="uniform,sandwich,ca+pa")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--subnets", type=int, default=2, help="sampled subnets per step")
    parser.add_argument("--eval-subnets", type=int, default=20)
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = SearchSpace.load("tiny")
    rng = random.Random(1234)
    fixed = [space.sample(rng) for _ in range(args.eval_subnets)]
    splits = load_data("builtin:digits", max(space.resolutions))
    val = eval_loader(splits.val, 256)
    calib = calibration_loader(splits.train, 32, args.calib_batches, seed=99)
    samplers = args.samplers.split(",")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for name in samplers:
                out = Path(tmp) / f"{name}-{seed}"
                start = time.perf_counter()
                train_supernet(TrainOptions(
                    space="tiny", data="builtin:digits", out=str(out), epochs=1,
                    steps_per_epoch=args.steps, batch_size=args.batch_size, sampler=name,
                    num_subnets=args.subnets, lr=args.lr, seed=seed, pool_size=50, calib_batches=2))
                train_s = time.perf_counter() - start
                _, supernet = load_supernet(out)
                top1 = [evaluate_top1(supernet, c, val, calib, args.calib_batches) for c in fixed]
                runs.append({"sampler": name, "seed": seed, "train_seconds": round(train_s, 1),
                             "top1": top1, "mean": statistics.mean(top1),
                             "std": statistics.pstdev(top1), "min": min(top1), "max": max(top1)})
                print(f"seed {seed} {name:<9} mean top-1 {100 * runs[-1]['mean']:.1f}% "
                      f"(train {train_s:.0f} s)", flush=True)
    summary = {}
    for name in samplers:
        mine = [r for r in runs if r["sampler"] == name]
        means = [r["mean"] for r in mine]
        summary[name] = {
            "mean_top1": statistics.mean(means),
            "seed_std_of_mean": statistics.pstdev(means),
            "mean_within_run_std": statistics.mean(r["std"] for r in mine),
            "worst_subnet": min(r["min"] for r in mine), "best_subnet": max(r["max"] for r in mine),
        }
    print(f"\ntiny + builtin:digits, {args.steps} steps x batch {args.batch_size}, largest + "
          f"{args.subnets} subnets/step, {args.seeds} seeds, {args.eval_subnets} fixed subnets (val split)")
    print(f"{'sampler':<10}{'mean top-1':>12}{'± seeds':>10}{'spread in run':>15}{'worst':>8}{'best':>8}")
    for name, s in summary.items():
        print(f"{name:<10}{100 * s['mean_top1']:>11.1f}%{100 * s['seed_std_of_mean']:>9.1f}"
              f"{100 * s['mean_within_run_std']:>15.1f}{100 * s['worst_subnet']:>7.1f}%"
              f"{100 * s['best_subnet']:>7.1f}%")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_file = RESULTS / "sampling_ablation.json"
    out_file.write_text(json.dumps({"args": vars(args), "summary": summary, "runs": runs,
                                    "eval_configs": [c.to_dict() for c in fixed]}, indent=1))
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
