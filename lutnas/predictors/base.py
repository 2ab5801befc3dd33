"""The one face every latency predictor shows (DESIGN.md, after scikit-learn's estimator contract).

- Hyper-parameters are constructor arguments, stored unchanged; nothing is learned there.
- `fit(...) -> self` learns from the predictor's data (a table of measured blocks for most; table A
  and blocks measured on B for transfer). Learned state ends in `_`, and `check_fitted` is the one
  test of it.
- `predict(configs) -> ms`: one float64 per config. Block predictors add
  `predict_blocks(specs, return_spread=False)`.
- `calibrate(configs, measured_ms)` fits what whole subnets measured end to end can teach (the
  `Correction` of block-sum predictors), where a predictor has something to calibrate.

Which predictors exist, and how one is built for a table, is `registry.py`'s business.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from lutnas.errors import PredictorError
from lutnas.space import BlockSpec, SearchSpace, SubnetConfig

if TYPE_CHECKING:
    from lutnas.tables.table import LatencyTable

TABLE = "table"  # `fit(table)`: learns from one table of measured blocks
TWO_TABLES = "two tables"  # `fit(table_a, measured_b)`: maps a known device's table to a new one


class Predictor(ABC):
    """Latency of whole subnets in milliseconds.

    Class attributes describe the predictor to the registry and to error messages: `name` (its
    registry name), `fit_hint` (how to fit it), `learns_from` (TABLE or TWO_TABLES) and
    `fitted_attributes` (the learned state `check_fitted` looks for; None: any public attribute
    ending in `_`; (): nothing to learn).
    """

    name: ClassVar[str] = "predictor"
    fit_hint: ClassVar[str] = "fit(table)"
    learns_from: ClassVar[str] = TABLE
    fitted_attributes: ClassVar[tuple[str, ...] | None] = None

    @property
    def label(self) -> str:
        """The name reports and plots show."""
        return self.name

    def fit(self, *data: Any) -> Predictor:
        """Learn from the predictor's data; a predictor with nothing to learn keeps this."""
        return self

    @abstractmethod
    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        """One latency (ms) per config, as a float64 array of len(configs)."""

    @property
    def wants_calibration(self) -> bool:
        """Whether `calibrate` on measured whole subnets would change this predictor."""
        return False

    def calibrate(self, configs: Sequence[SubnetConfig], measured_ms: Sequence[float],
                  invoke_ms: float | None = None, precision: str | None = None) -> Predictor:
        """Fit to whole subnets measured end to end; `precision` (the table's) prices weights where
        the correction has a weight term. PredictorError where there is nothing to fit."""
        raise PredictorError(f"the {self.label} predictor has nothing to calibrate on whole subnets")


@runtime_checkable
class BlockPredictor(Protocol):
    """A predictor that prices single blocks (used to fill a table's missing keys)."""

    name: str

    def predict_blocks(self, specs: Sequence[BlockSpec]) -> np.ndarray: ...


def check_fitted(predictor: Any, attributes: Sequence[str] | None = None) -> None:
    """Raise PredictorError naming how to fit `predictor` unless its learned state exists.

    `attributes` default to the class's `fitted_attributes`; when that is None too, any public
    attribute ending in `_` counts as learned state (scikit-learn's rule). The message uses the
    predictor's `label` and `fit_hint`.
    """
    names = attributes if attributes is not None else getattr(type(predictor), "fitted_attributes", None)
    if names is None:
        fitted = any(k.endswith("_") and not k.startswith("_") for k in vars(predictor))
    else:
        fitted = all(hasattr(predictor, name) for name in names)
    if not fitted:
        label = getattr(predictor, "label", type(predictor).__name__)
        raise PredictorError(f"the {label} predictor is not fitted; call "
                             f"{getattr(predictor, 'fit_hint', 'fit(...)')} first")


@dataclass(frozen=True)
class PredictorContext:
    """What the registry builds a predictor from: the table, its space, and the whole subnets
    measured for calibration (with the measured per-invoke overhead, when there is one)."""

    table: LatencyTable
    space: SearchSpace
    calibration_configs: Sequence[SubnetConfig] = ()
    calibration_ms: Sequence[float] = ()
    invoke_ms: float | None = None

    @classmethod
    def from_table(cls, table: LatencyTable, space: SearchSpace) -> PredictorContext:
        """The context with the calibration subnets recorded in the table's correction (the ones
        `build-table --calibrate` measured), so every predictor is corrected on the same subnets."""
        record = table.correction or {}
        configs = [space.validate(SubnetConfig.from_dict(c)) for c in record.get("configs", [])]
        measured = [float(v) for v in record.get("measured_ms", [])]
        invoke = float(record["invoke_ms"]) if record.get("invoke_measured") else None
        return cls(table, space, configs, measured, invoke)
