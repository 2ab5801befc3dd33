"""Learned latency predictor: per block kind, trees on the spec's parameters and analytic features.

Why this shape:
- The target is log latency and the trees fit the *residual* of the analytic predictor. Trees cannot
  extrapolate, and a plan's largest blocks are often the ones left unmeasured; the analytic model
  carries the trend (FLOPs, bytes, launches) and the trees learn the device's quirks around it.
- Per kind, random forest and gradient boosting (and "no trees": analytic only) compete on K-fold
  held-out error and the most accurate wins; with few blocks of a kind the forest or the analytic
  model usually wins, with many the boosting does.
- Spread per prediction: across a forest's trees, or across the K boosting models of the folds,
  in log space, so adaptive profiling knows where the predictor is unsure.
- Fitted trees are kept as plain arrays (`TreeEnsemble`), predicted with numpy, and saved as JSON +
  arrays: no pickle, nothing executed on load, no scikit-learn version lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from lutnas.errors import PredictorError
from lutnas.predictors.analytic import AnalyticPredictor, BlockSumPredictor, build_from_context
from lutnas.predictors.base import register_predictor
from lutnas.predictors.features import as_specs, block_feature_frame, log_features, measured_latencies
from lutnas.space import BlockSpec, SearchSpace

METHODS = ("forest", "boosting", "none")
MIN_BLOCKS_FOR_TREES = 5  # below this, a kind is priced by the analytic model times its median ratio
MIN_BLOCKS_FOR_CHOICE = 10  # below this there is too little to hold out; the forest is the safe pick


# ------------------------------------------------------------------------------------------------
# Trees as arrays.

@dataclass
class TreeEnsemble:
    """Regression trees stored as flat arrays; members combine their trees by mean (a forest) or by
    base + scale * sum (one boosting model). Prediction = mean over members."""

    combine: str  # "mean" | "boost"
    base: np.ndarray  # per member
    scale: float
    member: np.ndarray  # per tree: index of its member
    offsets: np.ndarray  # per tree: index of its root in the node arrays
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    n_features: int

    @classmethod
    def from_sklearn(cls, models: Sequence[Any], n_features: int) -> "TreeEnsemble":
        trees, members, bases = [], [], []
        if isinstance(models[0], RandomForestRegressor):
            combine, scale = "mean", 1.0
            for i, model in enumerate(models):
                trees += [est.tree_ for est in model.estimators_]
                members += [i] * len(model.estimators_)
                bases.append(0.0)
        else:
            combine, scale = "boost", float(models[0].learning_rate)
            for i, model in enumerate(models):
                # init_ is the DummyRegressor(mean) of squared-error boosting.
                bases.append(float(np.ravel(model.init_.constant_)[0]))
                trees += [est[0].tree_ for est in model.estimators_]
                members += [i] * len(model.estimators_)
        offsets, arrays = [], {k: [] for k in ("left", "right", "feature", "threshold", "value")}
        start = 0
        for tree in trees:
            offsets.append(start)
            left, right = tree.children_left.copy(), tree.children_right.copy()
            leaf = left < 0
            left[~leaf] += start
            right[~leaf] += start
            arrays["left"].append(left)
            arrays["right"].append(right)
            arrays["feature"].append(np.where(leaf, -1, tree.feature))
            arrays["threshold"].append(np.where(leaf, 0.0, tree.threshold))
            arrays["value"].append(tree.value[:, 0, 0])
            start += tree.node_count
        cat = {k: np.concatenate(v) for k, v in arrays.items()}
        return cls(combine, np.array(bases, dtype=float), scale, np.array(members, dtype=np.int64),
                   np.array(offsets, dtype=np.int64), cat["left"].astype(np.int64),
                   cat["right"].astype(np.int64), cat["feature"].astype(np.int64),
                   cat["threshold"].astype(float), cat["value"].astype(float), n_features)

    def tree_outputs(self, x: np.ndarray) -> np.ndarray:
        """(n_trees, n_rows) leaf values, all trees walked at once level by level."""
        node = np.repeat(self.offsets[:, None], x.shape[0], axis=1)
        rows = np.broadcast_to(np.arange(x.shape[0]), node.shape)
        while True:
            feat = self.feature[node]
            inner = feat >= 0
            if not inner.any():
                break
            go_left = x[rows[inner], feat[inner]] <= self.threshold[node[inner]]
            node[inner] = np.where(go_left, self.left[node[inner]], self.right[node[inner]])
        return self.value[node]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread over members (or over trees, for a single forest)."""
        if x.shape[1] != self.n_features:
            raise PredictorError(f"tree ensemble expects {self.n_features} features, got {x.shape[1]}")
        outputs = self.tree_outputs(x)
        n_members = len(self.base)
        per_member = np.empty((n_members, x.shape[0]))
        for m in range(n_members):
            mine = outputs[self.member == m]
            if self.combine == "mean":
                per_member[m] = mine.mean(axis=0)
            else:
                per_member[m] = self.base[m] + self.scale * mine.sum(axis=0)
        if n_members == 1 and self.combine == "mean":
            return per_member[0], outputs.std(axis=0)
        return per_member.mean(axis=0), per_member.std(axis=0)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.{name}": getattr(self, name) for name in
                ("base", "member", "offsets", "left", "right", "feature", "threshold", "value")}

    @classmethod
    def from_arrays(cls, header: dict[str, Any], arrays: dict[str, np.ndarray],
                    prefix: str) -> "TreeEnsemble":
        from lutnas.predictors.serialize import check_tree_arrays

        parts = {name: arrays[f"{prefix}.{name}"] for name in
                 ("base", "member", "offsets", "left", "right", "feature", "threshold", "value")}
        check_tree_arrays(parts, int(header["n_features"]), prefix)
        return cls(str(header["combine"]), scale=float(header["scale"]),
                   n_features=int(header["n_features"]), **parts)


