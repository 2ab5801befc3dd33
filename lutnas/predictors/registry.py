"""The one registry of predictors: a name -> its class and the hyper-parameters that entry sets.

Building predictors for a table (`lutnas evaluate`, `search --predictor/--fill`), saving and loading
them (`serialize.py`) and the CLI's choices (`build-table --predictor`, `predict --predictor`) all
read this table, so a new predictor is one `register_predictor` call: what it can do follows from
its class (`learns_from`, and whether it has `state`/`from_state` to be saved).
Entries are kept in report order: the LUT and the baseline first, then the learned ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lutnas.errors import PredictorError
from lutnas.predictors.analytic import AnalyticPredictor
from lutnas.predictors.base import TABLE, Predictor, PredictorContext
from lutnas.predictors.baselines import FlopsLinearPredictor
from lutnas.predictors.learned import LearnedPredictor
from lutnas.predictors.lut import LutPredictor
from lutnas.predictors.transfer import TransferPredictor
from lutnas.space import SearchSpace


@dataclass(frozen=True)
class Entry:
    """One registered predictor: its class and the constructor arguments this name sets."""

    name: str
    cls: type[Predictor]
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def savable(self) -> bool:
        """Saved to and loaded from a predictor file (it has `state` and `from_state`)."""
        return hasattr(self.cls, "from_state") and hasattr(self.cls, "state")

    @property
    def from_table(self) -> bool:
        """Fitted from one latency table (`fit(table)`), so it can be built for any table."""
        return self.cls.learns_from == TABLE

    def create(self, space: SearchSpace | None) -> Predictor:
        """A new, unfitted instance for `space`."""
        return self.cls(space=space, **self.params)  # type: ignore[call-arg]


_REGISTRY: dict[str, Entry] = {}


def register_predictor(name: str, cls: type[Predictor], **params: Any) -> Entry:
    """Add `name` -> `cls(space=..., **params)`; PredictorError if the name is taken."""
    if name in _REGISTRY:
        raise PredictorError(f"predictor {name!r} is already registered")
    _REGISTRY[name] = Entry(name, cls, dict(params))
    return _REGISTRY[name]


def entry(name: str) -> Entry:
    """The entry of `name`; PredictorError naming the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PredictorError(f"unknown predictor {name!r}; known: {', '.join(_REGISTRY)}") from None


def saved_names() -> tuple[str, ...]:
    """Predictors kept in files beside a table (`predict --predictor`, `load_predictor`)."""
    return tuple(name for name, e in _REGISTRY.items() if e.savable)


def fittable_names() -> tuple[str, ...]:
    """Predictors fitted on one table's blocks and saved beside it (`build-table --predictor`,
    `search --predictor` and `--fill`)."""
    return tuple(name for name, e in _REGISTRY.items() if e.savable and e.from_table)


def _calibrated(predictor: Predictor, context: PredictorContext) -> Predictor:
    if len(context.calibration_configs) and predictor.wants_calibration:
        predictor.calibrate(context.calibration_configs, context.calibration_ms, context.invoke_ms,
                            precision=getattr(context.table, "precision", None))
    return predictor


def fit_for_table(name: str, context: PredictorContext) -> Predictor:
    """`name` fitted on the context's table, then calibrated on its measured subnets when it has
    something to calibrate (the same subnets and correction for every block-sum predictor)."""
    item = entry(name)
    if not item.from_table:
        raise PredictorError(f"the {name} predictor is not fitted from one table; see its fit()")
    return _calibrated(item.create(context.space).fit(context.table), context)


def build_available(context: PredictorContext) -> list[Predictor]:
    """Every registered predictor that can be fitted on the context's table, in registry order;
    one that cannot (too few blocks, no stored correction) is left out."""
    built = []
    for item in _REGISTRY.values():
        if not item.from_table:
            continue
        try:
            predictor = item.create(context.space).fit(context.table)
        except PredictorError:
            continue  # not available for this table
        built.append(_calibrated(predictor, context))
    return built


register_predictor("lut", LutPredictor)
register_predictor("lut+correction", LutPredictor, corrected=True)
register_predictor("flops-linear", FlopsLinearPredictor)
register_predictor("analytic", AnalyticPredictor)
register_predictor("learned", LearnedPredictor)
register_predictor("transfer", TransferPredictor)
