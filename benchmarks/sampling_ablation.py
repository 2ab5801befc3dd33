"""ElasticViT's sampling claim, measured on `tiny` + builtin:digits: uniform vs sandwich vs ca vs ca+pa.

Same budget for every sampler: `--steps` steps of the largest subnet plus `--subnets` sampled ones
(forward + backward each); ca+pa additionally scores 3 candidates per sampled subnet with a forward
pass when it does not draw from its bank, as the paper's does (extra compute the budget does not
count). Each (sampler, seed) pair starts from the same initial weights and sees the same batches, so
runs are paired by seed.

Outcome: top-1 on the held-out split of a fixed set of `--eval-subnets` subnets spread evenly over
the log-MACs range (smallest and largest included), BN recalibrated per subnet; mean +- std over
seeds per subnet, and a paired t-test per subnet (scipy's ttest_rel over seeds) for each comparison,
with Holm's correction across subnets, plus one paired test of the per-seed mean over all subnets.

Mechanism: ElasticViT argues that subnets of very different size sampled in neighbouring steps have
conflicting gradients. For every step the trainer hands each sampled subnet's own gradient to a
probe; the benchmark records the cosine similarity between the gradients of the subnets of step t
and those of step t + 1 (all pairs, mean), and the MACs ratio between them.

Usage: .venv/bin/python benchmarks/sampling_ablation.py [--steps 240] [--seeds 5] [--workers 2]
Prints a table; writes benchmarks/results/sampling_ablation.json and sampling_ablation.png.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLERS = ("uniform", "sandwich", "ca", "ca+pa")
COMPARISONS = (("ca+pa", "uniform"), ("ca", "uniform"), ("sandwich", "uniform"), ("ca+pa", "ca"),
               ("ca+pa", "sandwich"))


def spread_subnets(space: Any, count: int, seed: int = 1234) -> list[Any]:
    """`count` distinct subnets whose MACs are spread evenly in log scale from smallest to largest."""
    from lutnas.supernet.sampling import biased_sample

    rng = random.Random(seed)
    pool = {space.smallest(), space.largest()}
    while len(pool) < 3000:
        pool.add(space.sample(rng) if len(pool) % 2 else biased_sample(space, rng, rng.random()))
    costs = {c: math.log(space.complexity(c).macs) for c in pool}
    low, high = costs[space.smallest()], costs[space.largest()]
    chosen: list[Any] = []
    for index in range(count):
        target = low + (high - low) * index / (count - 1)
        best = min((c for c in pool if c not in chosen), key=lambda c: abs(costs[c] - target))
        chosen.append(best)
    return sorted(chosen, key=lambda c: costs[c])


class _AdjacentCosine:
    """Probe: cosine similarity between the gradients of step t's subnets and step t+1's."""

    def __init__(self, space: Any) -> None:
        self.space = space
        self.previous: tuple[list[Any], list[Any]] | None = None
        self.rows: list[tuple[int, float, float]] = []  # (step, mean cosine, mean |log MACs ratio|)

    def __call__(self, step: int, configs: list[Any], grads: list[Any]) -> None:
        import torch.nn.functional as F

        macs = [self.space.complexity(c).macs for c in configs]
        if self.previous is not None:
            old_grads, old_macs = self.previous
            cosines = [float(F.cosine_similarity(a, b, dim=0)) for a in old_grads for b in grads]
            gaps = [abs(math.log(m / n)) for m in old_macs for n in macs]
            self.rows.append((step, statistics.mean(cosines), statistics.mean(gaps)))
        self.previous = (grads, macs)


def train_and_score(job: dict[str, Any]) -> dict[str, Any]:
    """One (sampler, seed) run in its own process: train, then top-1 of the fixed subnets."""
    import torch

    torch.set_num_threads(job["threads"])
    from lutnas.space import SearchSpace, SubnetConfig
    from lutnas.supernet.checkpoint import load_supernet
    from lutnas.supernet.data import calibration_loader, eval_loader, load_data
    from lutnas.supernet.train import TrainOptions, evaluate_top1, train_supernet

    space = SearchSpace.load("tiny")
    fixed = [SubnetConfig.from_dict(c) for c in job["eval_configs"]]
    probe = _AdjacentCosine(space)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train_supernet(TrainOptions(
            space="tiny", data="builtin:digits", out=tmp, epochs=1, steps_per_epoch=job["steps"],
            batch_size=job["batch_size"], sampler=job["sampler"], num_subnets=job["subnets"],
            lr=job["lr"], seed=job["seed"], pool_size=50, calib_batches=1, device="cpu"), probe=probe)
        train_s = time.perf_counter() - start
        _, supernet = load_supernet(tmp)
    splits = load_data("builtin:digits", max(space.resolutions))
    heldout = eval_loader(splits.heldout, 512)
    calib = calibration_loader(splits.train, 64, job["calib_batches"], seed=99)
    top1 = [evaluate_top1(supernet, c, heldout, calib, job["calib_batches"]) for c in fixed]
    cosines = [r[1] for r in probe.rows]
    return {"sampler": job["sampler"], "seed": job["seed"], "train_seconds": round(train_s, 1),
            "top1": top1, "mean_top1": statistics.mean(top1),
            "adjacent_grad_cosine_mean": statistics.mean(cosines),
            "adjacent_log_macs_gap_mean": statistics.mean(r[2] for r in probe.rows),
            "adjacent_rows": probe.rows}


def paired_tests(runs: list[dict[str, Any]], seeds: list[int], subnets: int) -> dict[str, Any]:
    """Per comparison: per-subnet mean difference and ttest_rel p (Holm-corrected), overall test."""
    from scipy import stats

    by = {(r["sampler"], r["seed"]): r for r in runs}
    out: dict[str, Any] = {}
    for a, b in COMPARISONS:
        if not all((s, seed) in by for s in (a, b) for seed in seeds):
            continue
        diffs, pvalues = [], []
        for index in range(subnets):
            xa = [by[(a, seed)]["top1"][index] for seed in seeds]
            xb = [by[(b, seed)]["top1"][index] for seed in seeds]
            diffs.append(statistics.mean(xa) - statistics.mean(xb))
            p = stats.ttest_rel(xa, xb).pvalue
            pvalues.append(1.0 if math.isnan(p) else float(p))
        holm = _holm(pvalues)
        overall = stats.ttest_rel([by[(a, s)]["mean_top1"] for s in seeds],
                                  [by[(b, s)]["mean_top1"] for s in seeds])
        out[f"{a} vs {b}"] = {
            "mean_diff_points": 100 * statistics.mean(diffs),
            "subnets_better": sum(d > 0 for d in diffs), "subnets_worse": sum(d < 0 for d in diffs),
            "significant_better_holm05": sum(d > 0 and p < 0.05 for d, p in zip(diffs, holm)),
            "significant_worse_holm05": sum(d < 0 and p < 0.05 for d, p in zip(diffs, holm)),
            "per_subnet_diff_points": [100 * d for d in diffs], "per_subnet_p": pvalues,
            "per_subnet_p_holm": holm, "overall_p": float(overall.pvalue),
        }
    return out


def _holm(pvalues: list[float]) -> list[float]:
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [0.0] * len(pvalues)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def plot(path: Path, runs: list[dict[str, Any]], macs: list[float], samplers: list[str]) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lutnas.plotting import pyplot, readable_log_axes, save_figure

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in samplers:
        mine = [r["top1"] for r in runs if r["sampler"] == name]
        means = [100 * statistics.mean(col) for col in zip(*mine)]
        stds = [100 * statistics.pstdev(col) for col in zip(*mine)]
        left.errorbar(macs, means, yerr=stds, marker="o", ms=3, capsize=2, label=name)
    readable_log_axes(left, "x")
    left.set(xlabel="subnet MMACs", ylabel="held-out top-1 (%)",
             title="fixed subnets: mean ± std over seeds")
    left.legend()
    data = [[row[1] for r in runs if r["sampler"] == name for row in r["adjacent_rows"]]
            for name in samplers]
    right.boxplot(data, showfliers=False)
    right.set_xticks(range(1, len(samplers) + 1), samplers)
    right.set(ylabel="cosine(grad step t, grad step t+1)",
              title="gradient similarity of subnets in adjacent steps")
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--subnets", type=int, default=2, help="sampled subnets per step")
    parser.add_argument("--eval-subnets", type=int, default=20)
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--workers", type=int, default=2, help="runs trained in parallel")
    parser.add_argument("--out", default=str(RESULTS / "sampling_ablation"))
    args = parser.parse_args()
    from lutnas.space import SearchSpace

    space = SearchSpace.load("tiny")
    fixed = spread_subnets(space, args.eval_subnets)
    macs = [space.complexity(c).macs / 1e6 for c in fixed]
    samplers = args.samplers.split(",")
    seeds = list(range(args.seeds))
    jobs = [{"sampler": name, "seed": seed, "steps": args.steps, "batch_size": args.batch_size,
             "subnets": args.subnets, "lr": args.lr, "threads": args.threads,
             "calib_batches": args.calib_batches, "eval_configs": [c.to_dict() for c in fixed]}
            for seed in seeds for name in samplers]
    start = time.perf_counter()
    runs = []
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for run in pool.imap_unordered(train_and_score, jobs):
            runs.append(run)
            print(f"seed {run['seed']} {run['sampler']:<9} mean top-1 {100 * run['mean_top1']:.1f}%  "
                  f"adjacent grad cos {run['adjacent_grad_cosine_mean']:.3f}  "
                  f"(train {run['train_seconds']:.0f} s)", flush=True)
    wall = time.perf_counter() - start
    report(args, runs, fixed, macs, samplers, seeds, wall)


def report(args: Any, runs: list[dict[str, Any]], fixed: list[Any], macs: list[float],
           samplers: list[str], seeds: list[int], wall: float) -> None:
    summary = {}
    for name in samplers:
        mine = [r for r in runs if r["sampler"] == name]
        means = [r["mean_top1"] for r in mine]
        summary[name] = {
            "mean_top1": statistics.mean(means), "seed_std_of_mean": statistics.pstdev(means),
            "smallest_top1": statistics.mean(r["top1"][0] for r in mine),
            "largest_top1": statistics.mean(r["top1"][-1] for r in mine),
            "adjacent_grad_cosine": statistics.mean(r["adjacent_grad_cosine_mean"] for r in mine),
            "adjacent_log_macs_gap": statistics.mean(r["adjacent_log_macs_gap_mean"] for r in mine),
        }
    tests = paired_tests(runs, seeds, len(fixed))
    print(f"\ntiny + builtin:digits, {args.steps} steps x batch {args.batch_size}, largest + "
          f"{args.subnets} subnets/step, {len(seeds)} seeds, {len(fixed)} subnets spread over "
          f"{macs[0]:.2f}-{macs[-1]:.2f} MMACs (held-out split); wall {wall / 60:.1f} min")
    print(f"{'sampler':<10}{'mean top-1':>11}{'± seeds':>9}{'smallest':>10}{'largest':>9}"
          f"{'adj. grad cos':>15}{'adj. |ln MACs ratio|':>22}")
    for name, s in summary.items():
        print(f"{name:<10}{100 * s['mean_top1']:>10.2f}%{100 * s['seed_std_of_mean']:>9.2f}"
              f"{100 * s['smallest_top1']:>9.1f}%{100 * s['largest_top1']:>8.1f}%"
              f"{s['adjacent_grad_cosine']:>15.3f}{s['adjacent_log_macs_gap']:>22.3f}")
    print(f"\n{'comparison':<22}{'mean diff':>10}{'better/worse':>14}{'signif. (Holm)':>16}{'overall p':>11}")
    for key, t in tests.items():
        print(f"{key:<22}{t['mean_diff_points']:>+9.2f}p{t['subnets_better']:>7}/{t['subnets_worse']:<6}"
              f"{t['significant_better_holm05']:>8}+/{t['significant_worse_holm05']}-"
              f"{t['overall_p']:>13.3g}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args), "host": platform.node(), "cpus": os.cpu_count(),
              "wall_seconds": round(wall, 1), "eval_mmacs": macs, "summary": summary,
              "paired_tests": tests, "runs": runs, "eval_configs": [c.to_dict() for c in fixed]}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    plot(out.with_suffix(".png"), runs, macs, samplers)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