# ------------------------------------------------------------------------------------------------
# Fitting one table of features (shared by the block predictor and the generic entry).

def _candidates(random_state: int, n: int) -> dict[str, Any]:
    leaf = 1 if n < 40 else 2
    return {
        "forest": lambda: RandomForestRegressor(n_estimators=60, min_samples_leaf=leaf,
                                                max_features=0.6, random_state=random_state),
        "boosting": lambda: GradientBoostingRegressor(n_estimators=80, learning_rate=0.1,
                                                      max_depth=3, subsample=0.8,
                                                      random_state=random_state),
    }


@dataclass
class FittedModel:
    method: str  # "forest" | "boosting" | "none"
    ensemble: TreeEnsemble | None
    offset: float  # added in log space (median residual, for "none" and kinds without trees)
    cv_mape: dict[str, float]


def fit_residual_model(x: np.ndarray, residual: np.ndarray, random_state: int = 0,
                       method: str = "auto") -> FittedModel:
    """Fit trees to a log-space residual, choosing the method by K-fold held-out MAPE."""
    n = len(residual)
    offset = float(np.median(residual)) if n else 0.0
    if n < MIN_BLOCKS_FOR_TREES or method == "none":
        return FittedModel("none", None, offset, {})
    makers = _candidates(random_state, n)
    if method != "auto":
        if method not in makers:
            raise PredictorError(f"unknown learned method {method!r}; use one of {METHODS} or auto")
        model = makers[method]().fit(x, residual)
        return FittedModel(method, TreeEnsemble.from_sklearn([model], x.shape[1]), 0.0, {})
    if n < MIN_BLOCKS_FOR_CHOICE:
        model = makers["forest"]().fit(x, residual)
        return FittedModel("forest", TreeEnsemble.from_sklearn([model], x.shape[1]), 0.0, {})
    folds = KFold(n_splits=min(4, n), shuffle=True, random_state=random_state)
    errors: dict[str, list[float]] = {"none": [], "forest": [], "boosting": []}
    boosting_models = []
    for train, test in folds.split(x):
        errors["none"].append(_mape_log(np.full(len(test), np.median(residual[train])), residual[test]))
        for name, make in makers.items():
            model = make().fit(x[train], residual[train])
            errors[name].append(_mape_log(model.predict(x[test]), residual[test]))
            if name == "boosting":
                boosting_models.append(model)
    cv = {name: float(np.mean(v)) for name, v in errors.items()}
    best = min(cv, key=cv.get)
    if best == "none":
        return FittedModel("none", None, offset, cv)
    if best == "boosting":
        # The fold models are kept as the ensemble: their disagreement is the spread.
        return FittedModel("boosting", TreeEnsemble.from_sklearn(boosting_models, x.shape[1]), 0.0, cv)
    model = makers["forest"]().fit(x, residual)
    return FittedModel("forest", TreeEnsemble.from_sklearn([model], x.shape[1]), 0.0, cv)


def _mape_log(predicted_log: np.ndarray, true_log: np.ndarray) -> float:
    """MAPE of latencies given log-space predictions of the same quantity."""
    return float(np.mean(np.abs(np.exp(predicted_log - true_log) - 1.0)))


