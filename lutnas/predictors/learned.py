"""Learned latency predictor: per block kind, trees on the spec's parameters and analytic features.

Why this shape:
- The target is log latency and the trees fit the *residual* of the analytic predictor. Trees cannot
  extrapolate, and a plan's largest blocks are often the ones left unmeasured; the analytic model
  carries the trend (MACs, bytes, launches) and the trees learn the device's quirks around it.
- Per kind, random forest and gradient boosting (and "no trees": analytic only) compete on K-fold
  held-out error and the most accurate wins (`trees.fit_residual_model`); with few blocks of a kind
  the forest or the analytic model usually wins, with many the boosting does.
- Spread per prediction: across a forest's trees, or across the K boosting models of the folds,
  in log space, so adaptive profiling knows where the predictor is unsure.
- Fitted trees are kept as plain arrays (`trees.TreeEnsemble`), predicted with numpy, and saved as
  JSON + arrays: no pickle, nothing executed on load, no scikit-learn version lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lutnas.errors import PredictorError
from lutnas.predictors.analytic import AnalyticPredictor, threads_of
from lutnas.predictors.base import check_fitted
from lutnas.predictors.blocksum import BlockSumPredictor, keyed_values
from lutnas.predictors.correction import Correction
from lutnas.predictors.features import block_feature_frame, log_features, measured_latencies
from lutnas.predictors.trees import METHODS, FittedModel, fit_residual_model
from lutnas.space import BlockSpec, SearchSpace, as_specs, kind_fields


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
        base = np.log(self.analytic_.predict_blocks(specs))
        log_ms = base.copy()
        log_spread = np.full(len(specs), self.analytic_.sigma_["*"])
        kinds = np.array([s.kind for s in specs])
        for kind in sorted(set(kinds)):
            mask = kinds == kind
            model = self.models_.get(kind)
            if model is None:
                continue  # a kind never measured: the analytic model alone, with its spread
            mine = [s for s, m in zip(specs, mask) if m]
            residual, spread = model.predict(self._design(mine, kind, base[mask]))
            log_ms[mask] = base[mask] + residual
            if model.ensemble is not None:
                log_spread[mask] = spread
            else:
                log_spread[mask] = self.analytic_.sigma_.get(kind, self.analytic_.sigma_["*"])
        ms = np.exp(log_ms)
        spread_ms = ms * log_spread
        if use_measured:
            for i, spec in enumerate(specs):
                if spec.key in self.measured_:
                    ms[i], spread_ms[i] = self.measured_[spec.key], 0.0
        return ms, spread_ms

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
            predictor.models_[kind] = model
        return predictor


# ------------------------------------------------------------------------------------------------
# The generic entry: latency data of another architecture encoding.

class FeatureLatencyModel:
    """Trees on any table of numeric and categorical columns (e.g. a published lookup table of
    another search space). Categorical columns are one-hot encoded with the categories seen in fit;
    an unseen category predicts as all-zeros, and a missing column is an error naming it."""

    label = "feature model"
    fit_hint = "fit_features(frame, latency_ms)"
    fitted_attributes = ("model_",)

    def __init__(self, method: str = "auto", random_state: int = 0) -> None:
        self.method = method
        self.random_state = random_state

    def fit_features(self, frame: pd.DataFrame, latency_ms: Sequence[float]) -> FeatureLatencyModel:
        from sklearn.linear_model import Ridge  # fitting only (see trees.py)

        y = np.asarray(latency_ms, dtype=float)
        if len(frame) != len(y):
            raise PredictorError(f"fit_features got {len(frame)} rows and {len(y)} latencies")
        if len(y) < 3 or not np.all(np.isfinite(y) & (y > 0)):
            raise PredictorError("fit_features needs at least 3 positive, finite latencies")
        self.numeric_ = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
                         and not pd.api.types.is_bool_dtype(frame[c])]
        self.categories_ = {str(c): sorted(frame[c].astype(str).unique())
                            for c in frame.columns if c not in self.numeric_}
        x = self._encode(frame)
        log_y = np.log(y)
        # A ridge line in log space carries the power-law trend that trees cannot extrapolate;
        # the trees fit what it leaves (as the analytic model does for lutnas blocks).
        self.linear_ = Ridge(alpha=1.0).fit(x, log_y)
        self.model_ = fit_residual_model(x, log_y - self.linear_.predict(x), self.random_state,
                                         self.method)
        return self

    def _encode(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [c for c in [*self.numeric_, *self.categories_] if c not in frame.columns]
        if missing:
            raise PredictorError(f"feature frame lacks columns {missing} that the model was fitted on")
        parts = [np.sign(frame[self.numeric_].to_numpy(dtype=float))
                 * np.log1p(np.abs(frame[self.numeric_].to_numpy(dtype=float)))]
        for column, values in self.categories_.items():
            text = frame[column].astype(str).to_numpy()
            parts.append(np.column_stack([(text == v).astype(float) for v in values]))
        return np.column_stack(parts) if parts else np.zeros((len(frame), 0))

    def predict_features(self, frame: pd.DataFrame, return_spread: bool = False) -> Any:
        """ms per row (and the spread in ms with `return_spread`)."""
        check_fitted(self)
        x = self._encode(frame)
        log_ms, log_spread = self.model_.predict(x)
        ms = np.exp(log_ms + self.linear_.predict(x))
        return (ms, ms * log_spread) if return_spread else ms
