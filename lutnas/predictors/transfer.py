"""Transfer a full latency table of device A to device B from K blocks measured on B.

Two devices (or two runtimes) disagree mostly per block kind: a phone's depthwise convs may be 3x
slower relative to its attention than the host's. So B's latency is A's latency mapped per kind in
log space (log b = a_k + s_k log a: a scale and an exponent per kind, falling back to the pooled
mapping for kinds with too few samples) plus a learned residual on the block's features, kept only
when K-fold held-out error says it helps. The K blocks are chosen to span kinds and sizes
(`choose_samples`), the rest of B's measured blocks, if any, are the held-out report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lutnas.errors import PredictorError
from lutnas.predictors.adaptive import covering_sample
from lutnas.predictors.analytic import BlockSumPredictor
from lutnas.predictors.features import as_specs, block_feature_frame, log_features, measured_latencies
from lutnas.predictors.learned import FittedModel, TreeEnsemble, _predict_model, fit_residual_model
from lutnas.space import BlockSpec, SearchSpace, kind_fields

MIN_FOR_OWN_SLOPE = 4
SLOPE_RANGE = (0.3, 2.0)  # latency on B grows with latency on A, and not wildly faster or slower


def choose_samples(table_a: Any, k: int, seed: int = 0) -> list[BlockSpec]:
    """K blocks of A's table spanning kinds and sizes: the ones to measure on B."""
    keys = list(measured_latencies(table_a).index)
    if k < 3:
        raise PredictorError(f"transfer needs at least 3 samples on the new device, got {k}")
    return covering_sample(keys, min(k, len(keys)), seed)


def _union_design(specs: Sequence[BlockSpec], log_a: np.ndarray) -> np.ndarray:
    """Pooled features over kinds: kind one-hot, shape fields (0 where absent), analytic, log A."""
    frame = block_feature_frame(specs)
    kinds = frame.pop("kind")
    numeric = frame.reindex(columns=_POOLED_COLUMNS, fill_value=0.0)
    onehot = np.column_stack([(kinds == k).to_numpy(dtype=float) for k in kind_fields()])
    return np.column_stack([log_features(numeric), onehot, log_a])


def _pooled_columns() -> list[str]:
    seen: dict[str, None] = {}
    for kind in kind_fields():
        for column in block_feature_frame([], kind).columns:
            seen.setdefault(column, None)
    return list(seen)


_POOLED_COLUMNS = _pooled_columns()


