"""`lutnas train-supernet`: train an elastic supernet (one process or under torchrun)."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lutnas.cli._common import SPACE_HELP, console, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    from lutnas.supernet.sampling import SAMPLERS

    p = subparsers.add_parser(
        "train-supernet", help="train a weight-sharing supernet (complexity/performance-aware sampling)",
        description="Train the elastic supernet of a search space. Run under `torchrun --nproc_per_node N "
                    "-m lutnas train-supernet ...` for data-parallel training.")
    p.add_argument("--space", required=True, help=SPACE_HELP)
    p.add_argument("--data", required=True,
                   help="builtin:digits or an ImageFolder directory with train/ and val/ subfolders")
    p.add_argument("--out", required=True, help="run directory: checkpoint, log.csv")
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--batch-size", type=positive_int, default=32, help="per process")
    p.add_argument("--sampler", choices=SAMPLERS, default="ca+pa")
    p.add_argument("--buckets", choices=("macs", "latency"), default="macs",
                   help="complexity buckets by MACs (default) or by predicted latency (--table)")
    p.add_argument("--table", help="latency table of the target device (with --buckets latency)")
    p.add_argument("--kd", choices=("inplace", "teacher", "mean", "none"), default="inplace",
                   help="what sampled subnets distil from: the largest subnet (inplace), the --teacher "
                        "models (teacher), the mean of both (mean, ElasticViT's mean of teachers), "
                        "or nothing (none: labels)")
    p.add_argument("--teacher", action="append", default=[], dest="teachers", metavar="PATH",
                   help="external teacher: a TorchScript file, a teacher state dict "
                        "(lutnas.supernet.teachers.save_teacher) or a train-supernet run; repeatable")
    p.add_argument("--kd-loss", choices=("kl", "alpha"), default="kl",
                   help="KL divergence, or AlphaNet's alpha-divergence")
    p.add_argument("--subnets", type=positive_int, default=2, dest="num_subnets",
                   help="sampled subnets per step besides the largest")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--steps-per-epoch", type=positive_int,
                   help="steps per epoch (default: one pass over the training split)")
    p.add_argument("--max-steps", type=positive_int,
                   help="stop (with a checkpoint) once this global step is reached")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib-batches", type=positive_int, default=4,
                   help="batches for BN recalibration before each evaluation")
    p.add_argument("--eval-config", action="append", default=[], dest="eval_configs",
                   help="extra subnet (JSON text or file) to evaluate each epoch; repeatable")
    p.add_argument("--pool-size", type=positive_int, default=200, help="subnets pre-sampled per bucket")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads per process")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when a GPU is visible")
    p.add_argument("--no-amp", action="store_false", dest="amp",
                   help="disable mixed precision on CUDA (default: bf16, or fp16 + loss scaling on "
                        "GPUs without bf16)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format (default: on for CUDA, off on CPU)")
    p.add_argument("--accum-steps", type=positive_int, default=1,
                   help="split each batch into this many micro-batches (same gradient, less memory)")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="keep an EMA of the weights with this decay, e.g. 0.9998 (0: off); "
                        "evaluation and the saved supernet use it")
    p.add_argument("--augment", choices=("auto", "on", "off"), default="auto",
                   help="batched kornia augmentation on the device (auto: on for ImageFolder data, "
                        "off for builtin:digits)")
    p.add_argument("--auto-augment", choices=("trivial", "rand", "none"), default="trivial",
                   help="TrivialAugment, RandAugment (n=2, m=9) or neither, after crop and flip")
    p.add_argument("--mixup", type=float, default=0.0, help="probability a batch gets MixUp")
    p.add_argument("--cutmix", type=float, default=0.0, help="probability a batch gets CutMix")
    p.add_argument("--label-smoothing", type=float,
                   help="default: 0.1 with augmentation, 0 without")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.set_defaults(handler=train_command)


# Seconds between the plain progress lines train-supernet prints when its output is not a terminal.
LOG_EVERY_S = 30.0


class _ProgressReporter:
    def __init__(self) -> None:
        self.progress = Progress(TextColumn("[bold]train-supernet"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.3f} lr {task.fields[lr]:.2e}"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.task: Any = None
        self.last_line = time.monotonic()

    def start(self, total_steps: int, start_step: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("steps", total=total_steps, completed=start_step,
                                           loss=float("nan"), lr=0.0)

    def step(self, step: int, loss: float, lr: float) -> None:
        self.progress.update(self.task, completed=step, loss=loss, lr=lr)
        # A pipe or log file sees no live bar, only the epoch lines (minutes apart on 2 cores): a
        # plain line every LOG_EVERY_S instead.
        now = time.monotonic()
        if not self.progress.console.is_terminal and now - self.last_line >= LOG_EVERY_S:
            self.last_line = now
            total = self.progress.tasks[0].total if self.progress.tasks else None
            self.progress.console.print(f"step {step}/{total or '?'}  loss {loss:.3f}  lr {lr:.2e}")

    def epoch(self, row: dict[str, Any]) -> None:
        accs = "  ".join(f"{k[5:]} {v * 100:.1f}%" for k, v in row.items() if k.startswith("top1_"))
        self.progress.console.print(f"epoch {row['epoch']}  step {row['step']}  "
                                    f"loss {row['train_loss']:.3f}  top-1: {accs}")

    def finish(self) -> None:
        self.progress.stop()


def train_command(args: argparse.Namespace) -> int:
    import torch

    from lutnas.supernet.train import TrainOptions, train_supernet

    if args.threads:
        torch.set_num_threads(args.threads)
    fields = {k: v for k, v in vars(args).items()
              if k in TrainOptions.__dataclass_fields__}
    latency_ms = None
    if args.buckets == "latency" and args.table:
        from lutnas.predictors.lut import LutPredictor
        from lutnas.space import SearchSpace

        latency_ms = LutPredictor.load(args.table, SearchSpace.load(args.space)).predict
    result = train_supernet(TrainOptions(**fields), _ProgressReporter(), latency_ms)
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"stopped at step {result.step}; checkpoint and log.csv in {result.out}")
    return 0
