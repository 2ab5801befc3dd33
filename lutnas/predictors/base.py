"""The one face every latency predictor shows (STYLE.md, after scikit-learn's estimator contract).

`fit(...) -> self`, `predict(configs) -> ms ndarray`, `evaluate(configs, measured_ms) -> report`, so
search and evaluation never care which predictor they hold. Learned state ends in `_`.

A predictor that can price single blocks (a learned one trained on block shapes) also offers
`predict_blocks(specs) -> ms ndarray`; the LUT predictor uses that to fill keys its table lacks.

The registry lets evaluation report every predictor that can be built for a table without knowing
them: issue 6 (learned) and the analytic predictor register themselves with `register_predictor`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lutnas.errors import PredictorError
from lutnas.space import BlockSpec, SubnetConfig


class Predictor(ABC):
    """Latency of whole subnets in milliseconds."""

    name: str = "predictor"

    def fit(self, configs: Sequence[SubnetConfig], measured_ms: Sequence[float]) -> "Predictor":
        """Learn from whole subnets measured end to end; predictors with nothing to learn keep this."""
        return self

    @abstractmethod
    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        """One latency (ms) per config, as a float64 array of len(configs)."""

    def evaluate(self, configs: Sequence[SubnetConfig], measured_ms: Sequence[float]) -> Any:
        """Accuracy against measured whole models (an `AccuracyReport`)."""
        from lutnas.predictors.evaluate import accuracy

        return accuracy(self.name, self.predict(configs), np.asarray(measured_ms, dtype=float))


@runtime_checkable
class BlockPredictor(Protocol):
    """A predictor that prices single blocks (used to fill a table's missing keys)."""

    name: str

    def predict_blocks(self, specs: Sequence[BlockSpec]) -> np.ndarray: ...


@dataclass(frozen=True)
class PredictorContext:
    """What a registered builder may use: the table, its space, and the calibration subnets."""

    table: Any  # LatencyTable
    space: Any  # SearchSpace
    calibration_configs: Sequence[SubnetConfig]
    calibration_ms: Sequence[float]


# name -> builder(context) -> Predictor or None (None: not available for this table).
Builder = Callable[[PredictorContext], "Predictor | None"]
_REGISTRY: dict[str, Builder] = {}


def register_predictor(name: str, builder: Builder) -> None:
    _REGISTRY[name] = builder


def registered_predictors() -> dict[str, Builder]:
    _load_builtin()
    return dict(_REGISTRY)


def build_available(context: PredictorContext) -> list[Predictor]:
    """Every registered predictor that can be built for this context, in registration order."""
    built = []
    builders = registered_predictors()
    order = [n for n in REPORT_ORDER if n in builders] + [n for n in builders if n not in REPORT_ORDER]
    for name in order:
        builder = builders[name]
        predictor = builder(context)
        if predictor is not None:
            if not isinstance(predictor, Predictor):
                raise PredictorError(f"registered predictor {name!r} returned "
                                     f"{type(predictor).__name__}, not a Predictor")
            built.append(predictor)
    return built


# The reference predictors first in reports; any others follow in registration order.
REPORT_ORDER = ("lut", "lut+correction", "flops-linear")
# Modules whose import registers a predictor, in report order.
BUILTIN_MODULES = ("lut", "baselines", "analytic", "learned")


def _load_builtin() -> None:
    # Lazy so base.py has no import cycle with its subclasses; a predictor module that is not there
    # (an older checkout) is simply not reported.
    import importlib

    for name in BUILTIN_MODULES:
        try:
            importlib.import_module(f"lutnas.predictors.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lutnas.predictors.{name}":
                raise
