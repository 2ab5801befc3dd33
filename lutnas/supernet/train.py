"""Supernet training: the largest subnet on the labels, sampled subnets distilled from a teacher.

One step: the batch is augmented on the device (`augment.py`; off for builtin:digits unless asked);
the largest subnet is trained on the labels (cross-entropy, label smoothing, MixUp/CutMix targets);
the sampler then picks `num_subnets` subnets (the performance-aware sampler scores its candidates on
this minibatch against the teacher), each is trained against the teacher's outputs. The teacher is
the largest subnet (in-place KD), external models (`--teacher`, `teachers.py`), or the mean of both
(ElasticViT's mean of teachers). With `accum_steps` K the batch is split into K equal micro-batches,
each running the above with the same subnets and its loss scaled by 1/K, so one optimizer step sees
the gradient of the whole batch. Gradients are averaged over ranks, clipped, and AdamW takes one step
on a warm-up + cosine schedule; an optional EMA of the weights follows it.

On CUDA: bf16 autocast (fp16 + GradScaler on GPUs without bf16), channels_last, cuDNN autotuning,
pinned loader memory (`amp.py`).

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
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lutnas.errors import BadInputError
from lutnas.space import SearchSpace, SubnetConfig, read_config
from lutnas.supernet import data as D
from lutnas.supernet.amp import (
    amp_policy,
    configure_backends,
    resolve_device,
    use_channels_last,
)
from lutnas.supernet.augment import POLICIES, AugmentOptions, BatchAugment, soft_cross_entropy
from lutnas.supernet.checkpoint import (
    CHECKPOINT_JSON,
    load_checkpoint,
    load_supernet,
    save_checkpoint,
    space_record,
)
from lutnas.supernet.ema import WeightEma
from lutnas.supernet.model import Supernet
from lutnas.supernet.sampling import SAMPLERS, CostFn, SubnetSampler, make_sampler
from lutnas.supernet.teachers import TeacherSet, mean_of_teachers

__all__ = ["TrainOptions", "train_supernet", "evaluate_top1", "load_supernet", "middle_config",
           "heldout_loader", "GradientProbe"]

# inplace: the largest subnet teaches; teacher: the external --teacher models (their mean);
# mean: the mean of the largest subnet and the external teachers; none: subnets learn the labels.
KD_MODES = ("inplace", "teacher", "mean", "none")
KD_LOSSES = ("kl", "alpha")
BUCKET_KINDS = ("macs", "latency")
AUGMENT_MODES = ("auto", "on", "off")
LOG_CSV = "log.csv"
# ImageFolder training images are read at this multiple of the crop size (the 256 -> 224 of ImageNet
# recipes), so RandomResizedCrop's largest crops are not upsampled.
TRAIN_READ_SCALE = 256 / 224
# (step, configs, per-subnet flat gradients): the benchmark's window on gradient conflicts.
GradientProbe = Callable[[int, list[SubnetConfig], list[torch.Tensor]], None]


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
    teachers: list[str] = field(default_factory=list)
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
    device: str | None = None
    channels_last: bool | None = None
    accum_steps: int = 1
    ema_decay: float = 0.0
    augment: str = "auto"
    auto_augment: str = "trivial"
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float | None = None

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
            (self.kd not in ("teacher", "mean") or bool(self.teachers),
             f"--kd {self.kd} needs at least one --teacher PATH"),
            (self.kd in ("teacher", "mean") or not self.teachers,
             "--teacher is used with --kd teacher (external teachers only) or --kd mean "
             "(mean of the largest subnet and the teachers)"),
            (self.accum_steps >= 1 and self.batch_size % self.accum_steps == 0,
             f"--accum-steps {self.accum_steps} must divide --batch-size {self.batch_size} "
             f"(micro-batches of equal size keep the accumulated gradient the batch's mean)"),
            (0 <= self.ema_decay < 1, f"--ema-decay {self.ema_decay} must be in [0, 1) (0: off)"),
            (self.augment in AUGMENT_MODES, f"--augment {self.augment!r} is not one of auto, on, off"),
            (self.auto_augment in POLICIES,
             f"--auto-augment {self.auto_augment!r} is not one of {', '.join(POLICIES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadInputError(message)

    def augmenting(self) -> bool:
        """auto: on for ImageFolder data, off for builtin:digits (8x8 digits lose their class to
        crops and flips: a 6 flipped is not a 6)."""
        if self.augment == "auto":
            return not self.data.startswith("builtin:")
        return self.augment == "on"

    def smoothing(self) -> float:
        """Label smoothing: as given, else 0.1 with augmentation (the ImageNet recipe) and 0 without."""
        if self.label_smoothing is not None:
            return self.label_smoothing
        return 0.1 if self.augmenting() else 0.0

    def augment_options(self) -> AugmentOptions:
        return AugmentOptions(policy=self.auto_augment, mixup_prob=self.mixup, cutmix_prob=self.cutmix,
                              label_smoothing=self.smoothing())
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

    def __init__(self, requested_device: str | None = None) -> None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(requested_device, local)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.owned = False
        if world > 1 and not dist.is_initialized():
            # NCCL for GPU tensors (one process per GPU), gloo for CPU ones.
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.owned = True
        self.active = dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1

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
    """Each `--eval-config` in any form `lutnas.space.read_config` accepts (JSON, best.json,
    ElasticViT's 10-tuple, smallest/largest, released models such as elasticvit:S1)."""
    return [read_config(space, text) for text in texts]


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
                   latency_ms: CostFn | None = None, probe: GradientProbe | None = None) -> TrainResult:
    """Train (or resume) a supernet as `options` say; returns where it stopped.

    `latency_ms` prices configs for `--buckets latency`; the caller builds it from a latency table,
    so the supernet layer never imports the predictors above it (DESIGN.md's layer table).
    `probe`, when given, receives each step's sampled subnets and each one's own gradient (flat,
    all parameters; unused ones zero): the sampling benchmark's measure of gradient conflicts."""
    options.validate()
    out = Path(options.out)
    if options.resume and not (out / CHECKPOINT_JSON).is_file():
        raise BadInputError(f"--resume: {out} holds no checkpoint; run without --resume to start")
    if not options.resume and (out / CHECKPOINT_JSON).is_file():
        raise BadInputError(f"{out} already holds a checkpoint; pass --resume to continue it or "
                            f"choose another --out")
    ctx = _Dist(options.device)
    try:
        run = _Run(options, reporter or Reporter(), ctx, latency_ms, probe)
        return run.train()
    finally:
        ctx.close()


