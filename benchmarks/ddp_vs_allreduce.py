"""Multi-process supernet training: lutnas's one all-reduce per step vs DistributedDataParallel.

A supernet step runs several subnets (the largest on the labels, then `--num-subnets` sampled ones
distilled from it), each backward leaving different layers unused. lutnas/supernet/train.py runs
all backward passes without communication and then all-reduces every gradient once
(`_Dist.average_gradients`, called here as is). The alternatives are DDP with
`find_unused_parameters=True`: (b) `no_sync()` for all but the last subnet (the usual way to
accumulate), (c) without `no_sync`, one reduction per backward. Two processes under torchrun on the
gloo backend, same seed and init, same subnets on both ranks (the same sampler seed, as in the
trainer), each rank its own batch shard; the variants take turns each step (rotating order, a
barrier before each) so that load from other processes hits them alike. A step's time is the
slower rank's. Correctness: the gradients after the first step (same parameters, same data) and
the parameters after all steps, compared with (a), and between ranks within each variant.

Usage: .venv/bin/python benchmarks/ddp_vs_allreduce.py [--space tiny] [--batch-size 16] [--steps 60]
Prints a table and writes benchmarks/results/ddp_vs_allreduce.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.nn.parallel import DistributedDataParallel as DDP

from lutnas.space import SearchSpace, SubnetConfig
from lutnas.supernet.data import resize_batch
from lutnas.supernet.model import Supernet
from lutnas.supernet.sampling import make_sampler
from lutnas.supernet.train import _Dist, _param_groups, kd_loss

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
VARIANTS = {"allreduce": "(a) lutnas: one all-reduce",
            "ddp_no_sync": "(b) DDP, no_sync but last",
            "ddp_every": "(c) DDP, every backward"}
# Two fp32 gradients computed alike agree bit for bit: a difference above this is a real one.
TOLERANCE = 1e-6


# ------------------------------------------------------------------------------------ one step
def _losses(forward: Any, set_active: Any, largest: SubnetConfig, configs: list[SubnetConfig],
            x: torch.Tensor, y: torch.Tensor, sync_last_only: bool, ddp: DDP | None) -> None:
    """The trainer's backward passes: the largest on the labels, then each sampled subnet
    distilled from the largest's logits (kd 'kl'); gradients accumulate in the parameters."""
    passes = [largest, *configs]
    teacher = None
    for index, config in enumerate(passes):
        set_active(config)
        last = index == len(passes) - 1
        quiet = ddp.no_sync() if ddp is not None and sync_last_only and not last else nullcontext()
        with quiet:
            logits = forward(resize_batch(x, config.resolution))
            if teacher is None:
                loss = F.cross_entropy(logits, y)
                teacher = logits.detach()
            else:
                loss = kd_loss(logits, teacher, "kl")
            loss.backward()


class Variant:
    """One copy of the supernet, its optimizer and how its gradients are reduced."""

    def __init__(self, name: str, base: Supernet, ctx: _Dist, lr: float) -> None:
        self.name, self.ctx = name, ctx
        self.model = copy.deepcopy(base)
        self.ddp = None
        if name != "allreduce":
            # broadcast_buffers off: lutnas does not sync BN statistics either (only parameters
            # are compared, and training-mode BN uses batch statistics).
            self.ddp = DDP(self.model, find_unused_parameters=True, broadcast_buffers=False)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, 0.05), lr=lr)
        self.times: list[float] = []

    def step(self, largest: SubnetConfig, configs: list[SubnetConfig], x: torch.Tensor,
             y: torch.Tensor) -> float:
        """One optimizer step; returns its seconds on this rank."""
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        forward = self.ddp if self.ddp is not None else self.model
        _losses(forward, self.model.set_active, largest, configs, x, y,
                self.name == "ddp_no_sync", self.ddp)
        if self.ddp is None:
            self.ctx.average_gradients(self.params)  # train.py's reduction, unchanged
        torch.nn.utils.clip_grad_norm_([p for p in self.params if p.grad is not None], 1.0)
        self.optimizer.step()
        return time.perf_counter() - start

    def named_grads(self) -> dict[str, torch.Tensor | None]:
        return {n: (None if p.grad is None else p.grad.detach().clone())
                for n, p in self.model.named_parameters()}

    def flat_grads(self) -> torch.Tensor:
        """Every gradient as one vector, zeros where a parameter has none."""
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
                          for p in self.model.parameters()])

    def flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])


