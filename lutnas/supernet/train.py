"""Supernet training: the largest subnet with cross-entropy, sampled subnets distilled from it in place.

One step: the largest subnet is trained on the labels (it is the teacher); the sampler then picks
`num_subnets` subnets (the performance-aware sampler scores its candidates on this minibatch against
the teacher), each is trained against the teacher's outputs; gradients accumulate over all of them,
are averaged over ranks, clipped, and AdamW takes one step on a warm-up + cosine schedule.

Distributed: under `torchrun` every rank builds the same model (same seed, then a broadcast), draws
its own shard of each global batch, and runs the same sampler with the same seed; scores and losses
the sampler sees are all-reduced first, so every rank trains the same subnets. Gradients are
all-reduced once per step after all subnets' backward passes. This is DistributedDataParallel's
arithmetic without its wrapper: DDP's reducer expects one backward per forward over a fixed set of
used parameters, while a step here runs several subnets that each leave different layers unused.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lutnas.errors import BadInputError
from lutnas.space import SearchSpace, SubnetConfig
from lutnas.supernet import data as D
from lutnas.supernet.checkpoint import (
    CHECKPOINT_JSON,
    load_checkpoint,
    load_supernet,
    save_checkpoint,
    space_record,
)
from lutnas.supernet.model import Supernet
from lutnas.supernet.sampling import SAMPLERS, CostFn, SubnetSampler, make_sampler

__all__ = ["TrainOptions", "train_supernet", "evaluate_top1", "load_supernet", "middle_config",
           "heldout_loader"]

KD_MODES = ("inplace", "none")
KD_LOSSES = ("kl", "alpha")
BUCKET_KINDS = ("macs", "latency")
LOG_CSV = "log.csv"


@dataclass
class TrainOptions:
    space: str
    data: str
    out: str
    epochs: int = 1
    batch_size: int = 32
    sampler: str = "ca+pa"
    buckets: str = "macs"
    table: str | None = None
    kd: str = "inplace"
    kd_loss: str = "kl"
    num_subnets: int = 2
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    steps_per_epoch: int | None = None
    max_steps: int | None = None
    seed: int = 0
    resume: bool = False
    calib_batches: int = 4
    eval_batch_size: int = 128
    eval_configs: list[str] = field(default_factory=list)
    workers: int = 0
    pool_size: int = 200
    amp: bool = True

    def validate(self) -> None:
        checks = [
            (self.sampler in SAMPLERS, f"--sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}"),
            (self.kd in KD_MODES, f"--kd {self.kd!r} is not one of {', '.join(KD_MODES)}"),
            (self.kd_loss in KD_LOSSES, f"--kd-loss {self.kd_loss!r} is not one of {', '.join(KD_LOSSES)}"),
            (self.buckets in BUCKET_KINDS, f"--buckets {self.buckets!r} is not one of macs, latency"),
            (self.buckets != "latency" or self.table is not None,
             "--buckets latency needs --table T (a latency table of the target device)"),
            (self.buckets != "latency" or self.sampler in ("ca", "ca+pa"),
             "--buckets only applies to the complexity-aware samplers (--sampler ca or ca+pa)"),
            (self.epochs >= 1 and self.batch_size >= 1 and self.num_subnets >= 1,
             "--epochs, --batch-size and --subnets must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadInputError(message)


@dataclass
class TrainResult:
    step: int
    epoch: int
    rows: list[dict[str, Any]]
    step_losses: dict[int, float]
    out: Path


class Reporter:
    """Progress callbacks (rank 0 only); the CLI draws a progress bar, library use prints nothing."""

    def start(self, total_steps: int, start_step: int) -> None: ...

    def step(self, step: int, loss: float, lr: float) -> None: ...

    def epoch(self, row: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...


# ---------------------------------------------------------------------------------------- helpers
def middle_config(space: SearchSpace) -> SubnetConfig:
    """A fixed medium subnet for progress reports: of 200 seeded random configs, the one whose MACs
    are closest to the geometric mean of the smallest's and the largest's (choice-wise medians are
    the largest subnet when every choice has two values, as in `tiny`)."""
    import random

    target = math.sqrt(space.complexity(space.smallest()).macs * space.complexity(space.largest()).macs)
    rng = random.Random(0)
    candidates = [space.sample(rng) for _ in range(200)]
    return min(candidates, key=lambda c: abs(math.log(space.complexity(c).macs / target)))


def heldout_loader(data: str, space: SearchSpace, batch_size: int = 128) -> torch.utils.data.DataLoader:
    """The split that no training run uses, at the space's largest resolution (for the search)."""
    return D.heldout_loader(data, max(space.resolutions), batch_size)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """KL(teacher || student), or AlphaNet's max of the alpha-divergences at alpha = -1 and +1."""
    log_q = F.log_softmax(student.float(), -1)
    log_p = F.log_softmax(teacher.float(), -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    if kind == "kl":
        return kl
    # D_alpha(p||q) = (sum p^a q^(1-a) - 1) / (a (a - 1)); a -> 1 is KL(p||q), used for a = +1.
    # AlphaNet bounds the ratio q/p so that the a < 0 term cannot explode on tiny teacher mass.
    a = -1.0
    log_ratio = (log_q - log_p).clamp(-5.0, 5.0)
    d_neg = ((log_p.exp() * torch.exp((1 - a) * log_ratio)).sum(-1) - 1).mean() / (a * (a - 1))
    return torch.maximum(kl, d_neg)


@torch.no_grad()
def evaluate_top1(supernet: Supernet, config: SubnetConfig, loader: Any, calib_loader: Any,
                  calib_batches: int) -> float:
    """Top-1 (0..1) of `config` after recalibrating its BN statistics on `calib_batches` batches."""
    was_training = supernet.training
    supernet.recalibrate_bn(config, calib_loader, calib_batches)
    supernet.eval()
    device = next(supernet.parameters()).device
    correct = total = 0
    for x, y in loader:
        logits = supernet(D.resize_batch(x.to(device), config.resolution))
        correct += int((logits.argmax(-1).cpu() == y).sum())
        total += len(y)
    supernet.train(was_training)
    return correct / max(1, total)


def _cosine_with_warmup(total_steps: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on norms, biases and the bias table: decaying them only hurts small nets."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        (plain if param.ndim <= 1 or name.endswith("rel_bias_table") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


class _Dist:
    """Rank, world size and the collectives this trainer uses (no-ops in one process)."""

    def __init__(self) -> None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.owned = False
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            self.owned = True
        self.active = dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")

    def mean(self, values: Sequence[float]) -> list[float]:
        if not self.active:
            return [float(v) for v in values]
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return (tensor / self.world).tolist()

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        if not self.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast_model(self, model: nn.Module) -> None:
        if self.active:
            for tensor in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(tensor.data, 0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.owned:
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------- training
def _parse_eval_configs(space: SearchSpace, texts: Sequence[str]) -> list[SubnetConfig]:
    configs = []
    for text in texts:
        path = Path(text)
        raw = path.read_text() if not text.lstrip().startswith("{") and path.is_file() else text
        configs.append(space.config_from_json(raw))
    return configs


def _build_sampler(options: TrainOptions, space: SearchSpace, latency_ms: CostFn | None) -> SubnetSampler:
    extra: dict[str, Any] = {}
    cost_fn, cost_name = None, "mmacs"
    if options.sampler in ("ca", "ca+pa"):
        extra["pool_size"] = options.pool_size
        if options.buckets == "latency":
            if latency_ms is None:
                raise BadInputError("--buckets latency needs the device's latency predictor "
                                    "(lutnas train-supernet builds it from --table)")
            cost_fn, cost_name = latency_ms, "ms"
    return make_sampler(options.sampler, space, options.num_subnets, options.seed, cost_fn,
                        cost_name, **extra)


def train_supernet(options: TrainOptions, reporter: Reporter | None = None,
                   latency_ms: CostFn | None = None) -> TrainResult:
    """Train (or resume) a supernet as `options` say; returns where it stopped.

    `latency_ms` prices configs for `--buckets latency`; the caller builds it from a latency table,
    so the supernet layer never imports the predictors above it (DESIGN.md's layer table)."""
    options.validate()
    reporter = reporter or Reporter()
    out = Path(options.out)
    space = SearchSpace.load(options.space)
    eval_extra = _parse_eval_configs(space, options.eval_configs)
    resolution = max(space.resolutions)
    splits = D.load_data(options.data, resolution, space.num_classes)
    if options.resume and not (out / CHECKPOINT_JSON).is_file():
        raise BadInputError(f"--resume: {out} holds no checkpoint; run without --resume to start")
    if not options.resume and (out / CHECKPOINT_JSON).is_file():
        raise BadInputError(f"{out} already holds a checkpoint; pass --resume to continue it or "
                            f"choose another --out")
    ctx = _Dist()
    try:
        return _train(options, reporter, out, space, splits, eval_extra, ctx, latency_ms)
    finally:
        ctx.close()


def _train(options: TrainOptions, reporter: Reporter, out: Path, space: SearchSpace,
           splits: D.DataSplits, eval_extra: list[SubnetConfig], ctx: _Dist,
           latency_ms: CostFn | None) -> TrainResult:
    device = ctx.device
    torch.manual_seed(options.seed)
    model = Supernet(space).to(device)
    ctx.broadcast_model(model)
    params = [p for p in model.parameters()]
    optimizer = torch.optim.AdamW(_param_groups(model, options.weight_decay), lr=options.lr)
    steps_per_epoch = options.steps_per_epoch or D.full_epoch_steps(
        len(splits.train), options.batch_size, ctx.world)
    total_steps = options.epochs * steps_per_epoch
    warmup = max(1, round(options.warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(total_steps, warmup))
    use_amp = options.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    sampler = _build_sampler(options, space, latency_ms)
    sampler.set_total_steps(total_steps)
    rows: list[dict[str, Any]] = []
    epoch_losses: list[float] = []  # this epoch's step losses so far (kept across a resume)
    step = 0
    if options.resume:
        tensors, meta = load_checkpoint(out, device)
        if meta["space"] != space_record(space):
            raise BadInputError(f"{out} was trained on another space; resume with the same --space")
        if meta["steps_per_epoch"] != steps_per_epoch or meta["world_size"] != ctx.world:
            raise BadInputError(
                f"{out} was trained with {meta['steps_per_epoch']} steps per epoch on "
                f"{meta['world_size']} process(es); resume with the same --steps-per-epoch, "
                f"--batch-size and number of processes")
        model.load_state_dict(tensors["model"])
        optimizer.load_state_dict(tensors["optimizer"])
        scheduler.load_state_dict(tensors["scheduler"])
        scaler.load_state_dict(tensors["scaler"])
        torch.set_rng_state(tensors["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng_cuda"].cpu(), device)
        sampler.load_state_dict(meta["sampler"])
        step, rows, epoch_losses = meta["step"], meta["rows"], meta["epoch_losses"]
    largest, smallest, middle = space.largest(), space.smallest(), middle_config(space)
    val_loader = D.eval_loader(splits.val, options.eval_batch_size, options.workers)
    calib_loader = D.calibration_loader(splits.train, options.batch_size, options.calib_batches,
                                        options.seed)
    stop_at = min(total_steps, options.max_steps or total_steps)
    step_losses: dict[int, float] = {}
    if ctx.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        reporter.start(total_steps, step)

    def save() -> None:
        if ctx.rank == 0:
            tensors = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                       "rng_cpu": torch.get_rng_state()}
            if device.type == "cuda":
                tensors["rng_cuda"] = torch.cuda.get_rng_state(device)
            meta = {"space": space_record(space), "options": asdict(options), "step": step,
                    "epoch": step // steps_per_epoch, "steps_per_epoch": steps_per_epoch,
                    "total_steps": total_steps, "world_size": ctx.world,
                    "sampler": sampler.state_dict(), "rows": rows, "epoch_losses": epoch_losses}
            save_checkpoint(out, tensors, meta)
        ctx.barrier()

    model.train()
    epoch_start = time.perf_counter()
    while step < stop_at:
        epoch, offset = divmod(step, steps_per_epoch)
        batches = D.epoch_batches(len(splits.train), options.batch_size, steps_per_epoch, epoch,
                                  options.seed, ctx.rank, ctx.world)
        loader = D.batch_loader(splits.train, batches[offset:], options.workers)
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = _train_step(model, params, optimizer, scheduler, scaler, sampler, ctx, options,
                               largest, x, y, step, use_amp)
            step_losses[step] = loss
            epoch_losses.append(loss)
            step += 1
            if ctx.rank == 0:
                reporter.step(step, loss, scheduler.get_last_lr()[0])
            if step % steps_per_epoch == 0:
                if ctx.rank == 0:
                    row = {"epoch": step // steps_per_epoch, "step": step,
                           "train_loss": float(np.mean(epoch_losses)) if epoch_losses else float("nan"),
                           "lr": scheduler.get_last_lr()[0],
                           "seconds": round(time.perf_counter() - epoch_start, 3)}
                    named = [("smallest", smallest), ("middle", middle), ("largest", largest)]
                    named += [(f"config{i + 1}", c) for i, c in enumerate(eval_extra)]
                    for name, config in named:
                        row[f"top1_{name}"] = round(evaluate_top1(
                            model, config, val_loader, calib_loader, options.calib_batches), 5)
                    model.train()
                    rows.append(row)
                    _append_csv(out / LOG_CSV, row)
                    reporter.epoch(row)
                epoch_start = time.perf_counter()
                epoch_losses.clear()
                save()
            elif step >= stop_at:
                save()
            if step >= stop_at:
                break
    if ctx.rank == 0:
        reporter.finish()
    return TrainResult(step, step // steps_per_epoch, rows, step_losses, out)


def _train_step(model: Supernet, params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
                scheduler: Any, scaler: torch.amp.GradScaler, sampler: SubnetSampler, ctx: _Dist,
                options: TrainOptions, largest: SubnetConfig, x: torch.Tensor, y: torch.Tensor,
                step: int, use_amp: bool) -> float:
    optimizer.zero_grad(set_to_none=True)
    autocast = torch.autocast(device_type=x.device.type, dtype=torch.float16, enabled=use_amp)
    distill = options.kd == "inplace"

    def subnet_loss(config: SubnetConfig, teacher: torch.Tensor | None) -> torch.Tensor:
        with autocast:
            logits = model.set_active(config)(D.resize_batch(x, config.resolution))
        if teacher is None:
            return F.cross_entropy(logits.float(), y)
        return kd_loss(logits, teacher, options.kd_loss)

    with autocast:
        teacher_logits = model.set_active(largest)(D.resize_batch(x, largest.resolution))
    teacher_loss = F.cross_entropy(teacher_logits.float(), y)
    scaler.scale(teacher_loss).backward()
    teacher = teacher_logits.detach() if distill else None

    def score(configs: list[SubnetConfig]) -> list[float]:
        with torch.no_grad():
            local = [float(subnet_loss(c, teacher)) for c in configs]
        return ctx.mean(local)

    configs = sampler.sample(step, score)
    _trace(ctx.rank, step, configs)
    losses = []
    for config in configs:
        loss = subnet_loss(config, teacher)
        scaler.scale(loss).backward()
        losses.append(float(loss.detach()))
    losses = ctx.mean(losses)
    sampler.observe(configs, losses)
    ctx.average_gradients(params)
    scaler.unscale_(optimizer)
    if options.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], options.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return ctx.mean([float(teacher_loss.detach())])[0] + sum(losses)


def _trace(rank: int, step: int, configs: list[SubnetConfig]) -> None:
    """With LUTNAS_SUBNET_TRACE=DIR, each rank appends its step's subnets to DIR/rankR.jsonl: the
    check that every rank of a distributed run trained the same subnets."""
    folder = os.environ.get("LUTNAS_SUBNET_TRACE")
    if folder:
        line = json.dumps({"step": step, "configs": [c.to_dict() for c in configs]}, sort_keys=True)
        with open(Path(folder) / f"rank{rank}.jsonl", "a") as handle:
            handle.write(line + "\n")


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