class _Run:
    """One training run: model, optimizer, schedule, sampler, EMA, data and where they are."""

    def __init__(self, options: TrainOptions, reporter: Reporter, ctx: _Dist, latency_ms: CostFn | None,
                 probe: GradientProbe | None) -> None:
        self.options, self.reporter, self.ctx, self.probe = options, reporter, ctx, probe
        self.out = Path(options.out)
        self.space = space = SearchSpace.load(options.space)
        self.eval_extra = _parse_eval_configs(space, options.eval_configs)
        resolution = max(space.resolutions)
        read = round(resolution * TRAIN_READ_SCALE) if options.augmenting() else None
        self.splits = D.load_data(options.data, resolution, space.num_classes, read)
        self.device = device = ctx.device
        configure_backends(device)
        self.amp = amp_policy(device, options.amp)
        self.channels_last = use_channels_last(device, options.channels_last)
        torch.manual_seed(options.seed)
        self.model = Supernet(space).to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        ctx.broadcast_model(self.model)
        self.params = list(self.model.parameters())
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, options.weight_decay), lr=options.lr)
        self.steps_per_epoch = options.steps_per_epoch or D.full_epoch_steps(
            len(self.splits.train), options.batch_size, ctx.world)
        self.total_steps = options.epochs * self.steps_per_epoch
        warmup = max(1, round(options.warmup_fraction * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _cosine_with_warmup(self.total_steps, warmup))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp.scaler)
        self.sampler = _build_sampler(options, space, latency_ms)
        self.sampler.set_total_steps(self.total_steps)
        self.ema = WeightEma(self.model, options.ema_decay) if options.ema_decay > 0 else None
        self.augment = (BatchAugment(options.augment_options(), resolution, space.num_classes,
                                     self.splits.mean, self.splits.std).to(device)
                        if options.augmenting() else None)
        self.smoothing = options.smoothing()
        self.teachers = TeacherSet(options.teachers, device) if options.teachers else None
        self.rows: list[dict[str, Any]] = []
        self.epoch_losses: list[float] = []  # this epoch's step losses so far (kept across a resume)
        self.step = 0
        self.step_losses: dict[int, float] = {}
        self.largest, self.smallest = space.largest(), space.smallest()
        self.middle = middle_config(space)
        pin = device.type == "cuda"
        self.val_loader = D.eval_loader(self.splits.val, options.eval_batch_size, options.workers, pin)
        self.calib_loader = D.calibration_loader(self.splits.train, options.batch_size,
                                                 options.calib_batches, options.seed)

    # ------------------------------------------------------------------ checkpoints
    def resume(self) -> None:
        tensors, meta = load_checkpoint(self.out, self.device)
        if meta["space"] != space_record(self.space):
            raise BadInputError(f"{self.out} was trained on another space; resume with the same --space")
        if meta["steps_per_epoch"] != self.steps_per_epoch or meta["world_size"] != self.ctx.world:
            raise BadInputError(
                f"{self.out} was trained with {meta['steps_per_epoch']} steps per epoch on "
                f"{meta['world_size']} process(es); resume with the same --steps-per-epoch, "
                f"--batch-size and number of processes")
        self.model.load_state_dict(tensors["model"])
        self.optimizer.load_state_dict(tensors["optimizer"])
        self.scheduler.load_state_dict(tensors["scheduler"])
        self.scaler.load_state_dict(tensors["scaler"])
        if self.ema is not None and "ema" in tensors:
            self.ema.load_state_dict(tensors["ema"])
        torch.set_rng_state(tensors["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng_cuda"].cpu(), self.device)
        self.sampler.load_state_dict(meta["sampler"])
        self.step, self.rows, self.epoch_losses = meta["step"], meta["rows"], meta["epoch_losses"]

    def save(self) -> None:
        if self.ctx.rank == 0:
            tensors = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                       "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                       "rng_cpu": torch.get_rng_state()}
            if self.ema is not None:
                tensors["ema"] = self.ema.state_dict()
            if self.device.type == "cuda":
                tensors["rng_cuda"] = torch.cuda.get_rng_state(self.device)
            meta = {"space": space_record(self.space), "options": asdict(self.options),
                    "step": self.step, "epoch": self.step // self.steps_per_epoch,
                    "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                    "world_size": self.ctx.world, "sampler": self.sampler.state_dict(),
                    "rows": self.rows, "epoch_losses": self.epoch_losses}
            save_checkpoint(self.out, tensors, meta)
        self.ctx.barrier()

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainResult:
        if self.options.resume:
            self.resume()
        stop_at = min(self.total_steps, self.options.max_steps or self.total_steps)
        if self.ctx.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self.reporter.start(self.total_steps, self.step)
        self.model.train()
        epoch_start = time.perf_counter()
        pin = self.device.type == "cuda"
        while self.step < stop_at:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            batches = D.epoch_batches(len(self.splits.train), self.options.batch_size,
                                      self.steps_per_epoch, epoch, self.options.seed, self.ctx.rank,
                                      self.ctx.world)
            for x, y in D.batch_loader(self.splits.train, batches[offset:], self.options.workers, pin):
                loss = self.train_step(x.to(self.device, non_blocking=pin),
                                       y.to(self.device, non_blocking=pin))
                self.step_losses[self.step] = loss
                self.epoch_losses.append(loss)
                self.step += 1
                if self.ctx.rank == 0:
                    self.reporter.step(self.step, loss, self.scheduler.get_last_lr()[0])
                if self.step % self.steps_per_epoch == 0:
                    self.end_epoch(time.perf_counter() - epoch_start)
                    epoch_start = time.perf_counter()
                elif self.step >= stop_at:
                    self.save()
                if self.step >= stop_at:
                    break
        if self.ctx.rank == 0:
            self.reporter.finish()
        return TrainResult(self.step, self.step // self.steps_per_epoch, self.rows, self.step_losses,
                           self.out)

    def end_epoch(self, seconds: float) -> None:
        if self.ctx.rank == 0:
            row = {"epoch": self.step // self.steps_per_epoch, "step": self.step,
                   "train_loss": float(np.mean(self.epoch_losses)) if self.epoch_losses else float("nan"),
                   "lr": self.scheduler.get_last_lr()[0], "seconds": round(seconds, 3)}
            named = [("smallest", self.smallest), ("middle", self.middle), ("largest", self.largest)]
            named += [(f"config{i + 1}", c) for i, c in enumerate(self.eval_extra)]
            with self.ema.applied(self.model) if self.ema is not None else nullcontext():
                for name, config in named:
                    row[f"top1_{name}"] = round(evaluate_top1(
                        self.model, config, self.val_loader, self.calib_loader,
                        self.options.calib_batches), 5)
            self.model.train()
            self.rows.append(row)
            _append_csv(self.out / LOG_CSV, row)
            self.reporter.epoch(row)
        self.epoch_losses.clear()
        self.save()

    # ------------------------------------------------------------------ one step
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimizer step on batch (x, y): all micro-batches, reduction, clipping, AdamW, EMA."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.augment is not None:
            x, y = self.augment(x, y)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        k = self.options.accum_steps
        configs: list[SubnetConfig] | None = None
        teacher_total, subnet_totals = 0.0, np.zeros(self.options.num_subnets)
        grads: list[torch.Tensor] | None = None
        for xs, ys in zip(x.chunk(k), y.chunk(k)):
            teacher_loss, configs, losses, micro_grads = self.micro_batch(xs, ys, configs, 1.0 / k)
            teacher_total += teacher_loss / k
            subnet_totals += np.asarray(losses) / k
            if micro_grads is not None:
                grads = micro_grads if grads is None else [a + b for a, b in zip(grads, micro_grads)]
        assert configs is not None
        _trace(self.ctx.rank, self.step, configs)
        losses = self.ctx.mean(subnet_totals.tolist())
        self.sampler.observe(configs, losses)
        if self.probe is not None and grads is not None:
            self.probe(self.step, configs, grads)
        self.ctx.average_gradients(self.params)
        self.scaler.unscale_(self.optimizer)
        if self.options.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.params if p.grad is not None],
                                           self.options.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return self.ctx.mean([teacher_total])[0] + sum(losses)

    def micro_batch(self, x: torch.Tensor, target: torch.Tensor, configs: list[SubnetConfig] | None,
                    scale: float) -> tuple[float, list[SubnetConfig], list[float], list[torch.Tensor] | None]:
        """Backward passes of one micro-batch, losses scaled by `scale`; samples the subnets when
        `configs` is None. Returns (teacher loss, configs, subnet losses, per-subnet gradients when
        a probe listens). `target`: class indices or probabilities (see augment.py)."""
        autocast = self.amp.autocast(self.device.type)
        with autocast:
            largest_logits = self.model.set_active(self.largest)(D.resize_batch(x, self.largest.resolution))
        largest_loss = soft_cross_entropy(largest_logits, target, self.smoothing)
        self.scaler.scale(largest_loss * scale).backward()
        teacher = self.kd_target(largest_logits.detach(), x)

        def subnet_loss(config: SubnetConfig) -> torch.Tensor:
            with autocast:
                logits = self.model.set_active(config)(D.resize_batch(x, config.resolution))
            if teacher is None:
                return soft_cross_entropy(logits, target, self.smoothing)
            return kd_loss(logits, teacher, self.options.kd_loss)

        def score(candidates: list[SubnetConfig]) -> list[float]:
            with torch.no_grad():
                local = [float(subnet_loss(c)) for c in candidates]
            return self.ctx.mean(local)

        if configs is None:
            configs = self.sampler.sample(self.step, score)
        losses, grads = [], [] if self.probe is not None else None
        for config in configs:
            before = _flat_grad(self.params) if grads is not None else None
            loss = subnet_loss(config)
            self.scaler.scale(loss * scale).backward()
            losses.append(float(loss.detach()))
            if grads is not None:
                grads.append(_flat_grad(self.params) - before)
        return float(largest_loss.detach()), configs, losses, grads

    def kd_target(self, largest_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        """What the sampled subnets distil from (logits or log-probabilities), None without KD."""
        kd = self.options.kd
        if kd == "none":
            return None
        if kd == "inplace":
            return largest_logits
        with self.amp.autocast(self.device.type):
            external = self.teachers(x) if self.teachers is not None else []
        return mean_of_teachers(external if kd == "teacher" else [largest_logits, *external])


def _flat_grad(params: list[nn.Parameter]) -> torch.Tensor:
    """All parameters' gradients as one fp32 vector (zeros where a parameter has none yet)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().reshape(-1)
                      for p in params])


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
