"""Residual models (ridge lines and tree ensembles) kept and evaluated as plain numpy arrays.

The learned and transfer predictors fit a model to a log-space residual (`fit_residual_model`): per
call, "none" (a median offset), ridge (linear, and with pairwise products) and the tree ensembles
(random forest, gradient boosting) compete on K-fold held-out error, and the simplest candidate
within CHOICE_TOLERANCE of the best wins, so with few blocks simple models win by themselves. The
chosen model keeps its held-out absolute errors: the conformal scores its intervals come from.
Fitted models become flat arrays (`LinearModel`, `TreeEnsemble`), predicted with numpy and saved as
JSON + arrays: no pickle, nothing executed on load, no scikit-learn version lock. For the same
reason scikit-learn is imported only where models are fitted (it costs ~1.7 s to import, and
loading or using a saved predictor never needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lutnas.errors import PredictorError

METHODS = ("none", "ridge", "ridge-pairwise", "forest", "boosting")  # simplest first
MIN_BLOCKS_FOR_TREES = 5  # below this, no trees: a median offset or a ridge line
MAX_PAIRWISE = 1500  # pairwise products beyond this many are not tried (cost, and rows to carry them)
CHOICE_TOLERANCE = 0.02  # a more complex candidate must beat a simpler one by more than 2% of error
SCORE_FOLDS = 10  # folds of the chosen model's conformal scores
MIN_HALFWIDTH = 1e-3  # log space: no interval is narrower than +-0.1%
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
class LinearModel:
    """Ridge regression on standardised features (optionally with all pairwise products), kept as
    plain arrays: prediction = [z, pairwise(z)] @ coef + intercept, z = (x - mean) / scale."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    pairwise: bool

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, pairwise: bool = False) -> LinearModel:
        """Ridge with its penalty chosen by generalised cross-validation (RidgeCV)."""
        from sklearn.linear_model import RidgeCV

        mean = x.mean(axis=0)
        std = x.std(axis=0)
        scale = np.where(std > 0, std, 1.0)
        design = _linear_design((x - mean) / scale, pairwise)
        model = RidgeCV(alphas=np.logspace(-4, 3, 15)).fit(design, y)
        return cls(mean, scale, np.asarray(model.coef_, dtype=float), float(model.intercept_), pairwise)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """One value per row of `x` (rows, features)."""
        if x.shape[1] != len(self.mean):
            raise PredictorError(f"linear model expects {len(self.mean)} features, got {x.shape[1]}")
        return _linear_design((x - self.mean) / self.scale, self.pairwise) @ self.coef + self.intercept


def _linear_design(z: np.ndarray, pairwise: bool) -> np.ndarray:
    if not pairwise:
        return z
    i, j = np.triu_indices(z.shape[1], 1)
    return np.column_stack([z, z[:, i] * z[:, j]])


