"""What a search maximises: supernet top-1 when a trained supernet is given, else a labelled proxy.

A proxy (MMACs or parameters under the latency cap) is what one can rank by without a trained
supernet; it is never called accuracy anywhere (`is_proxy`, `label`, the output files and the plot
all say "proxy"), because a user who reads "accuracy 612" would trust a number that measures nothing
of the sort.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lutnas.errors import SearchError
from lutnas.search.constraints import Costs
from lutnas.space import SearchSpace, SubnetConfig

PROXIES = ("mmacs", "params")


class Objective(Protocol):
    name: str  # column name in candidates.csv ("top1" or "proxy_mmacs")
    label: str  # axis label / printed name
    is_proxy: bool

    def score(self, configs: Sequence[SubnetConfig], costs: Costs) -> np.ndarray:
        """One value per config, higher is better."""
        ...


@dataclass
class ProxyObjective:
    """Rank by compute (MMACs) or size (parameters): more capacity under the same latency cap."""

    kind: str = "mmacs"
    is_proxy: bool = True

    def __post_init__(self) -> None:
        if self.kind not in PROXIES:
            raise SearchError(f"unknown proxy {self.kind!r}; use one of {', '.join(PROXIES)}")

    @property
    def name(self) -> str:
        return f"proxy_{self.kind}"

    @property
    def label(self) -> str:
        unit = "MMACs" if self.kind == "mmacs" else "M params"
        return f"proxy objective: {unit} (not accuracy)"

    def score(self, configs: Sequence[SubnetConfig], costs: Costs) -> np.ndarray:
        values = costs.mmacs if self.kind == "mmacs" else costs.params / 1e6
        return np.asarray(values, dtype=float)


EvaluateFn = Callable[[SubnetConfig], float]


@dataclass
class AccuracyObjective:
    """Top-1 (%) of each config inside the supernet, memoised per config.

    Evaluating a subnet means BN recalibration plus a pass over the held-out split, the dominant
    cost of a supernet search; evolution keeps its parents across generations, so each config is
    evaluated once.
    """

    evaluate: EvaluateFn
    name: str = "top1"
    label: str = "top-1 (%) in the supernet, held-out split"
    is_proxy: bool = False
    cache: dict[SubnetConfig, float] = field(default_factory=dict)
    on_evaluated: Callable[[int], None] | None = None

    def score(self, configs: Sequence[SubnetConfig], costs: Costs) -> np.ndarray:
        out = np.empty(len(configs))
        for i, config in enumerate(configs):
            if config not in self.cache:
                self.cache[config] = float(self.evaluate(config))
                if self.on_evaluated is not None:
                    self.on_evaluated(len(self.cache))
            out[i] = self.cache[config]
        return out

    @property
    def evaluations(self) -> int:
        return len(self.cache)


def _supernet_api() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """`load_supernet` and `evaluate_top1` from the supernet package (model.py or train.py)."""
    found: dict[str, Any] = {}
    for module_name in ("lutnas.supernet.checkpoint", "lutnas.supernet.model", "lutnas.supernet.train"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for attr in ("load_supernet", "evaluate_top1"):
            if attr not in found and hasattr(module, attr):
                found[attr] = getattr(module, attr)
    missing = [a for a in ("load_supernet", "evaluate_top1") if a not in found]
    if missing:
        raise SearchError(f"this lutnas has no {' / '.join(missing)} in lutnas.supernet; search "
                          f"without --supernet (proxy objective) or update lutnas")
    return found["load_supernet"], found["evaluate_top1"]


@dataclass
class SupernetBundle:
    space: SearchSpace
    supernet: Any
    objective: AccuracyObjective
    calib_loader: Any = None
    calib_batches: int = 0

    def recalibrate(self, config: SubnetConfig) -> None:
        """BN statistics for `config` (as its accuracy was measured), before extracting it."""
        self.supernet.recalibrate_bn(config, self.calib_loader, self.calib_batches)
        self.supernet.eval()


def supernet_objective(checkpoint: str, data: str, space: SearchSpace | None = None,
                       calib_batches: int = 4, batch_size: int = 64,
                       max_heldout: int | None = None, threads: int | None = None) -> SupernetBundle:
    """Load a trained supernet and make its held-out top-1 the objective.

    The held-out split comes from `supernet.data` (a split no training run sees); BN statistics are
    re-estimated per subnet on a fixed subset of training batches, the same for every candidate.
    """
    import torch
    from torch.utils.data import Subset

    from lutnas.supernet.data import calibration_loader, eval_loader, load_data

    if threads is not None:
        # Measured on a shared 2-core host: one subnet's held-out pass took 0.3 s with 1 torch
        # thread and 8.6 s with 2 (threads spin against other processes); the CLI defaults to 1.
        torch.set_num_threads(threads)
    load_supernet, evaluate_top1 = _supernet_api()
    loaded_space, supernet = load_supernet(checkpoint)
    if space is not None and _blocks_signature(space) != _blocks_signature(loaded_space):
        raise SearchError(f"--supernet {checkpoint} was trained on space {loaded_space.name!r}, "
                          f"not on --space {space.name!r}; pass the space it was trained on")
    supernet.eval()
    splits = load_data(data, max(loaded_space.resolutions), loaded_space.num_classes)
    heldout = splits.heldout
    if max_heldout is not None and len(heldout) > max_heldout:
        heldout = Subset(heldout, list(range(max_heldout)))
    loader = eval_loader(heldout, batch_size)
    calib = calibration_loader(splits.train, batch_size, calib_batches, seed=0)

    def evaluate(config: SubnetConfig) -> float:
        with torch.no_grad():  # evaluate_top1 gives a fraction; outputs show percent
            return 100.0 * float(evaluate_top1(supernet, config, loader, calib, calib_batches))

    return SupernetBundle(loaded_space, supernet, AccuracyObjective(evaluate), calib, calib_batches)


def _blocks_signature(space: SearchSpace) -> tuple[str, ...]:
    return tuple(b.key for b in space.blocks_of(space.largest()))
