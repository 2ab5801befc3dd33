"""The kornia augmentation pipeline: shapes and ranges, MixUp/CutMix targets that match the pixels,
and an ImageFolder tree (generated here) training with augmentation on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lutnas.errors import BadInputError
from lutnas.supernet.augment import AugmentOptions, BatchAugment, soft_cross_entropy, soft_targets
from lutnas.supernet.data import load_data
from lutnas.supernet.train import TrainOptions, train_supernet

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _normalised(values: torch.Tensor) -> torch.Tensor:
    """Images of constant brightness `values[i]` (in [0, 1]), normalised as the loader serves them."""
    images = values.view(-1, 1, 1, 1).expand(-1, 3, 24, 24)
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_crop_flip_trivial_augment_keep_shape_and_range() -> None:
    torch.manual_seed(0)
    augment = BatchAugment(AugmentOptions(label_smoothing=0.0), 16, 10, MEAN, STD)
    x = _normalised(torch.rand(8))
    y = torch.arange(8)
    out, targets = augment(x, y)
    assert out.shape == (8, 3, 16, 16) and torch.equal(targets, y)
    pixels = out * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_targets_match_the_mixed_pixels(kind: str) -> None:
    """Image i is constant brightness v_i; after mixing, its mean brightness is w v_i + (1-w) v_j,
    and its target must give class i the share w (label smoothing off)."""
    torch.manual_seed(1)
    options = AugmentOptions(policy="none", flip=False, crop_scale=(1.0, 1.0), label_smoothing=0.0,
                             mixup_prob=1.0 if kind == "mixup" else 0.0,
                             cutmix_prob=1.0 if kind == "cutmix" else 0.0)
    augment = BatchAugment(options, 24, 8, MEAN, STD)
    values = torch.linspace(0.05, 0.95, 8)
    out, targets = augment(_normalised(values), torch.arange(8))
    assert targets.shape == (8, 8)
    torch.testing.assert_close(targets.sum(-1), torch.ones(8))
    pixels = out * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    brightness = pixels.mean((1, 2, 3))
    torch.testing.assert_close(brightness, targets @ values, atol=2e-3, rtol=0)


def test_soft_targets_and_loss_agree_with_torch() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=generator)
    y = torch.tensor([0, 1, 2, 3, 1])
    smooth = soft_targets(y, y, torch.ones(5), 4, 0.1)
    expected = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
    torch.testing.assert_close(soft_cross_entropy(logits, smooth), expected)
    torch.testing.assert_close(soft_cross_entropy(logits, y, 0.1), expected)


def test_bad_mix_probabilities_are_one_line_errors() -> None:
    with pytest.raises(BadInputError, match="--mixup 0.7 and --cutmix 0.6"):
        AugmentOptions(mixup_prob=0.7, cutmix_prob=0.6).validate()


def _image_folder(root: Path, per_class: int = 6) -> Path:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for label, name in enumerate(("dark", "light", "mid")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                pixels = (torch.rand(30, 26, 3, generator=generator) * 60 + 90 * label).byte()
                Image.fromarray(pixels.numpy()).save(folder / f"{index}.png")
    return root


def test_image_folder_trains_with_augmentation_mixup_and_cutmix(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    splits = load_data(str(root), 48, train_resolution=55)
    assert splits.train[0][0].shape == (3, 55, 55) and splits.val[0][0].shape == (3, 48, 48)
    options = TrainOptions(space="tiny", data=str(root), out=str(tmp_path / "run"), epochs=1,
                           steps_per_epoch=2, batch_size=6, sampler="sandwich", calib_batches=1,
                           mixup=0.5, cutmix=0.5, auto_augment="rand")
    assert options.augmenting() and options.smoothing() == 0.1
    result = train_supernet(options)
    assert result.step == 2 and all(torch.isfinite(torch.tensor(list(result.step_losses.values()))))


def test_digits_do_not_augment_unless_asked(tmp_path: Path) -> None:
    base = dict(space="tiny", data="builtin:digits", out=str(tmp_path))
    assert not TrainOptions(**base).augmenting() and TrainOptions(**base).smoothing() == 0.0
    assert TrainOptions(**base, augment="on").augmenting()