# ------------------------------------------------------------------------------------ checks
def sampler_first(args: argparse.Namespace, space: SearchSpace) -> SubnetConfig:
    """The last subnet of step 1 (a fresh sampler with the run's seed draws the same)."""
    return make_sampler(args.sampler, space, args.num_subnets, args.seed).sample(0)[-1]


def _unused_by(base: Supernet, config: SubnetConfig) -> dict[str, int]:
    """How many parameter tensors `config`'s backward leaves without a gradient: the ones DDP's
    reducer must treat as unused after that pass although earlier passes of the step used them."""
    model = copy.deepcopy(base)
    res = max(model.space.resolutions)
    model.set_active(config)(resize_batch(torch.randn(2, 3, res, res), config.resolution)).sum().backward()
    params = list(model.parameters())
    return {"unused": sum(p.grad is None for p in params), "total": len(params)}


def _rank_spread(flat: torch.Tensor) -> float:
    """Max over elements of (max over ranks - min over ranks): 0 when every rank holds the same."""
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).abs().max())


def compare_grads(ref: dict[str, torch.Tensor | None],
                  other: dict[str, torch.Tensor | None]) -> dict[str, Any]:
    """Max abs difference of two sets of gradients, the parameters that differ (worst first), and
    those whose gradient is None in one set only."""
    diffs: dict[str, float] = {}
    none_mismatch = []
    for name, g in ref.items():
        h = other[name]
        if (g is None) != (h is None):
            none_mismatch.append(name)
        elif g is not None and h is not None:
            diffs[name] = float((g - h).abs().max())
    bad = sorted((n for n, d in diffs.items() if d > TOLERANCE), key=lambda n: -diffs[n])
    scale = max((float(g.abs().max()) for g in ref.values() if g is not None), default=0.0)
    return {"max_abs_diff": max(diffs.values(), default=0.0), "max_abs_grad": scale,
            "params_differing": len(bad), "params_total": len(ref),
            "worst": [{"param": n, "max_abs_diff": diffs[n]} for n in bad[:6]],
            "grad_none_mismatch": none_mismatch[:6], "grad_none_mismatch_count": len(none_mismatch)}


# ------------------------------------------------------------------------------------ worker
def worker(args: argparse.Namespace) -> None:
    """One torchrun rank: train every variant side by side, gather timings and checks on rank 0."""
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    ctx = _Dist("cpu")  # picks up the group just made, as the trainer does under torchrun
    rank, world = ctx.rank, ctx.world
    space = SearchSpace.load(args.space)
    torch.manual_seed(args.seed)
    base = Supernet(space).train()
    variants = [Variant(name, base, ctx, args.lr) for name in args.variants]
    sampler = make_sampler(args.sampler, space, args.num_subnets, args.seed)  # same on every rank
    data = torch.Generator().manual_seed(args.seed * 1000 + rank)  # each rank its own shard
    res = max(space.resolutions)
    first_grads: dict[str, dict[str, torch.Tensor | None]] = {}
    grad_spread: dict[str, float] = {}
    for step in range(args.warmup + args.steps):
        configs = sampler.sample(step)
        x = torch.randn(args.batch_size, 3, res, res, generator=data)
        y = torch.randint(0, space.num_classes, (args.batch_size,), generator=data)
        for offset in range(len(variants)):
            variant = variants[(step + offset) % len(variants)]
            dist.barrier()
            seconds = variant.step(space.largest(), configs, x, y)
            if step >= args.warmup:
                variant.times.append(seconds)
            if step == 0:
                first_grads[variant.name] = variant.named_grads()
                grad_spread[variant.name] = _rank_spread(variant.flat_grads())
    report = _report(args, variants, first_grads, grad_spread, world)
    report["unused_by_last_pass_step1"] = _unused_by(base, sampler_first(args, space))
    times = [None] * world
    dist.all_gather_object(times, {v.name: v.times for v in variants})
    if rank == 0:
        steps = {name: [max(t[name][i] for t in times) * 1e3 for i in range(args.steps)]
                 for name in args.variants}
        for row in report["variants"]:
            per_step = steps[row["name"]]
            row["ms_per_step"] = [round(ms, 2) for ms in per_step]
            row["ms_per_step_median"] = statistics.median(per_step)
            row["ms_per_step_min"], row["ms_per_step_max"] = min(per_step), max(per_step)
            if "allreduce" in steps:
                # Paired by step (same subnets, adjacent in time): less exposed to load drift.
                row["paired_ratio_median"] = statistics.median(
                    b / a for a, b in zip(steps["allreduce"], per_step))
        Path(args.result).write_text(json.dumps(report, indent=1))
    dist.barrier()
    ctx.close()
    dist.destroy_process_group()


