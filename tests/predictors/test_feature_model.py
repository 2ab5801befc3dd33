"""FeatureLatencyModel: estimator contract, bad input, model choice, calibrated intervals, files."""

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lutnas.errors import PredictorError
from lutnas.predictors import FeatureLatencyModel
from lutnas.predictors.feature_model import SIMPLE

OPS = ("none", "skip", "conv1x1", "conv3x3", "avgpool")
NODE_OF_EDGE = (1, 2, 2, 3, 3, 3)


def cells(n: int, seed: int, noise: float = 0.03) -> tuple[pd.DataFrame, np.ndarray]:
    """NAS-Bench-201-like cells (one-hot edges) on a fixed device: additive edge costs, interactions
    between edges into one node, log-normal noise (the benchmark's generator, smaller)."""
    device = np.random.default_rng(12345)
    cost = np.outer(device.uniform(0.6, 1.5, 6), [0.0, 0.04, 0.55, 1.6, 0.28])
    rng = np.random.default_rng(seed)
    choice = rng.integers(0, 5, size=(n, 6))
    latency = 3.0 + cost[np.arange(6), choice].sum(axis=1)
    conv = np.isin(choice, [2, 3])
    for i in range(6):
        for j in range(i + 1, 6):
            if NODE_OF_EDGE[i] == NODE_OF_EDGE[j]:
                latency += 0.35 * (conv[:, i] & conv[:, j])
    latency *= np.exp(noise * rng.standard_normal(n))
    frame = pd.DataFrame({f"e{e}={op}": (choice[:, e] == k).astype(float)
                          for e in range(6) for k, op in enumerate(OPS)})
    return frame, latency


@pytest.fixture(scope="module")
def fitted() -> tuple[FeatureLatencyModel, pd.DataFrame, np.ndarray]:
    x, y = cells(400, seed=0)
    return FeatureLatencyModel(n_jobs=1).fit(x, y), x, y


def test_estimator_contract_and_numpy_input() -> None:
    from sklearn.base import clone

    model = FeatureLatencyModel(method="linear", random_state=3)
    assert model.get_params() == {"method": "linear", "random_state": 3, "n_jobs": None}
    assert clone(model).get_params() == model.get_params()
    x, y = cells(80, seed=1)
    assert model.fit(x.to_numpy(), y) is model
    assert model.feature_names_in_[:2] == ["x0", "x1"] and model.n_features_in_ == 30
    predicted = model.predict(x.to_numpy())
    assert predicted.dtype == np.float64 and predicted.shape == (80,)
    with pytest.raises(PredictorError, match="30"):
        model.predict(x.to_numpy()[:, :5])


def test_bad_input_names_the_columns_and_rows() -> None:
    x, y = cells(40, seed=2)
    with pytest.raises(PredictorError, match="unknown feature model method 'bogus'"):
        FeatureLatencyModel(method="bogus")
    with pytest.raises(PredictorError, match="bogus"):
        FeatureLatencyModel().set_params(method="bogus")
    bad = x.copy()
    bad.loc[7, "e2=skip"] = np.nan
    bad.loc[9, "e3=none"] = np.inf
    with pytest.raises(PredictorError, match=r"\['e2=skip', 'e3=none'\] at rows \[7, 9\]") as info:
        FeatureLatencyModel().fit(bad, y)
    assert "\n" not in str(info.value)
    zero = y.copy()
    zero[12] = 0.0
    with pytest.raises(PredictorError, match=r"rows \[12\] hold \[0.0\]"):
        FeatureLatencyModel().fit(x, zero)
    with pytest.raises(PredictorError, match="rows and y has"):
        FeatureLatencyModel().fit(x, y[:-1])
    model = FeatureLatencyModel(method="linear").fit(x, y)
    with pytest.raises(PredictorError, match="NaN or inf in columns"):
        model.predict(bad)
    with pytest.raises(PredictorError, match="lacks columns"):
        model.predict(x.drop(columns=["e0=none"]))
    with pytest.raises(PredictorError, match="coverage level"):
        model.predict(x, interval=90)


def test_chosen_model_is_never_worse_than_the_best_simple_one(fitted) -> None:
    model, _, _ = fitted
    best_simple = max(model.cv_[name]["within10"] for name in SIMPLE)
    assert model.cv_[model.method_]["within10"] >= best_simple - 0.01
    assert set(model.cv_) >= {"linear", "linear-log", "pairwise", "forest", "boosting"}


def test_with_few_rows_a_simple_model_wins() -> None:
    x, y = cells(40, seed=4)
    model = FeatureLatencyModel(n_jobs=1).fit(x, y)
    assert model.method_ in SIMPLE, model.cv_


@pytest.mark.parametrize("level", [0.8, 0.9])
def test_interval_coverage_on_held_out_networks(fitted, level: float) -> None:
    model, _, _ = fitted
    x, y = cells(4000, seed=99)
    predicted, lower, upper = model.predict(x, interval=level)
    assert np.all(lower < predicted) and np.all(predicted < upper)
    coverage = float(np.mean((lower <= y) & (y <= upper)))
    assert abs(coverage - level) <= 0.03, (coverage, model.method_)


def test_intervals_never_have_zero_width() -> None:
    x, y = cells(60, seed=5, noise=0.0)
    for method in ("linear", "boosting"):
        model = FeatureLatencyModel(method=method).fit(x, y)
        predicted, lower, upper = model.predict(x, interval=0.9)
        assert np.all(upper > lower)
        _, spread = model.predict_features(x, return_spread=True)
        assert np.all(spread > 0)


def test_save_load_round_trip_without_pickle(fitted, tmp_path: Path) -> None:
    model, x, _ = fitted
    path = model.save(tmp_path / "phone.feature.npz")
    with zipfile.ZipFile(path) as archive:
        assert all(name.endswith(".npy") for name in archive.namelist())
    with np.load(path, allow_pickle=False) as data:  # nothing in it needs pickle
        assert all(data[name].dtype != object for name in data.files)
    loaded = FeatureLatencyModel.load(path)
    assert loaded.method_ == model.method_ and loaded.get_params() == model.get_params()
    a, b = model.predict(x, interval=0.9), loaded.predict(x, interval=0.9)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    pickled = tmp_path / "evil.feature.npz"
    pickled.write_bytes(pickle.dumps(model))
    with pytest.raises(PredictorError, match="pickled predictors are never loaded"):
        FeatureLatencyModel.load(pickled)


def test_categorical_columns_and_trees_round_trip(tmp_path: Path) -> None:
    x, y = cells(120, seed=6)
    frame = x.iloc[:, :10].assign(stage=np.where(x["e0=conv3x3"] > 0, "big", "small"))
    model = FeatureLatencyModel(method="forest", n_jobs=1).fit(frame, y)
    loaded = FeatureLatencyModel.load(model.save(tmp_path / "f.npz"))
    assert np.array_equal(model.predict(frame), loaded.predict(frame))
