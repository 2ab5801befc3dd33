"""The price of weight sharing: one training step of the supernet running a sampled subnet vs the
same subnet extracted and trained alone (forward, backward, AdamW step), on the host CPU.

Usage: .venv/bin/python benchmarks/supernet_step.py [--space tiny] [--subnets 5] [--batch-size 32]
Prints a table and writes benchmarks/results/supernet_step.json.

`--trainer-step` instead times whole training steps of the trainer (largest + 2 sampled subnets,
ca+pa, AMP / channels_last as the device gets them) on random images at the space's largest
resolution and reports the peak GPU memory: the GPU figure the training issue asks for, e.g.
`--trainer-step --space elasticvit --batch-size 128 --device cuda`.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lutnas.space import SearchSpace
from lutnas.supernet.data import resize_batch
from lutnas.supernet.model import Supernet

RESULTS = Path(__file__).resolve().parent / "results"


def time_interleaved(models: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor, warmup: int,
                     steps: int) -> list[list[float]]:
    """Steps of each model in turn, so that load from other processes on a shared host hits both."""
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in models]
    times: list[list[float]] = [[] for _ in models]
    for index in range(warmup + steps):
        for model, optimizer, out in zip(models, optimizers, times):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            if index >= warmup:
                out.append((time.perf_counter() - start) * 1e3)
    return times


def trainer_step(args: argparse.Namespace) -> None:
    """Median seconds per `_Run.train_step` and peak memory, written to supernet_trainer_step_*.json."""
    import tempfile

    from lutnas.supernet.train import Reporter, TrainOptions, _Dist, _Run

    with tempfile.TemporaryDirectory() as tmp:
        options = TrainOptions(space=args.space, data="builtin:digits", out=tmp, batch_size=args.batch_size,
                               sampler="ca+pa", pool_size=20, device=args.device, seed=args.seed)
        run = _Run(options, Reporter(), _Dist(args.device), None, None)
    resolution = max(run.space.resolutions)
    x = torch.randn(args.batch_size, 3, resolution, resolution, device=run.device)
    y = torch.randint(0, run.space.num_classes, (args.batch_size,), device=run.device)
    cuda = run.device.type == "cuda"
    times = []
    for index in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        run.train_step(x, y)
        run.step += 1
        if cuda:
            torch.cuda.synchronize()
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(run.device) / 2**30 if cuda else None
    record = {"space": args.space, "batch_size": args.batch_size, "resolution": resolution,
              "device": str(run.device), "amp": str(run.amp.dtype), "channels_last": run.channels_last,
              "median_step_s": statistics.median(times), "peak_gib": peak, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(run.device) if cuda else None, "steps": args.steps}
    print(json.dumps(record, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"supernet_trainer_step_{args.space}_{run.device.type}.json").write_text(
        json.dumps(record, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--subnets", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trainer-step", action="store_true", help="time whole trainer steps")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="with --trainer-step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.trainer_step:
        trainer_step(args)
        return
    torch.manual_seed(args.seed)
    space = SearchSpace.load(args.space)
    supernet = Supernet(space).train()
    rng = random.Random(args.seed)
    configs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(args.subnets - 2)]
    rows = []
    for config in configs:
        x = resize_batch(torch.randn(args.batch_size, 3, max(space.resolutions), max(space.resolutions)),
                         config.resolution)
        y = torch.randint(0, space.num_classes, (args.batch_size,))
        supernet.set_active(config)
        # The supernet's optimizer holds every parameter, as in training (AdamW updates the full
        # shared tensors that got a gradient, active slice or not): that is part of the price.
        static = supernet.extract(config).train()
        shared, alone = time_interleaved([supernet, static], x, y, args.warmup, args.steps)
        row = {"config": config.to_dict(), "mmacs": space.complexity(config).macs / 1e6,
               "supernet_ms": statistics.median(shared), "static_ms": statistics.median(alone)}
        row["ratio"] = row["supernet_ms"] / row["static_ms"]
        rows.append(row)
    print(f"space {space.name}, batch {args.batch_size}, {args.threads} thread(s), median of "
          f"{args.steps} steps after {args.warmup} warm-up")
    print(f"{'subnet':<10}{'MMACs':>8}{'supernet ms':>14}{'static ms':>12}{'ratio':>8}")
    names = ["smallest", "largest"] + [f"random{i + 1}" for i in range(len(rows) - 2)]
    for name, row in zip(names, rows):
        print(f"{name:<10}{row['mmacs']:>8.2f}{row['supernet_ms']:>14.1f}{row['static_ms']:>12.1f}"
              f"{row['ratio']:>8.2f}")
    ratios = [r["ratio"] for r in rows]
    print(f"median ratio {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"supernet_step_{space.name}.json"
    out.write_text(json.dumps({"space": space.name, "batch_size": args.batch_size,
                               "threads": args.threads, "steps": args.steps, "host": platform.node(),
                               "torch": torch.__version__, "rows": rows,
                               "median_ratio": statistics.median(ratios)}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
