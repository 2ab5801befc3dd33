"""Learned latency predictor: per block kind, trees on the spec's parameters and analytic features.

Why this shape:
- The target is log latency and the trees fit the *residual* of the analytic predictor. Trees cannot
  extrapolate, and a plan's largest blocks are often the ones left unmeasured; the analytic model
  carries the trend (MACs, bytes, launches) and the trees learn the device's quirks around it.
- Per kind, "none" (analytic only, offset), ridge (linear, and with pairwise products) and the tree
  ensembles compete on K-fold held-out error and the simplest candidate within 2% of the best wins
  (`trees.fit_residual_model`): with few blocks of a kind the simple models win by themselves.
- Intervals: `predict_blocks(specs, interval=0.9)` -> (ms, lower, upper), split-conformal on the
  kind's cross-validated log errors (the analytic model's log-normal spread for a kind with fewer
  than 5 blocks), never of zero width; `spread` is the 90% half-width in sigmas. Adaptive profiling
  ranks the blocks to measure next by the interval's width in ms.
- Fitted trees are kept as plain arrays (`trees.TreeEnsemble`), predicted with numpy, and saved as
  JSON + arrays: no pickle, nothing executed on load, no scikit-learn version lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from lutnas.errors import PredictorError
from lutnas.predictors.analytic import AnalyticPredictor, threads_of
from lutnas.predictors.base import check_fitted
from lutnas.predictors.blocksum import BlockSumPredictor, keyed_values
from lutnas.predictors.correction import Correction
from lutnas.predictors.features import block_feature_frame, log_features, measured_latencies
from lutnas.predictors.trees import METHODS, MIN_HALFWIDTH, FittedModel, check_level, fit_residual_model
from lutnas.space import BlockSpec, SearchSpace, SubnetConfig, as_specs, kind_fields

SPREAD_LEVEL = 0.9  # the spread is the 90% interval's half-width in sigmas ...
SPREAD_Z = NormalDist().inv_cdf(0.95)  # ... divided by the normal quantile of that level


class LearnedPredictor(BlockSumPredictor):
    """Block latency = analytic estimate x exp(trees on features), per block kind."""

    name = "learned"
    fitted_attributes = ("models_",)

    def __init__(self, space: SearchSpace | None = None, method: str = "auto", random_state: int = 0) -> None:
        super().__init__(space)
        if method not in METHODS + ("auto",):
            raise PredictorError(f"unknown learned method {method!r}; use one of {METHODS} or auto")
        self.method = method
        self.random_state = random_state

    def fit(self, table_or_frame: Any) -> LearnedPredictor:
        """Fit on the measured blocks of a table, frame or {key: ms} mapping (at least 3)."""
        latencies = measured_latencies(table_or_frame)
        if len(latencies) < 3:
            raise PredictorError(f"the learned predictor needs at least 3 measured blocks, got "
                                 f"{len(latencies)}; profile more blocks")
        specs = as_specs(latencies.index)
        y = latencies.to_numpy(dtype=float)
        self.analytic_ = AnalyticPredictor().fit_specs(specs, y, threads_of(table_or_frame))
        base = np.log(self.analytic_.predict_blocks(specs))
        self.models_: dict[str, FittedModel] = {}
        self.measured_ = dict(zip(latencies.index, y))
        kinds = np.array([s.kind for s in specs])
        for kind in sorted({str(k) for k in kinds}):
            mask = kinds == kind
            mine = [s for s, m in zip(specs, mask) if m]
            x = self._design(mine, kind, base[mask])
            self.models_[kind] = fit_residual_model(x, np.log(y[mask]) - base[mask],
                                                    self.random_state, self.method)
        self.correction_ = Correction()
        return self

    @staticmethod
    def _design(specs: Sequence[BlockSpec], kind: str, analytic_log: np.ndarray) -> np.ndarray:
        x = log_features(block_feature_frame(specs, kind))
        return np.column_stack([x, analytic_log])

    def _predict_blocks(self, specs: list[BlockSpec], use_measured: bool) -> tuple[np.ndarray, np.ndarray]:
        ms = self._model_ms(specs)
        # The spread is a one-sigma equivalent of the kind's calibrated 90% interval, never 0 for
        # a block the predictor has not measured.
        spread_ms = ms * self._log_halfwidths(specs, SPREAD_LEVEL) / SPREAD_Z
        if use_measured:
            for i, spec in enumerate(specs):
                if spec.key in self.measured_:
                    ms[i], spread_ms[i] = self.measured_[spec.key], 0.0
        return ms, spread_ms

    def _model_ms(self, specs: list[BlockSpec]) -> np.ndarray:
        base = np.log(self.analytic_.predict_blocks(specs))
        log_ms = base.copy()
        kinds = np.array([s.kind for s in specs])
        for kind in sorted(set(kinds)):
            mask = kinds == kind
            model = self.models_.get(kind)
            if model is None:
                continue  # a kind never measured: the analytic model alone
            mine = [s for s, m in zip(specs, mask) if m]
            log_ms[mask] = base[mask] + model.predict(self._design(mine, kind, base[mask]))[0]
        return np.exp(log_ms)

    def _log_halfwidths(self, specs: Sequence[BlockSpec], level: float) -> np.ndarray:
        """Per block, the log-space half-width of a `level` interval: the conformal quantile of its
        kind's held-out errors, or (a kind with too few blocks to hold out) the analytic model's
        log-normal spread for that kind."""
        check_level(level)
        z = NormalDist().inv_cdf(0.5 + level / 2)
        cache: dict[str, float] = {}
        for kind in {s.kind for s in specs}:
            model = self.models_.get(kind)
            half = model.halfwidth(level) if model is not None and len(model.scores) >= 5 else None
            if half is None:
                half = z * self.analytic_.sigma_.get(kind, self.analytic_.sigma_["*"])
            cache[kind] = max(float(half), MIN_HALFWIDTH)
        return np.array([cache[s.kind] for s in specs])

    def predict_blocks(self, specs: Sequence[BlockSpec | str], return_spread: bool = False,
                       use_measured: bool = True, interval: float | None = None) -> Any:
        """ms per block; with `return_spread` also the spread in ms; with `interval` (a coverage
        level such as 0.9) instead (ms, lower, upper), a calibrated interval (split-conformal on the
        kind's cross-validated errors) of nonzero width around every prediction."""
        if interval is None:
            return super().predict_blocks(specs, return_spread, use_measured)
        specs = as_specs(specs)
        ms = super().predict_blocks(specs, use_measured=use_measured)
        half = self._log_halfwidths(specs, interval) if specs else np.zeros(0)
        return ms, ms * np.exp(-half), ms * np.exp(half)

    def predict(self, configs: Sequence[SubnetConfig], interval: float | None = None) -> Any:
        """ms per config; with `interval`, (ms, lower, upper) where the bounds are the corrected
        sums of the blocks' bounds (block errors of a kind move together, so they add up)."""
        if interval is None:
            return super().predict(configs)
        space = self._require_space()
        per_config = [[s.key for s in space.blocks_of(c)] for c in configs]
        unique = sorted({k for keys in per_config for k in keys})
        _, lower, upper = self.predict_blocks(unique, interval=interval)
        lo, hi = dict(zip(unique, lower)), dict(zip(unique, upper))
        blocks = np.array([len(keys) for keys in per_config], dtype=float)
        sum_lo = np.array([sum(lo[k] for k in keys) for keys in per_config], dtype=float)
        sum_hi = np.array([sum(hi[k] for k in keys) for keys in per_config], dtype=float)
        ms = super().predict(configs)
        if not self.corrected:
            return ms, sum_lo, sum_hi
        return (ms, self.corrected_sums(configs, sum_lo, blocks),
                self.corrected_sums(configs, sum_hi, blocks))

    def methods(self) -> dict[str, dict[str, Any]]:
        """Per kind: the method chosen and the held-out MAPE of each candidate."""
        check_fitted(self)
        return {k: {"method": m.method, "cv_mape": m.cv_mape} for k, m in self.models_.items()}

    # -------------------------------------------------------------- state (serialize.py)
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self)
        analytic_header, _ = self.analytic_.state()
        header: dict[str, Any] = {"method": self.method, "random_state": self.random_state,
                                  "correction": self._correction_state(), "analytic": analytic_header,
                                  "kinds": {}, "measured_keys": list(self.measured_)}
        arrays: dict[str, np.ndarray] = {
            "measured.ms": np.array(list(self.measured_.values()), dtype=float)}
        for kind, model in self.models_.items():
            header["kinds"][kind], kind_arrays = model.state(f"kind.{kind}")
            arrays.update(kind_arrays)
        return header, arrays

    @classmethod
    def from_state(cls, header: dict[str, Any], arrays: dict[str, np.ndarray],
                   space: SearchSpace | None = None) -> LearnedPredictor:
        predictor = cls(space, method=str(header["method"]), random_state=int(header["random_state"]))
        predictor._load_correction(header)
        predictor.analytic_ = AnalyticPredictor.from_state(header["analytic"], {})
        predictor.measured_ = keyed_values(header["measured_keys"], arrays["measured.ms"])
        predictor.models_ = {}
        for kind, entry in header["kinds"].items():
            if kind not in kind_fields():
                raise PredictorError(f"predictor file names unknown block kind {kind!r}; refit it")
            model = FittedModel.from_state(entry, arrays, f"kind.{kind}")
            expected = len(block_feature_frame([], kind).columns) + 1
            if model.ensemble is not None and model.ensemble.n_features != expected:
                raise PredictorError(f"predictor file's {kind} trees take {model.ensemble.n_features} "
                                     f"features, this lutnas makes {expected}; refit it")
            if model.linear is not None and len(model.linear.mean) != expected:
                raise PredictorError(f"predictor file's {kind} ridge takes {len(model.linear.mean)} "
                                     f"features, this lutnas makes {expected}; refit it")
            predictor.models_[kind] = model
        return predictor
