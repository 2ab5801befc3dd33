"""`FeatureLatencyModel`: latency from any table of features (scikit-learn's estimator contract).

For latency data of another architecture encoding (a published lookup table, NAS-Bench-201 or FBNet
networks with one-hot features, your own measurements): `fit(X, y)` with X a DataFrame (numeric and
categorical columns) or a numeric array and y the latencies in ms, then `predict(X)` or
`predict(X, interval=0.9)` for (ms, lower, upper).

Why this shape:
- Real phone data is often close to additive (a network's latency is nearly the sum of its cells'),
  and with a few hundred rows a plain ridge line beats trees. So simple and complex candidates
  compete by K-fold cross-validation: ridge (linear, and with pairwise products) on the latency and
  on its log, and trees on what the log ridge leaves. The share within +-10% decides, and a more
  complex candidate must beat a simpler one by more than CHOICE_POINTS to be chosen.
- Intervals are conformal: the chosen candidate's held-out errors |log(y / prediction)| over 10
  folds give the quantile at the requested level (K-fold cross-conformal around the model fitted on
  all rows), so they are calibrated whatever the candidate, and never of zero width (>= +-0.1%).
- Saved and loaded as the block predictors are (JSON + numeric arrays, `serialize.py`): no pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lutnas.errors import PredictorError
from lutnas.predictors.base import check_fitted
from lutnas.predictors.trees import FittedModel, check_level, conformal_quantile, kfold

# name -> (target space, residual model over the log ridge or None for a ridge on its own)
CANDIDATES: dict[str, tuple[str, str]] = {
    "linear": ("linear", "ridge"),
    "linear-log": ("log", "ridge"),
    "pairwise": ("linear", "ridge-pairwise"),
    "pairwise-log": ("log", "ridge-pairwise"),
    "forest": ("log", "forest"),
    "boosting": ("log", "boosting"),
}
SIMPLE = ("linear", "linear-log")
FEATURE_METHODS = ("auto", *CANDIDATES)
CHOICE_POINTS = 0.005  # a more complex candidate must win by more than half a point within +-10%
FOLDS = 5  # candidates are chosen on 5 folds
SCORE_FOLDS = 10  # the chosen one's conformal scores come from 10
MAX_PAIRWISE_FEATURES = 60  # beyond this many encoded columns pairwise products are not tried
SAVED_NAME = "feature-model"


@dataclass
class _Fitted:
    """One candidate: a ridge (and, for trees, trees on the log ridge's residual) in its space."""

    name: str
    ridge: FittedModel
    trees: FittedModel | None

    def predict_ms(self, x: np.ndarray, floor: float) -> np.ndarray:
        value = self.ridge.predict(x)[0]
        if self.trees is not None:
            value = value + self.trees.predict(x)[0]
        if CANDIDATES[self.name][0] == "log":
            return np.exp(value)
        return np.maximum(value, floor)  # a linear model may go below zero far from its data


def _fit_named(name: str, x: np.ndarray, y: np.ndarray, random_state: int, n_jobs: int | None) -> _Fitted:
    from lutnas.predictors.trees import fit_candidate

    space, model = CANDIDATES[name]
    target = np.log(y) if space == "log" else y
    if model in ("forest", "boosting"):
        ridge = fit_candidate("ridge", x, target, random_state)
        trees = fit_candidate(model, x, target - ridge.predict(x)[0], random_state, n_jobs)
        return _Fitted(name, ridge, trees)
    return _Fitted(name, fit_candidate(model, x, target, random_state), None)


def _within(predicted: np.ndarray, y: np.ndarray, bound: float) -> float:
    return float(np.mean(np.abs(predicted / y - 1.0) <= bound))


class FeatureLatencyModel:
    """Latency (ms) from a table of features; see the module docstring.

    Parameters: `method` ("auto" or one of CANDIDATES), `random_state` (folds and trees), `n_jobs`
    (forest fitting, as scikit-learn's). Fitted: `method_` (the chosen candidate), `cv_` (per
    candidate: held-out within5/within10/mape/spearman, 5-fold), `feature_names_in_`,
    `n_features_in_`.
    """

    label = "feature model"
    fit_hint = "fit(X, y)"
    fitted_attributes = ("model_",)

    def __init__(self, method: str = "auto", random_state: int = 0, n_jobs: int | None = None) -> None:
        _check_method(method)
        self.method = method
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ scikit-learn contract
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters (scikit-learn's `get_params`)."""
        return {"method": self.method, "random_state": self.random_state, "n_jobs": self.n_jobs}

    def set_params(self, **params: Any) -> FeatureLatencyModel:
        """Set constructor parameters (validated as in the constructor); returns self."""
        unknown = sorted(set(params) - set(self.get_params()))
        if unknown:
            raise PredictorError(f"FeatureLatencyModel has no parameter {unknown[0]!r}; "
                                 f"use {', '.join(self.get_params())}")
        if "method" in params:
            _check_method(params["method"])
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"FeatureLatencyModel({args})"

    def fit(self, X: Any, y: Sequence[float] | np.ndarray) -> FeatureLatencyModel:
        """Fit on X (DataFrame or 2-D numeric array, one row per network or block) and y (ms per
        row, positive and finite). PredictorError naming the columns or rows of bad input."""
        frame = _as_frame(X, None)
        latency = _check_latencies(y, frame)
        self.feature_names_in_ = [str(c) for c in frame.columns]
        self.n_features_in_ = len(self.feature_names_in_)
        self.numeric_ = [str(c) for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
                         and not pd.api.types.is_bool_dtype(frame[c])]
        _check_finite(frame, self.numeric_)
        self.categories_ = {str(c): sorted(frame[c].astype(str).unique())
                            for c in frame.columns if str(c) not in self.numeric_}
        x = self._encode(frame)
        self.floor_ms_ = float(latency.min()) * 0.1
        names = self._candidates(*x.shape) if self.method == "auto" else [self.method]
        folds = kfold(len(latency), FOLDS, self.random_state)
        held_out = {name: self._out_of_fold(name, x, latency, folds) for name in names}
        self.cv_ = {name: _scores(pred, latency) for name, pred in held_out.items()}
        self.method_ = _choose(self.cv_, names)
        self.model_ = _fit_named(self.method_, x, latency, self.random_state, self.n_jobs)
        # The conformal scores come from more, larger folds than the choice: models fitted on 90%
        # of the rows err almost as the final one does, so the interval neither over- nor
        # under-covers (5 folds over-covered by 2-3 points with pairwise terms on 900 rows).
        scoring = self._out_of_fold(self.method_, x, latency,
                                    kfold(len(latency), SCORE_FOLDS, self.random_state + 1))
        self.scores_ = np.sort(np.abs(np.log(latency / scoring)))
        return self

    def _candidates(self, n_rows: int, n_features: int) -> list[str]:
        names = list(SIMPLE)
        terms = n_features + n_features * (n_features - 1) // 2
        # Pairwise terms need rows to carry them (100 cells, 465 terms: 40% within +-10%).
        if n_features <= MAX_PAIRWISE_FEATURES and n_rows >= terms / 2:
            names += ["pairwise", "pairwise-log"]
        return names + ["forest", "boosting"]

    def _out_of_fold(self, name: str, x: np.ndarray, y: np.ndarray,
                     folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        predicted = np.empty(len(y))
        for train, test in folds:
            fitted = _fit_named(name, x[train], y[train], self.random_state, self.n_jobs)
            predicted[test] = fitted.predict_ms(x[test], self.floor_ms_)
        return predicted

    def predict(self, X: Any, interval: float | None = None) -> Any:
        """ms per row (float64); with `interval` (a coverage level such as 0.9), (ms, lower, upper):
        a conformal interval calibrated on the chosen candidate's cross-validated errors."""
        check_fitted(self)
        frame = _as_frame(X, self.feature_names_in_)
        _check_finite(frame, [c for c in self.numeric_ if c in frame.columns])
        ms = self.model_.predict_ms(self._encode(frame), self.floor_ms_)
        if interval is None:
            return ms
        check_level(interval)
        half = conformal_quantile(self.scores_, interval)
        return ms, ms * np.exp(-half), ms * np.exp(half)

    def _encode(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [c for c in [*self.numeric_, *self.categories_] if c not in frame.columns]
        if missing:
            raise PredictorError(f"feature frame lacks columns {missing} that the model was fitted on")
        parts = [frame[self.numeric_].to_numpy(dtype=float)]
        for column, values in self.categories_.items():
            text = frame[column].astype(str).to_numpy()
            parts.append(np.column_stack([(text == v).astype(float) for v in values]))
        return np.column_stack(parts) if parts else np.zeros((len(frame), 0))

    # ------------------------------------------------------------------ older names
    def fit_features(self, frame: Any, latency_ms: Sequence[float]) -> FeatureLatencyModel:
        """Same as `fit` (the name of earlier releases)."""
        return self.fit(frame, latency_ms)

    def predict_features(self, frame: Any, return_spread: bool = False) -> Any:
        """ms per row; with `return_spread` also a one-sigma equivalent spread in ms (from the
        calibrated 68% interval), never 0."""
        ms = self.predict(frame)
        if not return_spread:
            return ms
        return ms, ms * np.expm1(conformal_quantile(self.scores_, 0.6827))

    # ------------------------------------------------------------------ files (no pickle)
    def save(self, path: str | Path) -> Path:
        """Write the fitted model as JSON + numeric arrays (`serialize.py`'s format); returns path."""
        from lutnas.predictors.serialize import write_state

        check_fitted(self)
        header: dict[str, Any] = {
            "params": self.get_params(), "method_": self.method_, "cv": self.cv_,
            "feature_names": self.feature_names_in_, "numeric": self.numeric_,
            "categories": self.categories_, "floor_ms": self.floor_ms_}
        header["ridge"], arrays = self.model_.ridge.state("ridge")
        if self.model_.trees is not None:
            header["trees"], tree_arrays = self.model_.trees.state("trees")
            arrays.update(tree_arrays)
        arrays["conformal.scores"] = self.scores_
        return write_state(SAVED_NAME, header, arrays, path)

    @classmethod
    def load(cls, path: str | Path) -> FeatureLatencyModel:
        """A model written by `save` (verified first; nothing is executed)."""
        from lutnas.predictors.serialize import read_predictor_file

        document, arrays = read_predictor_file(path)
        if document.get("predictor") != SAVED_NAME:
            raise PredictorError(f"{path} holds a {document.get('predictor')!r} predictor, not a "
                                 f"feature model; load it with load_predictor_file")
        try:
            return cls._from_state(document["state"], arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise PredictorError(f"{path}: feature model file is incomplete or malformed "
                                 f"({type(exc).__name__}: {str(exc)[:100]}); refit and save it") from None

    @classmethod
    def _from_state(cls, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> FeatureLatencyModel:
        model = cls(**header["params"])
        model.method_ = str(header["method_"])
        _check_method(model.method_)
        model.cv_ = {str(k): {str(m): float(v) for m, v in d.items()} for k, d in header["cv"].items()}
        model.feature_names_in_ = [str(c) for c in header["feature_names"]]
        model.n_features_in_ = len(model.feature_names_in_)
        model.numeric_ = [str(c) for c in header["numeric"]]
        model.categories_ = {str(k): [str(v) for v in vs] for k, vs in header["categories"].items()}
        model.floor_ms_ = float(header["floor_ms"])
        ridge = FittedModel.from_state(header["ridge"], arrays, "ridge")
        trees = FittedModel.from_state(header["trees"], arrays, "trees") if "trees" in header else None
        width = len(model.numeric_) + sum(len(v) for v in model.categories_.values())
        if ridge.linear is None or len(ridge.linear.mean) != width:
            raise PredictorError("feature model file's ridge does not match its columns; refit and save it")
        model.model_ = _Fitted(model.method_, ridge, trees)
        model.scores_ = np.sort(np.abs(arrays["conformal.scores"].astype(float)))
        return model


# ------------------------------------------------------------------------------------------------
# Input checks: every message names the columns or rows and the fix.

def _check_method(method: Any) -> None:
    if method not in FEATURE_METHODS:
        raise PredictorError(f"unknown feature model method {method!r}; use one of "
                             f"{', '.join(FEATURE_METHODS)}")


def _as_frame(X: Any, columns: list[str] | None) -> pd.DataFrame:
    """A DataFrame from a DataFrame or a 2-D array (columns x0, x1, ... as scikit-learn names them)."""
    if isinstance(X, pd.DataFrame):
        frame = X.copy()
        frame.columns = [str(c) for c in frame.columns]
        return frame
    try:
        values = np.asarray(X, dtype=float)
    except (TypeError, ValueError):
        raise PredictorError("X must be a DataFrame or a numeric 2-D array (rows x features); pass "
                             "categorical columns in a DataFrame") from None
    if values.ndim != 2:
        raise PredictorError(f"X must be 2-D (rows x features), got shape {values.shape}; "
                             f"reshape it with X.reshape(-1, 1) for one feature")
    names = columns if columns is not None else [f"x{i}" for i in range(values.shape[1])]
    if len(names) != values.shape[1]:
        raise PredictorError(f"X has {values.shape[1]} columns, the model was fitted on {len(names)}")
    return pd.DataFrame(values, columns=names)


def _rows(labels: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in list(labels)[:limit])
    return f"[{shown}{', ...' if len(labels) > limit else ''}]"


def _check_finite(frame: pd.DataFrame, numeric: list[str]) -> None:
    values = frame[numeric].to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        columns = [numeric[j] for j in np.flatnonzero(bad.any(axis=0))]
        rows = frame.index[bad.any(axis=1)]
        raise PredictorError(f"features hold NaN or inf in columns {columns} at rows {_rows(rows)} "
                             f"({len(rows)} rows); fill or drop those rows")


def _check_latencies(y: Any, frame: pd.DataFrame) -> np.ndarray:
    try:
        latency = np.asarray(y, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise PredictorError("y must be numeric latencies in ms, one per row of X") from None
    if len(latency) != len(frame):
        raise PredictorError(f"X has {len(frame)} rows and y has {len(latency)} latencies; pass one "
                             f"latency per row")
    bad = ~(np.isfinite(latency) & (latency > 0))
    if bad.any():
        rows = frame.index[bad]
        raise PredictorError(f"latencies must be positive and finite; rows {_rows(rows)} hold "
                             f"{_rows(latency[bad].tolist())}; drop those rows")
    if len(latency) < FOLDS + 1:
        raise PredictorError(f"the feature model needs at least {FOLDS + 1} rows to cross-validate, "
                             f"got {len(latency)}; measure more networks")
    return latency


def _scores(predicted: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Held-out accuracy of one candidate (fractions; spearman as a correlation)."""
    from scipy.stats import spearmanr

    return {"within5": _within(predicted, y, 0.05), "within10": _within(predicted, y, 0.10),
            "mape": float(np.mean(np.abs(predicted / y - 1.0))),
            "spearman": float(spearmanr(predicted, y)[0]) if np.ptp(predicted) > 0 else 0.0}


def _choose(cv: dict[str, dict[str, float]], names: list[str]) -> str:
    """Best within +-10% (ties by MAPE), but the first (simplest) candidate within CHOICE_POINTS of
    it: complexity must pay for itself in held-out accuracy."""
    best = max(names, key=lambda n: (cv[n]["within10"], -cv[n]["mape"]))
    return next(n for n in names if cv[n]["within10"] >= cv[best]["within10"] - CHOICE_POINTS
                and cv[n]["mape"] <= cv[best]["mape"] * 1.05 + 0.001)  # 0.1% MAPE is noise