def _report(args: argparse.Namespace, variants: list[Variant],
            first_grads: dict[str, dict[str, torch.Tensor | None]], grad_spread: dict[str, float],
            world: int) -> dict[str, Any]:
    """Per variant: gradient agreement with (a) after step 1, parameter agreement after all steps,
    and agreement between ranks (collectives: every rank must call this)."""
    ref = next(v for v in variants if v.name == "allreduce") if "allreduce" in args.variants else None
    rows = []
    for variant in variants:
        flat = variant.flat_params()
        row: dict[str, Any] = {"name": variant.name, "label": VARIANTS[variant.name],
                               "first_step_grad_rank_spread": grad_spread[variant.name],
                               "final_param_rank_spread": _rank_spread(flat)}
        if ref is not None and variant is not ref:
            row["first_step_grads_vs_allreduce"] = compare_grads(first_grads["allreduce"],
                                                                 first_grads[variant.name])
            row["final_params_max_abs_diff_vs_allreduce"] = float((flat - ref.flat_params()).abs().max())
        rows.append(row)
    return {"world_size": world, "backend": dist.get_backend(), "variants": rows}


# ------------------------------------------------------------------------------------ launcher
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args: argparse.Namespace, result: Path) -> float:
    """Run the workers under torchrun (as tests/supernet/test_train.py does); returns wall seconds."""
    forwarded = ["--space", args.space, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                 "--warmup", str(args.warmup), "--threads", str(args.threads), "--seed", str(args.seed),
                 "--sampler", args.sampler, "--num-subnets", str(args.num_subnets), "--lr", str(args.lr),
                 "--variants", ",".join(args.variants)]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.procs),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               str(Path(__file__).resolve()), "--worker", "--result", str(result), *forwarded]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        sys.exit(f"torchrun failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return time.perf_counter() - start


def show(record: dict[str, Any]) -> None:
    table = Table(title=f"{record['space']}, {record['procs']} processes ({record['backend']}), batch "
                        f"{record['batch_size']}/rank, 1 + {record['num_subnets']} subnets/step "
                        f"({record['sampler']}), {record['threads']} thread(s), median of "
                        f"{record['steps']} steps; load {record['loadavg_before'][0]:.2f} -> "
                        f"{record['loadavg_after'][0]:.2f}")
    for column in ("variant", "ms/step", "x (a)", "paired x (a)", "step-1 grads vs (a)", "params vs (a)",
                   "rank spread"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    base = next((r["ms_per_step_median"] for r in record["variants"] if r["name"] == "allreduce"), None)
    for row in record["variants"]:
        grads = row.get("first_step_grads_vs_allreduce")
        grad_text = "-" if grads is None else (f"{grads['max_abs_diff']:.2g} "
                                               f"({grads['params_differing']}/{grads['params_total']})")
        params = row.get("final_params_max_abs_diff_vs_allreduce")
        table.add_row(row["label"], f"{row['ms_per_step_median']:.1f}",
                      "-" if base is None else f"{row['ms_per_step_median'] / base:.2f}",
                      f"{row['paired_ratio_median']:.3f}" if "paired_ratio_median" in row else "-", grad_text,
                      "-" if params is None else f"{params:.2g}", f"{row['final_param_rank_spread']:.2g}")
    Console(width=120).print(table)
    unused = record["unused_by_last_pass_step1"]
    print(f"the last subnet of step 1 leaves {unused['unused']}/{unused['total']} parameter tensors "
          "unused that the step's largest subnet used (the case DDP must get right across no_sync)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--batch-size", type=int, default=16, help="per rank")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="per process")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", default="sandwich", choices=("sandwich", "uniform"))
    parser.add_argument("--num-subnets", type=int, default=3, help="sampled subnets besides the largest")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--out", type=Path, default=RESULTS / "ddp_vs_allreduce.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; use {', '.join(VARIANTS)}")
    if args.worker:
        worker(args)
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        wall = launch(args, result)
        report = json.loads(result.read_text())
    record = {"space": args.space, "batch_size": args.batch_size, "steps": args.steps,
              "warmup": args.warmup, "threads": args.threads, "procs": args.procs, "seed": args.seed,
              "sampler": args.sampler, "num_subnets": args.num_subnets, "lr": args.lr,
              "optimizer": "AdamW (train.py param groups, wd 0.05), clip 1.0", "wall_s": wall,
              "torch": torch.__version__, "backend": report["backend"],
              "host": {"node": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count(),
                       "python": platform.python_version()},
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(), **report}
    show(record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
