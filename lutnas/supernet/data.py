"""Training data: an ImageFolder tree read with PIL, or scikit-learn's digits (`builtin:digits`).

Images are served at the space's largest resolution and resized per subnet (`resize_batch`), as
Once-for-All does, so one loader feeds every resolution. With augmentation (`augment.py`, on the
device) an ImageFolder's training split is served larger (`train_resolution`), so RandomResizedCrop
cuts from more pixels than it outputs. Batches are drawn from a seeded permutation
per epoch and sharded by rank: the order depends only on (seed, epoch, step), which is what makes a
resumed run see the batches the uninterrupted run would have seen. torchvision is not used (no build
of it matches this torch), hence the small PIL reader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lutnas.errors import DataError

BUILTIN_DIGITS = "builtin:digits"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Fixed, independent of the training seed: the held-out split must be the same for every run and
# for the search that evaluates on it.
SPLIT_SEED = 20230317


def resize_batch(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize an NCHW batch to `resolution` (antialiased when shrinking, as a photo resize would)."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    shrink = resolution < x.shape[-1]
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=shrink)


DIGITS_MEAN = (0.5, 0.5, 0.5)
DIGITS_STD = (0.5, 0.5, 0.5)


class DigitsDataset(Dataset):
    """8x8 digits upscaled to `resolution`, grey replicated to 3 channels, scaled to [-1, 1]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, resolution: int) -> None:
        self.images = torch.from_numpy(images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = F.interpolate(self.images[index:index + 1], size=(self.resolution,) * 2,
                              mode="bilinear", align_corners=False)[0]
        return (image.expand(3, -1, -1) - 0.5) / 0.5, self.labels[index]


class ImageFolderDataset(Dataset):
    """`root/<class>/<image>` read with PIL, resized to `resolution` x `resolution`."""

    def __init__(self, root: Path, resolution: int, classes: list[str] | None = None) -> None:
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.classes = classes if classes is not None else found
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            folder = root / name
            if folder.is_dir():
                self.samples += [(p, label) for p in sorted(folder.rglob("*"))
                                 if p.suffix.lower() in IMAGE_SUFFIXES]
        if not self.samples:
            raise DataError(f"{root}: no images found in class subfolders; expected "
                            f"{root}/<class>/<image>.jpg")
        self.resolution = resolution
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((self.resolution,) * 2, Image.BILINEAR)
        except OSError as exc:
            raise DataError(f"{path}: cannot read image ({exc}); remove or replace the file") from None
        array = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (array - self.mean) / self.std, torch.tensor(label)


@dataclass
class DataSplits:
    train: Dataset
    val: Dataset
    heldout: Dataset
    num_classes: int
    source: str
    # The normalisation the datasets applied (augmentation undoes it to work in [0, 1]).
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def load_data(data: str, resolution: int, num_classes: int | None = None,
              train_resolution: int | None = None) -> DataSplits:
    """Train / val / held-out datasets at `resolution` (an ImageFolder's train split at
    `train_resolution` when given); checks the class count fits the space."""
    if data == BUILTIN_DIGITS:
        splits = _digits(resolution)
    elif data.startswith("builtin:"):
        raise DataError(f"unknown built-in data set {data!r}; the only one is {BUILTIN_DIGITS}")
    else:
        splits = _image_folder(Path(data), resolution, train_resolution or resolution)
    if num_classes is not None and splits.num_classes > num_classes:
        raise DataError(f"{data} has {splits.num_classes} classes but the space's head has "
                        f"{num_classes}; use a space with num_classes >= {splits.num_classes}")
    return splits


def _digits(resolution: int) -> DataSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    # 60% train, 20% val (per-epoch accuracy), 20% held out (never trained on; the search uses it).
    rest, heldout = train_test_split(index, test_size=0.2, random_state=SPLIT_SEED,
                                     stratify=digits.target)
    train, val = train_test_split(rest, test_size=0.25, random_state=SPLIT_SEED,
                                  stratify=digits.target[rest])

    def part(ids: np.ndarray) -> DigitsDataset:
        return DigitsDataset(digits.data[ids], digits.target[ids], resolution)

    return DataSplits(part(train), part(val), part(heldout), 10, BUILTIN_DIGITS, DIGITS_MEAN, DIGITS_STD)


def _image_folder(root: Path, resolution: int, train_resolution: int) -> DataSplits:
    if not root.is_dir():
        raise DataError(f"--data {root}: no such directory; give builtin:digits or an ImageFolder "
                        f"tree with train/ and val/ subfolders")
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise DataError(f"--data {root}: missing {sub}/ subfolder; expected {root}/train/<class>/ "
                            f"and {root}/val/<class>/")
    train = ImageFolderDataset(root / "train", train_resolution)
    val = ImageFolderDataset(root / "val", resolution, train.classes)
    # A separate test/ folder is the held-out set when given; otherwise val, which is never trained on.
    heldout = (ImageFolderDataset(root / "test", resolution, train.classes)
               if (root / "test").is_dir() else val)
    return DataSplits(train, val, heldout, len(train.classes), str(root))


def epoch_batches(num_items: int, batch_size: int, steps: int, epoch: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> list[list[int]]:
    """This rank's index batches for `steps` steps of `epoch` (permutations repeat if data is short)."""
    needed = steps * batch_size * world_size
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perms = [torch.randperm(num_items, generator=generator) for _ in range(math.ceil(needed / num_items))]
    order = torch.cat(perms).tolist()
    batches = []
    for step in range(steps):
        start = (step * world_size + rank) * batch_size
        batches.append(order[start:start + batch_size])
    return batches


def full_epoch_steps(num_items: int, batch_size: int, world_size: int = 1) -> int:
    return max(1, num_items // (batch_size * world_size))


def _loader_generator() -> torch.Generator:
    """A loader's own generator: without one, each new iterator draws its worker seed from torch's
    global generator, which the on-device augmentation also draws from, and a resumed run (one more
    iterator) would then augment differently from the uninterrupted one."""
    return torch.Generator().manual_seed(SPLIT_SEED)


def batch_loader(dataset: Dataset, batches: list[list[int]], workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """Loads `batches` (lists of indices) in order; `pin_memory` for asynchronous copies to a GPU."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
                      prefetch_factor=4 if workers else None, generator=_loader_generator())


def eval_loader(dataset: Dataset, batch_size: int, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=pin_memory, generator=_loader_generator())


def calibration_loader(dataset: Dataset, batch_size: int, batches: int, seed: int = 0) -> DataLoader:
    """A fixed random subset of training batches for BN recalibration (same for every subnet)."""
    return batch_loader(dataset, epoch_batches(len(dataset), batch_size, batches, 0, seed))


def heldout_loader(data: str, resolution: int, batch_size: int = 128) -> DataLoader:
    """The split no training run uses, for the search's accuracy estimates."""
    return eval_loader(load_data(data, resolution).heldout, batch_size)
