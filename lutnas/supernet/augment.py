"""Batched training augmentation on the training device, with kornia (depends only on torch).

The recipe is the standard ImageNet one: RandomResizedCrop, horizontal flip, TrivialAugment or
RandAugment, normalisation, then MixUp or CutMix with label smoothing. It runs on whole batches
after they reach the device, so a GPU does the work instead of loader processes. Batches arrive
normalised (as the evaluation path reads them); the photometric operations expect [0, 1], so a batch
is brought back to [0, 1], augmented and normalised again.

Randomness comes from torch's global generators (saved in checkpoints), so a resumed run draws the
augmentations the uninterrupted run would have drawn.

Labels leave as either class indices (N,) int64, when nothing mixed them and no smoothing applies,
or as probabilities (N, C) float32 that `soft_cross_entropy` consumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lutnas.errors import BadInputError

POLICIES = ("trivial", "rand", "none")


@dataclass(frozen=True)
class AugmentOptions:
    """What `BatchAugment` does; probabilities are per batch (a batch gets MixUp or CutMix or neither).

    MixUp's mixing weight is uniform on [0, 1] (kornia's MixUp draws it so, not from a Beta); CutMix's
    box follows Beta(`cutmix_beta`) as in the CutMix paper."""

    policy: str = "trivial"
    rand_n: int = 2
    rand_m: int = 9
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    mixup_prob: float = 0.0
    cutmix_prob: float = 0.0
    cutmix_beta: float = 1.0
    label_smoothing: float = 0.1

    def validate(self) -> None:
        if self.policy not in POLICIES:
            raise BadInputError(f"--auto-augment {self.policy!r} is not one of {', '.join(POLICIES)}")
        if not (0 <= self.mixup_prob and 0 <= self.cutmix_prob and self.mixup_prob + self.cutmix_prob <= 1):
            raise BadInputError(f"--mixup {self.mixup_prob} and --cutmix {self.cutmix_prob} are "
                                f"per-batch probabilities: each >= 0 and their sum <= 1")
        if not 0 <= self.label_smoothing < 1:
            raise BadInputError(f"--label-smoothing {self.label_smoothing} must be in [0, 1)")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise BadInputError(f"crop scale {self.crop_scale} must satisfy 0 < low <= high <= 1")


def soft_targets(labels: torch.Tensor, permuted: torch.Tensor, weight: torch.Tensor, num_classes: int,
                 smoothing: float) -> torch.Tensor:
    """(N, C) probabilities: `weight` of `labels` plus `1 - weight` of `permuted`, each label smoothed.

    labels, permuted: (N,) class indices; weight: (N,) in [0, 1], the share of the original image."""
    def smooth(index: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(index.long(), num_classes).float()
        return one_hot * (1 - smoothing) + smoothing / num_classes

    weight = weight.float().view(-1, 1)
    return weight * smooth(labels) + (1 - weight) * smooth(permuted)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy against class indices (N,) with `smoothing`, or probabilities (N, C)."""
    if target.dtype in (torch.int64, torch.int32):
        return F.cross_entropy(logits.float(), target.long(), label_smoothing=smoothing)
    return -(target * F.log_softmax(logits.float(), -1)).sum(-1).mean()


class BatchAugment(nn.Module):
    """(x, y) -> (augmented x, targets), on whatever device x lives on.

    x: (N, 3, R, R) normalised with `mean`/`std`; the crop's output is `size` x `size` (the space's
    largest resolution; each subnet's resolution is taken from it afterwards, as without augmentation).
    """

    def __init__(self, options: AugmentOptions, size: int, num_classes: int, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        import kornia.augmentation as K
        from kornia.augmentation.auto import RandAugment, TrivialAugment

        options.validate()
        self.options, self.num_classes = options, num_classes
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        ops: list[nn.Module] = [K.RandomResizedCrop((size, size), scale=options.crop_scale)]
        if options.flip:
            ops.append(K.RandomHorizontalFlip())
        if options.policy == "trivial":
            ops.append(TrivialAugment())
        elif options.policy == "rand":
            ops.append(RandAugment(n=options.rand_n, m=options.rand_m))
        self.spatial = K.AugmentationSequential(*ops)
        self.mixup = K.RandomMixUpV2(p=1.0, data_keys=["input", "class"])
        self.cutmix = K.RandomCutMixV2(beta=options.cutmix_beta, p=1.0, data_keys=["input", "class"],
                                       use_correct_lambda=True)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = (x.float() * self.std + self.mean).clamp_(0, 1)
        images = self.spatial(images).clamp_(0, 1)
        images, targets = self.mix(images, y)
        return ((images - self.mean) / self.std).to(x.dtype), targets

    def mix(self, images: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MixUp, CutMix or neither (one draw per batch); targets as the module docstring says."""
        o = self.options
        draw = float(torch.rand(()))
        if draw < o.mixup_prob:
            images, labels = self.mixup(images, y)
            # kornia's MixUp: image = x * (1 - lam) + x_perm * lam, so the original's share is 1 - lam.
            share = 1 - labels[:, 2]
        elif draw < o.mixup_prob + o.cutmix_prob:
            images, labels = self.cutmix(images, y)
            # use_correct_lambda: lam = 1 - pasted area / image area, the original's share.
            labels = labels[0]
            share = labels[:, 2]
        elif o.label_smoothing > 0:
            return images, soft_targets(y, y, torch.ones(len(y), device=y.device), self.num_classes,
                                        o.label_smoothing)
        else:
            return images, y
        return images, soft_targets(labels[:, 0], labels[:, 1], share, self.num_classes,
                                    o.label_smoothing)
