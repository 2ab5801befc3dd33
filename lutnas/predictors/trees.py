"""Tree ensembles fitted with scikit-learn, kept and evaluated as plain numpy arrays.

The learned and transfer predictors fit trees to a log-space residual (`fit_residual_model`): per
call, random forest and gradient boosting (and "no trees") compete on K-fold held-out error and the
most accurate wins. Fitted trees become flat arrays (`TreeEnsemble`), predicted with numpy and
saved as JSON + arrays: no pickle, nothing executed on load, no scikit-learn version lock. For the
same reason scikit-learn is imported only where trees are fitted (it costs ~1.7 s to import, and
loading or using a saved predictor never needs it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lutnas.errors import PredictorError

METHODS = ("forest", "boosting", "none")
MIN_BLOCKS_FOR_TREES = 5  # below this, no trees: a median offset over the analytic model
MIN_BLOCKS_FOR_CHOICE = 10  # below this there is too little to hold out; the forest is the safe pick
_ARRAYS = ("base", "member", "offsets", "left", "right", "feature", "threshold", "value")


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
    def from_sklearn(cls, models: Sequence[Any], n_features: int) -> TreeEnsemble:
        """From fitted RandomForestRegressors (one member each) or GradientBoostingRegressors."""
        trees, members, bases = [], [], []
        boosting = hasattr(models[0], "init_")  # squared-error boosting's DummyRegressor(mean)
        combine, scale = ("boost", float(models[0].learning_rate)) if boosting else ("mean", 1.0)
        for i, model in enumerate(models):
            if boosting:
                bases.append(float(np.ravel(model.init_.constant_)[0]))
                trees += [est[0].tree_ for est in model.estimators_]
            else:
                bases.append(0.0)
                trees += [est.tree_ for est in model.estimators_]
            members += [i] * len(model.estimators_)
        arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("left", "right", "feature", "threshold",
                                                                "value")}
        offsets, start = [], 0
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


@dataclass
class FittedModel:
    """A residual model: trees (or none) plus a log-space offset, with the held-out MAPE of each
    candidate it was chosen over."""

    method: str  # "forest" | "boosting" | "none"
    ensemble: TreeEnsemble | None
    offset: float  # added in log space (median residual, for "none")
    cv_mape: dict[str, float]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log-space residual and its spread per row (spread 0 without trees)."""
        if self.ensemble is None:
            return np.full(x.shape[0], self.offset), np.zeros(x.shape[0])
        mean, spread = self.ensemble.predict(x)
        return mean + self.offset, spread

    def state(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON entry, arrays named `prefix.<part>`) for a predictor file."""
        entry: dict[str, Any] = {"method": self.method, "offset": self.offset, "cv_mape": self.cv_mape}
        if self.ensemble is None:
            return entry, {}
        e = self.ensemble
        entry.update(combine=e.combine, scale=e.scale, n_features=e.n_features)
        return entry, {f"{prefix}.{name}": getattr(e, name) for name in _ARRAYS}

    @classmethod
    def from_state(cls, entry: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str) -> FittedModel:
        """Inverse of `state`; malformed trees raise PredictorError (see `check_tree_arrays`)."""
        ensemble = None
        if entry["method"] != "none":
            parts = {name: arrays[f"{prefix}.{name}"] for name in _ARRAYS}
            check_tree_arrays(parts, int(entry["n_features"]), prefix)
            ensemble = TreeEnsemble(str(entry["combine"]), scale=float(entry["scale"]),
                                    n_features=int(entry["n_features"]), **parts)
        return cls(str(entry["method"]), ensemble, float(entry["offset"]),
                   {str(k): float(v) for k, v in entry["cv_mape"].items()})


def check_tree_arrays(parts: dict[str, np.ndarray], n_features: int, prefix: str) -> None:
    """Refuse tree arrays whose walk could loop or index out of range (even a file whose digest was
    recomputed after an edit cannot make prediction hang or read out of bounds)."""
    def bad(why: str) -> PredictorError:
        return PredictorError(f"predictor file's trees ({prefix}) are malformed: {why}; rebuild it")

    n = len(parts["value"])
    if not all(len(parts[k]) == n for k in ("left", "right", "feature", "threshold")):
        raise bad("node arrays differ in length")
    if n == 0 or len(parts["member"]) != len(parts["offsets"]) or len(parts["base"]) == 0:
        raise bad("no trees or inconsistent tree counts")
    if parts["member"].min() < 0 or parts["member"].max() >= len(parts["base"]):
        raise bad("tree member index out of range")
    if parts["offsets"].min() < 0 or parts["offsets"].max() >= n:
        raise bad("tree offset out of range")
    index = np.arange(n)
    inner = parts["feature"] >= 0
    if parts["feature"].max() >= n_features:
        raise bad("feature index out of range")
    for side in ("left", "right"):
        child = parts[side][inner]
        # Children come after their parent (depth-first build): every walk ends at a leaf.
        if child.size and (np.any(child <= index[inner]) or np.any(child >= n)):
            raise bad(f"{side} child index out of order or range")
    if not (np.all(np.isfinite(parts["value"])) and np.all(np.isfinite(parts["threshold"]))):
        raise bad("non-finite values")


# ------------------------------------------------------------------------------------------------
# Fitting (the only place scikit-learn is used).

def _candidates(random_state: int, n: int) -> dict[str, Callable[[], Any]]:
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    leaf = 1 if n < 40 else 2
    return {
        "forest": lambda: RandomForestRegressor(n_estimators=60, min_samples_leaf=leaf,
                                                max_features=0.6, random_state=random_state),
        "boosting": lambda: GradientBoostingRegressor(n_estimators=80, learning_rate=0.1,
                                                      max_depth=3, subsample=0.8,
                                                      random_state=random_state),
    }


def _mape_log(predicted_log: np.ndarray, true_log: np.ndarray) -> float:
    """MAPE of latencies given log-space predictions of the same quantity."""
    return float(np.mean(np.abs(np.exp(predicted_log - true_log) - 1.0)))


def fit_residual_model(x: np.ndarray, residual: np.ndarray, random_state: int = 0,
                       method: str = "auto") -> FittedModel:
    """Fit trees to a log-space residual, choosing the method by K-fold held-out MAPE ("auto") or
    as given ("forest", "boosting", "none"); PredictorError for an unknown method."""
    n = len(residual)
    offset = float(np.median(residual)) if n else 0.0
    if method not in (*METHODS, "auto"):
        raise PredictorError(f"unknown learned method {method!r}; use one of {METHODS} or auto")
    if n < MIN_BLOCKS_FOR_TREES or method == "none":
        return FittedModel("none", None, offset, {})
    makers = _candidates(random_state, n)
    if method != "auto" or n < MIN_BLOCKS_FOR_CHOICE:
        chosen = method if method != "auto" else "forest"
        model = makers[chosen]().fit(x, residual)
        return FittedModel(chosen, TreeEnsemble.from_sklearn([model], x.shape[1]), 0.0, {})
    return _choose_by_cv(x, residual, makers, random_state, offset)


def _choose_by_cv(x: np.ndarray, residual: np.ndarray, makers: dict[str, Callable[[], Any]],
                  random_state: int, offset: float) -> FittedModel:
    from sklearn.model_selection import KFold

    folds = KFold(n_splits=min(4, len(residual)), shuffle=True, random_state=random_state)
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
    best = min(cv, key=cv.__getitem__)
    if best == "none":
        return FittedModel("none", None, offset, cv)
    if best == "boosting":
        # The fold models are kept as the ensemble: their disagreement is the spread.
        return FittedModel("boosting", TreeEnsemble.from_sklearn(boosting_models, x.shape[1]), 0.0, cv)
    model = makers["forest"]().fit(x, residual)
    return FittedModel("forest", TreeEnsemble.from_sklearn([model], x.shape[1]), 0.0, cv)