class TransferPredictor(BlockSumPredictor):
    """B's block latency from A's: per-kind log-linear mapping + learned residual."""

    name = "transfer"

    def __init__(self, space: SearchSpace | None = None, residual: str = "auto",
                 random_state: int = 0) -> None:
        super().__init__(space)
        self.residual = residual
        self.random_state = random_state

    def fit_transfer(self, table_a: Any, measured_b: Any) -> "TransferPredictor":
        a = measured_latencies(table_a)
        b = measured_latencies(measured_b)
        common = [k for k in b.index if k in a.index]
        if len(common) < 3:
            raise PredictorError(f"transfer needs at least 3 blocks measured on both devices, "
                                 f"got {len(common)}; measure blocks that are in table A")
        self.source_ = dict(zip(a.index, a.to_numpy(dtype=float)))
        specs = as_specs(common)
        x = np.log(a[common].to_numpy(dtype=float))
        y = np.log(b[common].to_numpy(dtype=float))
        slope, intercept = _line(x, y)
        self.mapping_: dict[str, tuple[float, float]] = {"*": (slope, intercept)}
        kinds = np.array([s.kind for s in specs])
        for kind in sorted({str(k) for k in kinds}):
            mask = kinds == kind
            if mask.sum() >= MIN_FOR_OWN_SLOPE and np.ptp(x[mask]) > 0.2:
                self.mapping_[kind] = _line(x[mask], y[mask])
            else:
                self.mapping_[kind] = (slope, float(np.mean(y[mask] - slope * x[mask])))
        mapped = self._map(specs, x)
        self.model_ = fit_residual_model(_union_design(specs, x), y - mapped, self.random_state,
                                         self.residual)
        resid = y - mapped - _predict_model(self.model_, _union_design(specs, x))[0]
        self.sigma_ = float(np.sqrt(np.mean(resid ** 2)))
        self.measured_ = dict(zip(common, b[common].to_numpy(dtype=float)))
        return self

    def fit_blocks(self, table_or_frame: Any) -> "TransferPredictor":
        raise PredictorError("a transfer predictor is fitted with fit_transfer(table_a, measured_b)")

    def _map(self, specs: Sequence[BlockSpec], log_a: np.ndarray) -> np.ndarray:
        params = np.array([self.mapping_.get(s.kind, self.mapping_["*"]) for s in specs])
        return params[:, 0] * log_a + params[:, 1]

    def predict_blocks_with_spread(self, specs: Sequence[BlockSpec | str],
                                   use_measured: bool = True) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "mapping_"):
            raise PredictorError("the transfer predictor is not fitted; call fit_transfer first")
        specs = as_specs(specs)
        if not specs:
            return np.zeros(0), np.zeros(0)
        missing = [s.key for s in specs if s.key not in self.source_]
        if missing:
            raise PredictorError(f"{len(missing)} blocks are not in table A (e.g. {missing[0]}); "
                                 f"transfer predicts only keys the source table holds")
        log_a = np.log([self.source_[s.key] for s in specs])
        residual, spread = _predict_model(self.model_, _union_design(specs, log_a))
        ms = np.exp(self._map(specs, log_a) + residual)
        spread_ms = ms * np.maximum(spread, self.sigma_)
        if use_measured:
            for i, spec in enumerate(specs):
                if spec.key in self.measured_:
                    ms[i], spread_ms[i] = self.measured_[spec.key], 0.0
        return ms, spread_ms

    def predict_table(self) -> pd.DataFrame:
        """Every key of A on B: measured ones as measured, the rest marked predicted:transfer."""
        keys = sorted(self.source_)
        ms, spread = self.predict_blocks_with_spread(keys)
        return pd.DataFrame({"median_ms": ms, "spread_ms": spread,
                             "kind": [k.partition(":")[0] for k in keys],
                             "source": ["measured" if k in self.measured_ else "predicted:transfer"
                                        for k in keys]}, index=pd.Index(keys, name="key"))

    # -------------------------------------------------------------- state (serialize.py)
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if not hasattr(self, "mapping_"):
            raise PredictorError("the transfer predictor is not fitted; call fit_transfer first")
        header: dict[str, Any] = {
            "residual": self.residual, "random_state": self.random_state,
            "correction": self.correction_, "sigma": self.sigma_,
            "mapping": {k: list(v) for k, v in self.mapping_.items()},
            "source_keys": list(self.source_), "measured_keys": list(self.measured_),
            "model": {"method": self.model_.method, "offset": self.model_.offset,
                      "cv_mape": self.model_.cv_mape}}
        arrays = {"source.ms": np.array(list(self.source_.values()), dtype=float),
                  "measured.ms": np.array(list(self.measured_.values()), dtype=float)}
        if self.model_.ensemble is not None:
            e = self.model_.ensemble
            header["model"].update(combine=e.combine, scale=e.scale, n_features=e.n_features)
            arrays.update(e.arrays("residual"))
        return header, arrays

    @classmethod
    def from_state(cls, header: dict[str, Any], arrays: dict[str, np.ndarray],
                   space: SearchSpace | None = None) -> "TransferPredictor":
        predictor = cls(space, residual=str(header["residual"]), random_state=int(header["random_state"]))
        predictor.correction_ = {"scale": float(header["correction"]["scale"]),
                                 "intercept": float(header["correction"]["intercept"])}
        predictor.sigma_ = float(header["sigma"])
        predictor.mapping_ = {str(k): (float(v[0]), float(v[1])) for k, v in header["mapping"].items()}
        for name, keys in (("source", header["source_keys"]), ("measured", header["measured_keys"])):
            values = arrays[f"{name}.ms"]
            if len(values) != len(keys):
                raise PredictorError("predictor file is inconsistent (keys and values differ in "
                                     "length); it was altered: refit it")
            setattr(predictor, f"{name}_", dict(zip((str(k) for k in keys), values.astype(float))))
        model = header["model"]
        ensemble = None
        if model["method"] != "none":
            ensemble = TreeEnsemble.from_arrays(model, arrays, "residual")
        predictor.model_ = FittedModel(str(model["method"]), ensemble, float(model["offset"]),
                                       {str(k): float(v) for k, v in model["cv_mape"].items()})
        return predictor


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 2 or np.ptp(x) < 1e-9:
        return 1.0, float(np.mean(y - x))
    slope, intercept = np.polyfit(x, y, 1)
    if not SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1]:
        slope = float(np.clip(slope, *SLOPE_RANGE))
        intercept = float(np.mean(y - slope * x))
    return float(slope), float(intercept)


def transfer_report(predictor: TransferPredictor, heldout_b: Mapping[str, float] | Any) -> dict[str, Any]:
    """Error of the transferred table on blocks of B that were measured but not used to fit."""
    truth = measured_latencies(heldout_b)
    truth = truth[[k for k in truth.index if k not in predictor.measured_ and k in predictor.source_]]
    if truth.empty:
        return {"heldout": 0}
    pred, _ = predictor.predict_blocks_with_spread(list(truth.index), use_measured=False)
    y = truth.to_numpy(dtype=float)
    rel = np.abs(pred - y) / y
    kinds = np.array([k.partition(":")[0] for k in truth.index])
    return {"heldout": int(len(y)), "samples": len(predictor.measured_),
            "mape": float(rel.mean()), "within_10pct": float(np.mean(rel <= 0.10)),
            "within_5pct": float(np.mean(rel <= 0.05)),
            "by_kind": {str(k): {"n": int((kinds == k).sum()), "mape": float(rel[kinds == k].mean())}
                        for k in sorted(set(kinds))}}