def _predict_model(model: FittedModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if model.ensemble is None:
        return np.full(x.shape[0], model.offset), np.zeros(x.shape[0])
    mean, spread = model.ensemble.predict(x)
    return mean + model.offset, spread


# ------------------------------------------------------------------------------------------------

class LearnedPredictor(BlockSumPredictor):
    """Block latency = analytic estimate x exp(trees on features), per block kind."""

    name = "learned"

    def __init__(self, space: SearchSpace | None = None, method: str = "auto", random_state: int = 0) -> None:
        super().__init__(space)
        if method not in METHODS + ("auto",):
            raise PredictorError(f"unknown learned method {method!r}; use one of {METHODS} or auto")
        self.method = method
        self.random_state = random_state

    def fit_blocks(self, table_or_frame: Any) -> "LearnedPredictor":
        latencies = measured_latencies(table_or_frame)
        if len(latencies) < 3:
            raise PredictorError(f"the learned predictor needs at least 3 measured blocks, got "
                                 f"{len(latencies)}; profile more blocks")
        specs = as_specs(latencies.index)
        y = latencies.to_numpy(dtype=float)
        self.analytic_ = AnalyticPredictor(threads=_threads_of(table_or_frame)).fit_specs(specs, y)
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
        return self

    @staticmethod
    def _design(specs: Sequence[BlockSpec], kind: str, analytic_log: np.ndarray) -> np.ndarray:
        x = log_features(block_feature_frame(specs, kind))
        return np.column_stack([x, analytic_log])

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise PredictorError("the learned predictor is not fitted; call fit(table) first")

    def predict_blocks_with_spread(self, specs: Sequence[BlockSpec | str],
                                   use_measured: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """ms and spread (ms) per block; measured keys return their measurement when `use_measured`
        (what a table completed by this predictor holds)."""
        self._check_fitted()
        specs = as_specs(specs)
        if not specs:
            return np.zeros(0), np.zeros(0)
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
            residual, spread = _predict_model(model, self._design(mine, kind, base[mask]))
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
        self._check_fitted()
        return {k: {"method": m.method, "cv_mape": m.cv_mape} for k, m in self.models_.items()}

    # -------------------------------------------------------------- state (serialize.py)
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        analytic_header, _ = self.analytic_.state()
        header: dict[str, Any] = {"method": self.method, "random_state": self.random_state,
                                  "correction": self.correction_, "analytic": analytic_header,
                                  "kinds": {}}
        arrays: dict[str, np.ndarray] = {
            "measured.ms": np.array(list(self.measured_.values()), dtype=float)}
        header["measured_keys"] = list(self.measured_)
        for kind, model in self.models_.items():
            entry: dict[str, Any] = {"method": model.method, "offset": model.offset,
                                     "cv_mape": model.cv_mape}
            if model.ensemble is not None:
                entry.update(combine=model.ensemble.combine, scale=model.ensemble.scale,
                             n_features=model.ensemble.n_features)
                arrays.update(model.ensemble.arrays(f"kind.{kind}"))
            header["kinds"][kind] = entry
        return header, arrays

    @classmethod
    def from_state(cls, header: dict[str, Any], arrays: dict[str, np.ndarray],
                   space: SearchSpace | None = None) -> "LearnedPredictor":
        from lutnas.space import kind_fields

        predictor = cls(space, method=str(header["method"]), random_state=int(header["random_state"]))
        predictor.correction_ = {"scale": float(header["correction"]["scale"]),
                                 "intercept": float(header["correction"]["intercept"])}
        predictor.analytic_ = AnalyticPredictor.from_state(header["analytic"], {})
        keys = [str(k) for k in header["measured_keys"]]
        values = arrays["measured.ms"]
        if len(keys) != len(values):
            raise PredictorError("predictor file is inconsistent (measured keys and values differ "
                                 "in length); it was altered: refit it")
        predictor.measured_ = dict(zip(keys, values.astype(float)))
        predictor.models_ = {}
        for kind, entry in header["kinds"].items():
            if kind not in kind_fields():
                raise PredictorError(f"predictor file names unknown block kind {kind!r}; refit it")
            ensemble = None
            if entry["method"] != "none":
                ensemble = TreeEnsemble.from_arrays(entry, arrays, f"kind.{kind}")
                expected = len(block_feature_frame([], kind).columns) + 1
                if ensemble.n_features != expected:
                    raise PredictorError(f"predictor file's {kind} trees take {ensemble.n_features} "
                                         f"features, this lutnas makes {expected}; refit it")
            predictor.models_[kind] = FittedModel(str(entry["method"]), ensemble,
                                                  float(entry["offset"]),
                                                  {str(k): float(v) for k, v in entry["cv_mape"].items()})
        return predictor


def _threads_of(source: Any) -> int:
    settings = getattr(source, "settings", None)
    if isinstance(settings, dict) and settings.get("threads"):
        return int(settings["threads"])
    return 1


# ------------------------------------------------------------------------------------------------
# The generic entry: latency data of another architecture encoding.

class FeatureLatencyModel:
    """Trees on any table of numeric and categorical columns (e.g. a published lookup table of
    another search space). Categorical columns are one-hot encoded with the categories seen in fit;
    an unseen category predicts as all-zeros, and a missing column is an error naming it."""

    def __init__(self, method: str = "auto", random_state: int = 0) -> None:
        self.method = method
        self.random_state = random_state

    def fit_features(self, frame: pd.DataFrame, latency_ms: Sequence[float]) -> "FeatureLatencyModel":
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
        if not hasattr(self, "model_"):
            raise PredictorError("the feature model is not fitted; call fit_features first")
        x = self._encode(frame)
        log_ms, log_spread = _predict_model(self.model_, x)
        ms = np.exp(log_ms + self.linear_.predict(x))
        return (ms, ms * log_spread) if return_spread else ms


register_predictor("learned", lambda context: build_from_context(LearnedPredictor, context))