@dataclass
class FittedModel:
    """A residual model: trees, a ridge line or nothing, plus an offset, with the held-out MAPE of
    each candidate it was chosen over and its own held-out absolute errors (`scores`, sorted; the
    conformal scores its intervals come from)."""

    method: str  # one of METHODS
    ensemble: TreeEnsemble | None
    offset: float  # added in log space (median residual, for "none")
    cv_mape: dict[str, float]
    linear: LinearModel | None = None
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residual and its spread across trees per row (0 for a model without trees; the calibrated
        uncertainty is `halfwidth`)."""
        mean = np.full(x.shape[0], self.offset)
        spread = np.zeros(x.shape[0])
        if self.linear is not None:
            mean = mean + self.linear.predict(x)
        if self.ensemble is not None:
            trees, spread = self.ensemble.predict(x)
            mean = mean + trees
        return mean, spread

    def halfwidth(self, level: float) -> float | None:
        """Conformal half-width at `level` (None when the model has no held-out errors)."""
        return conformal_quantile(self.scores, level) if len(self.scores) else None

    def state(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON entry, arrays named `prefix.<part>`) for a predictor file."""
        entry: dict[str, Any] = {"method": self.method, "offset": self.offset, "cv_mape": self.cv_mape}
        arrays: dict[str, np.ndarray] = {f"{prefix}.scores": np.asarray(self.scores, dtype=float)}
        if self.linear is not None:
            entry["pairwise"] = self.linear.pairwise
            entry["intercept"] = self.linear.intercept
            arrays.update({f"{prefix}.lin_{name}": getattr(self.linear, name)
                           for name in ("mean", "scale", "coef")})
        if self.ensemble is None:
            return entry, arrays
        e = self.ensemble
        entry.update(combine=e.combine, scale=e.scale, n_features=e.n_features)
        arrays.update({f"{prefix}.{name}": getattr(e, name) for name in _ARRAYS})
        return entry, arrays

    @classmethod
    def from_state(cls, entry: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str) -> FittedModel:
        """Inverse of `state`; malformed trees raise PredictorError (see `check_tree_arrays`)."""
        ensemble = linear = None
        if "combine" in entry:
            parts = {name: arrays[f"{prefix}.{name}"] for name in _ARRAYS}
            check_tree_arrays(parts, int(entry["n_features"]), prefix)
            ensemble = TreeEnsemble(str(entry["combine"]), scale=float(entry["scale"]),
                                    n_features=int(entry["n_features"]), **parts)
        if "pairwise" in entry:
            mean, scale, coef = (arrays[f"{prefix}.lin_{n}"] for n in ("mean", "scale", "coef"))
            p = len(mean)
            if len(scale) != p or len(coef) != (p + p * (p - 1) // 2 if entry["pairwise"] else p):
                raise PredictorError(f"predictor file's linear model ({prefix}) is malformed; rebuild it")
            linear = LinearModel(mean, scale, coef, float(entry["intercept"]), bool(entry["pairwise"]))
        scores = np.sort(np.abs(arrays.get(f"{prefix}.scores", np.zeros(0)).astype(float)))
        return cls(str(entry["method"]), ensemble, float(entry["offset"]),
                   {str(k): float(v) for k, v in entry["cv_mape"].items()}, linear, scores)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """Split-conformal quantile of absolute held-out errors: the ceil((n+1) level)-th smallest (the
    largest when there are too few), never below MIN_HALFWIDTH so no interval has zero width."""
    check_level(level)
    ordered = np.sort(np.abs(np.asarray(scores, dtype=float)))
    if not len(ordered):
        raise PredictorError("no held-out errors to calibrate an interval on; fit on more rows")
    k = min(len(ordered), int(np.ceil((len(ordered) + 1) * level)))
    return max(float(ordered[k - 1]), MIN_HALFWIDTH)


def check_level(level: float) -> None:
    """PredictorError unless 0 < level < 1 (the nominal coverage of an interval)."""
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise PredictorError(f"interval must be a coverage level in (0, 1) such as 0.9, got {level!r}")


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

def fit_candidate(name: str, x: np.ndarray, y: np.ndarray, random_state: int,
                   n_jobs: int | None = None) -> FittedModel:
    """One candidate fitted on all of (x, y), without held-out scores."""
    if name == "none":
        return FittedModel("none", None, float(np.median(y)), {})
    if name in ("ridge", "ridge-pairwise"):
        return FittedModel(name, None, 0.0, {}, LinearModel.fit(x, y, pairwise=name == "ridge-pairwise"))
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    if name == "forest":
        model: Any = RandomForestRegressor(n_estimators=60, min_samples_leaf=1 if len(y) < 40 else 2,
                                           max_features=0.6, random_state=random_state, n_jobs=n_jobs)
    else:
        model = GradientBoostingRegressor(n_estimators=80, learning_rate=0.1, max_depth=3,
                                          subsample=0.8, random_state=random_state)
    model.fit(x, y)
    return FittedModel(name, TreeEnsemble.from_sklearn([model], x.shape[1]), 0.0, {})


def kfold(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K shuffled (train, test) index splits of n rows (k is capped at n)."""
    order = np.random.default_rng(seed).permutation(n)
    return [(np.setdiff1d(order, part), np.sort(part)) for part in np.array_split(order, min(k, n))]


def out_of_fold(name: str, x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                random_state: int, n_jobs: int | None = None) -> np.ndarray:
    """Each row predicted by the candidate fitted on the folds that do not hold it."""
    predicted = np.empty(len(y))
    for train, test in folds:
        predicted[test] = fit_candidate(name, x[train], y[train], random_state, n_jobs).predict(x[test])[0]
    return predicted


def candidate_names(n: int, n_features: int) -> list[str]:
    """Candidates worth trying on n rows: trees need MIN_BLOCKS_FOR_TREES rows, pairwise terms a
    number of products the rows can carry."""
    names = ["none", "ridge"]
    terms = n_features + n_features * (n_features - 1) // 2
    # With fewer rows than half its terms, a pairwise ridge's penalty (chosen by GCV) swings
    # between the folds and the final fit, and its intervals under-cover (OFA Note10, 44 blocks).
    if terms <= MAX_PAIRWISE and n >= terms / 2:
        names.append("ridge-pairwise")
    if n >= MIN_BLOCKS_FOR_TREES:
        names += ["forest", "boosting"]
    return names


def _mape_log(predicted_log: np.ndarray, true_log: np.ndarray) -> float:
    """MAPE of latencies given log-space predictions of the same quantity."""
    return float(np.mean(np.abs(np.exp(predicted_log - true_log) - 1.0)))


def fit_residual_model(x: np.ndarray, residual: np.ndarray, random_state: int = 0,
                       method: str = "auto", n_jobs: int | None = None) -> FittedModel:
    """Fit a model of a log-space residual, choosing among `candidate_names` by K-fold held-out MAPE
    ("auto"; the simplest candidate within CHOICE_TOLERANCE of the best wins) or as given; the chosen
    model keeps its held-out absolute errors as conformal scores. PredictorError for an unknown
    method."""
    n = len(residual)
    if method not in (*METHODS, "auto"):
        raise PredictorError(f"unknown learned method {method!r}; use one of {METHODS} or auto")
    if n < 2:
        return FittedModel("none", None, float(np.median(residual)) if n else 0.0, {})
    folds = kfold(n, 5, random_state)
    names = candidate_names(n, x.shape[1]) if method == "auto" else [method]
    if method != "none" and n < MIN_BLOCKS_FOR_TREES:
        names = ["none"]
    held_out = {name: out_of_fold(name, x, residual, folds, random_state, n_jobs) for name in names}
    cv = {name: _mape_log(pred, residual) for name, pred in held_out.items()}
    chosen = simplest_within(cv, names)
    model = fit_candidate(chosen, x, residual, random_state, n_jobs)
    model.cv_mape = cv if method == "auto" else {}
    # Conformal scores from 10 folds: fold models fitted on 90% of the rows err nearly as the final
    # one does (5 folds over-covered by 5 points on OFA's Note10 blocks).
    scoring = (out_of_fold(chosen, x, residual, kfold(n, SCORE_FOLDS, random_state + 1), random_state,
                           n_jobs) if n > 5 else held_out[chosen])
    model.scores = np.sort(np.abs(scoring - residual))
    return model


def simplest_within(errors: dict[str, float], order: list[str], tolerance: float | None = None) -> str:
    """The first name of `order` (simplest first) whose error is within `tolerance` (relative) of
    the smallest: a complex model must earn its place by more than noise."""
    tolerance = CHOICE_TOLERANCE if tolerance is None else tolerance
    best = min(errors.values())
    return next(name for name in order if errors[name] <= best * (1 + tolerance) + 1e-12)
