"""External teachers for knowledge distillation, loaded from local files without running pickled code.

A teacher file is one of:
- a TorchScript archive (`torch.jit.save`): any architecture, its code is TorchScript, not pickle;
- a state dict saved with `save_teacher` (`torch.save` of {"format", "name", "kwargs", "state_dict"}),
  read with `torch.load(weights_only=True)`; `name` picks a builder in `TEACHERS` (timm's
  `create_model` shape: one record per architecture, looked up by name);
- a `lutnas train-supernet` run directory: its supernet's largest subnet.

Every teacher sees the training batch as the students' loader serves it (normalised, the space's
largest resolution), resized to the teacher's `resolution` when its record names one.
Several teachers are combined as ElasticViT's mean of teachers: the mean of their probabilities.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lutnas.errors import BadInputError
from lutnas.space import SearchSpace, SubnetConfig
from lutnas.supernet.checkpoint import CHECKPOINT_JSON, load_supernet
from lutnas.supernet.data import resize_batch
from lutnas.supernet.model import Supernet

TEACHER_FORMAT = "lutnas-teacher/1"
TEACHERS: dict[str, Callable[..., nn.Module]] = {}


def register_teacher(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make `builder(**kwargs) -> nn.Module` loadable by `name` from a teacher file."""
    def record(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        TEACHERS[name] = builder
        return builder
    return record


class ConvNet(nn.Module):
    """A plain CNN (conv-BN-ReLU stages, each halving the grid, then a linear head)."""

    def __init__(self, num_classes: int, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for index in range(depth):
            cout = width * 2 ** index
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


@register_teacher("convnet")
def _convnet(num_classes: int, width: int = 32, depth: int = 3) -> nn.Module:
    return ConvNet(num_classes, width, depth)


@register_teacher("lutnas-supernet")
def _supernet(space: str, config: dict[str, Any] | None = None) -> nn.Module:
    """A lutnas supernet (built-in space name) running `config` (default: its largest subnet)."""
    built = SearchSpace.load(space)
    chosen = SubnetConfig.from_dict(config) if config else built.largest()
    return Supernet(built).set_active(chosen)


class _Resized(nn.Module):
    """Resizes the batch to the teacher's input resolution first."""

    def __init__(self, model: nn.Module, resolution: int | None) -> None:
        super().__init__()
        self.model, self.resolution = model, resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(resize_batch(x, self.resolution) if self.resolution else x)


def save_teacher(path: str | Path, name: str, model: nn.Module, resolution: int | None = None,
                 **kwargs: Any) -> Path:
    """Save `model`'s weights as a teacher file for `TEACHERS[name](**kwargs)` (no pickled code)."""
    if name not in TEACHERS:
        raise BadInputError(f"no teacher architecture {name!r}; registered: {', '.join(sorted(TEACHERS))}")
    torch.save({"format": TEACHER_FORMAT, "name": name, "kwargs": kwargs, "resolution": resolution,
                "state_dict": model.state_dict()}, path)
    return Path(path)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.split("/", 1)[-1].startswith("code/") for n in archive.namelist())


def load_teacher(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The teacher in `path` (see the module docstring), in eval mode, gradients off, on `device`.

    Raises BadInputError naming the file when it is none of the three kinds."""
    path = Path(path)
    if path.is_dir() and (path / CHECKPOINT_JSON).is_file():
        space, supernet = load_supernet(path, device)
        model: nn.Module = _Resized(supernet.set_active(space.largest()), max(space.resolutions))
    elif not path.is_file():
        raise BadInputError(f"--teacher {path}: no such file; give a TorchScript file, a teacher "
                            f"state dict (lutnas.supernet.teachers.save_teacher) or a supernet run")
    elif _is_torchscript(path):
        model = torch.jit.load(str(path), map_location=device)
    else:
        model = _from_state_file(path)
    model = model.to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def _from_state_file(path: Path) -> nn.Module:
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign files
        raise BadInputError(f"--teacher {path}: not a TorchScript file nor a weights-only teacher "
                            f"state dict ({type(exc).__name__}); save it with save_teacher") from None
    if not isinstance(record, dict) or record.get("format") != TEACHER_FORMAT:
        raise BadInputError(f"--teacher {path}: a state dict without the {TEACHER_FORMAT!r} record; "
                            f"save it with lutnas.supernet.teachers.save_teacher(path, name, model)")
    builder = TEACHERS.get(record["name"])
    if builder is None:
        raise BadInputError(f"--teacher {path}: architecture {record['name']!r} is not registered; "
                            f"known: {', '.join(sorted(TEACHERS))}")
    model = builder(**record["kwargs"])
    model.load_state_dict(record["state_dict"])
    return _Resized(model, record.get("resolution"))


def mean_of_teachers(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """log of the mean of the teachers' probabilities: (N, C) log-probabilities usable as logits."""
    if len(logits) == 1:
        return logits[0].float()
    probs = torch.stack([F.softmax(t.float(), -1) for t in logits]).mean(0)
    return probs.clamp_min(1e-12).log()


class TeacherSet:
    """The external teachers of a run; `__call__(x)` -> their mean (log-probabilities, detached)."""

    def __init__(self, paths: Sequence[str], device: torch.device) -> None:
        self.models = [load_teacher(p, device) for p in paths]

    def __len__(self) -> int:
        return len(self.models)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [model(x).float() for model in self.models]
