"""Supernet checkpoints: tensors in `checkpoint.pt` (loaded with weights_only), the rest as JSON.

The JSON half (`checkpoint.json`) holds what a person or another tool reads: the space, the training
options, the step, the sampler's state (bucket walk, pools, memory banks) and the log of epochs. No
pickle anywhere: `torch.load(..., weights_only=True)` refuses code objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lutnas.errors import BadInputError, SpaceFileError
from lutnas.fileio import atomic_path
from lutnas.space import BUILTIN_SPACES, SearchSpace

CHECKPOINT_PT = "checkpoint.pt"
CHECKPOINT_JSON = "checkpoint.json"
FORMAT_VERSION = 1


def space_record(space: SearchSpace) -> dict[str, Any]:
    """How to rebuild the space later: its built-in name, or the YAML text it was read from."""
    if space.source in BUILTIN_SPACES:
        return {"builtin": space.source}
    return {"yaml": Path(space.source).read_text(), "path": space.source}


def space_from_record(record: dict[str, Any], where: str = "<checkpoint>") -> SearchSpace:
    """The space `space_record` wrote. SpaceFileError when its YAML fails the strict reading
    (a checkpoint written before unknown keys were refused): the message names the checkpoint's
    JSON, whose "space" entry holds the text to correct."""
    if "builtin" in record:
        return SearchSpace.load(record["builtin"])
    try:
        return SearchSpace.from_yaml(record["yaml"], source=record.get("path", where))
    except SpaceFileError as exc:
        raise SpaceFileError(f"{exc}; this space is embedded in {where}: correct its \"space\" "
                             f"entry there, or retrain") from None


def _atomic_write(path: Path, write: Any) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def save_checkpoint(out: Path, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write tensors then metadata, each atomically; the JSON names the step the tensors are at."""
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / CHECKPOINT_PT, lambda p: torch.save(tensors, p))
    meta = {"format_version": FORMAT_VERSION, **meta}
    _atomic_write(out / CHECKPOINT_JSON, lambda p: p.write_text(json.dumps(meta, separators=(",", ":"))))


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(checkpoint.pt, checkpoint.json) for a run directory or either of the two files."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    pt, meta = folder / CHECKPOINT_PT, folder / CHECKPOINT_JSON
    if not pt.is_file() or not meta.is_file():
        raise BadInputError(f"{path}: no supernet checkpoint ({CHECKPOINT_PT} and {CHECKPOINT_JSON}) "
                            f"found; give the --out directory of `lutnas train-supernet`")
    return pt, meta


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    pt, meta_path = checkpoint_paths(path)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{meta_path}: not valid JSON ({exc}); the checkpoint is damaged") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise BadInputError(f"{meta_path}: checkpoint format {meta.get('format_version')!r} is not "
                            f"{FORMAT_VERSION}; retrain or use the lutnas version that wrote it")
    tensors = torch.load(pt, map_location=map_location, weights_only=True)
    return tensors, meta


def load_supernet(path: str | Path, map_location: str | torch.device = "cpu", use_ema: bool = True
                  ) -> tuple[SearchSpace, torch.nn.Module]:
    """(space, supernet in eval mode) from a training run's directory or checkpoint file.

    A run trained with `--ema-decay` gives its averaged weights unless `use_ema` is False."""
    from lutnas.supernet.model import Supernet

    tensors, meta = load_checkpoint(path, map_location)
    space = space_from_record(meta["space"], str(checkpoint_paths(path)[1]))
    supernet = Supernet(space)
    state = dict(tensors["model"])
    if use_ema and "ema" in tensors:
        state.update(tensors["ema"]["shadow"])
    supernet.load_state_dict(state)
    return space, supernet.to(map_location).eval()
