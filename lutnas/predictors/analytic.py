"""Analytic latency predictor (AutoViT's idea): FLOPs, bytes moved and parallelism against a few
device constants fitted by least squares.

A block costs a fixed per-call overhead, a launch cost per operator, and the larger of its compute
time (FLOPs over peak compute, scaled by how well its widths fill the SIMD lanes and by a per-kind
efficiency) and its memory time (bytes over peak bandwidth). The max is smoothed (a p-norm) so the
fit is differentiable; which term wins is the block's bound. Eight or so constants describe a
device, which is why this is the predictor with the fewest measurements and a feature source for
the learned one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares, nnls

from lutnas.errors import PredictorError
from lutnas.predictors.base import Predictor, register_predictor
from lutnas.predictors.features import (
    DEFAULT_SIMD_LANES,
    analytic_features,
    as_specs,
    lane_utilisation,
    measured_latencies,
)
from lutnas.space import BlockSpec, SearchSpace, SubnetConfig, kind_fields

SMOOTH_MAX_P = 4.0
# Pull of the per-kind efficiencies towards 1 (log space): with few blocks of a kind the fit would
# otherwise trade them freely against peak compute.
EFFICIENCY_PRIOR = 0.3
BOUNDS = ("overhead", "compute", "memory")


class BlockSumPredictor(Predictor):
    """A subnet's latency = correction(sum of its blocks' predicted latencies), like the LUT.

    Subclasses price blocks (`predict_blocks_with_spread`); this class sums them over
    `space.blocks_of(config)` and fits the whole-model overhead (`fit(configs, measured_ms)`:
    scale and intercept by least squares, as the LUT's correction).
    """

    name = "blocksum"

    def __init__(self, space: SearchSpace | None = None) -> None:
        self.space = space
        self.correction_: dict[str, float] = {"scale": 1.0, "intercept": 0.0}

    # -------------------------------------------------------------- to be provided by subclasses
    def predict_blocks_with_spread(self, specs: Sequence[BlockSpec | str]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def fit_blocks(self, table_or_frame: Any) -> "BlockSumPredictor":
        raise NotImplementedError

    # -------------------------------------------------------------- the common face
    def fit(self, configs: Any, measured_ms: Sequence[float] | None = None) -> "BlockSumPredictor":
        """`fit(table_or_frame)` learns blocks; `fit(configs, measured_ms)` fits the overhead."""
        if measured_ms is None:
            return self.fit_blocks(configs)
        return self.fit_overhead(configs, measured_ms)

    def predict_blocks(self, specs: Sequence[BlockSpec | str]) -> np.ndarray:
        return self.predict_blocks_with_spread(specs)[0]

    def block_sums(self, configs: Sequence[SubnetConfig]) -> tuple[np.ndarray, np.ndarray]:
        """Uncorrected sum per config and its spread (root sum of squares of block spreads)."""
        space = self._require_space()
        per_config = [[s.key for s in space.blocks_of(c)] for c in configs]
        unique = sorted({k for keys in per_config for k in keys})
        ms, spread = self.predict_blocks_with_spread(unique)
        lookup = dict(zip(unique, ms))
        var = dict(zip(unique, spread ** 2))
        sums = np.array([sum(lookup[k] for k in keys) for keys in per_config], dtype=float)
        spreads = np.sqrt([sum(var[k] for k in keys) for keys in per_config])
        return sums, np.asarray(spreads, dtype=float)

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        sums, _ = self.block_sums(configs)
        return self.correction_["scale"] * sums + self.correction_["intercept"]

    def fit_overhead(self, configs: Sequence[SubnetConfig],
                     measured_ms: Sequence[float]) -> "BlockSumPredictor":
        measured = np.asarray(measured_ms, dtype=float)
        if len(configs) != len(measured) or len(measured) == 0:
            raise PredictorError(f"fit needs one measured latency per config, got {len(configs)} "
                                 f"configs and {len(measured)} latencies")
        sums, _ = self.block_sums(configs)
        if len(measured) == 1:
            self.correction_ = {"scale": float(measured[0] / sums[0]), "intercept": 0.0}
            return self
        design = np.column_stack([sums, np.ones_like(sums)])
        # Relative residuals: a 1 ms error on a 5 ms net matters more than on a 50 ms one.
        weights = 1.0 / measured
        (scale, intercept), *_ = np.linalg.lstsq(design * weights[:, None], measured * weights,
                                                 rcond=None)
        if scale <= 0:
            scale, intercept = float(np.median(measured / sums)), 0.0
        self.correction_ = {"scale": float(scale), "intercept": float(intercept)}
        return self

    def explain(self, config: SubnetConfig) -> pd.DataFrame:
        """Per-block breakdown of one prediction, in execution order."""
        specs = self._require_space().blocks_of(config)
        ms, spread = self.predict_blocks_with_spread(specs)
        return pd.DataFrame({"key": [s.key for s in specs], "kind": [s.kind for s in specs],
                             "ms": ms, "spread_ms": spread})

    def _require_space(self) -> SearchSpace:
        if self.space is None:
            raise PredictorError(f"{self.name} predictor has no search space; pass space= to price "
                                 f"subnet configs (blocks need none)")
        return self.space


# ------------------------------------------------------------------------------------------------

def _terms(specs: Sequence[BlockSpec], lanes: int, threads: int) -> dict[str, np.ndarray]:
    feats = [analytic_features(s) for s in specs]
    macs = np.array([f["macs"] for f in feats])
    moved = np.array([f["bytes_read"] + f["bytes_written"] for f in feats])
    ops = np.array([f["num_ops"] for f in feats])
    work = np.array([f["parallel_work"] for f in feats])
    utilisation = np.array([lane_utilisation(int(w), lanes * max(1, threads)) for w in work])
    return {"macs": macs, "bytes": moved, "ops": ops, "utilisation": utilisation}


class AnalyticPredictor(BlockSumPredictor):
    """Roofline-style block latency with fitted device constants (peak FLOP/ms, bytes/ms, launch ms)."""

    name = "analytic"

    def __init__(self, space: SearchSpace | None = None, simd_lanes: int = DEFAULT_SIMD_LANES,
                 threads: int = 1) -> None:
        super().__init__(space)
        self.simd_lanes = simd_lanes
        self.threads = threads

    # -------------------------------------------------------------- fitting
    def fit_blocks(self, table_or_frame: Any) -> "AnalyticPredictor":
        latencies = measured_latencies(table_or_frame)
        if len(latencies) < 3:
            raise PredictorError(f"the analytic predictor needs at least 3 measured blocks, got "
                                 f"{len(latencies)}; profile more blocks")
        settings = getattr(table_or_frame, "settings", None)
        if isinstance(settings, dict) and settings.get("threads"):
            self.threads = int(settings["threads"])
        specs = as_specs(latencies.index)
        return self.fit_specs(specs, latencies.to_numpy(dtype=float))

    def fit_specs(self, specs: Sequence[BlockSpec], latency_ms: np.ndarray) -> "AnalyticPredictor":
        t = _terms(specs, self.simd_lanes, self.threads)
        y = np.asarray(latency_ms, dtype=float)
        kinds = sorted({s.kind for s in specs})
        kind_index = np.array([kinds.index(s.kind) for s in specs])
        # Start from a non-negative linear fit (compute + memory + launch + call, all summed): it
        # lands every constant within a factor of a few, where the smooth-max fit converges.
        design = np.column_stack([t["macs"] / t["utilisation"], t["bytes"], t["ops"], np.ones_like(y)])
        coef, _ = nnls(design / y[:, None], np.ones_like(y))
        typical = np.median(y)
        inv_peak = coef[0] if coef[0] > 0 else np.median(y / (t["macs"] + 1)) * 0.5
        inv_bw = coef[1] if coef[1] > 0 else np.median(y / t["bytes"]) * 0.5
        launch = coef[2] if coef[2] > 0 else typical * 0.01
        call = coef[3] if coef[3] > 0 else typical * 0.01
        x0 = np.log(np.concatenate([[1 / max(inv_peak, 1e-12), 1 / max(inv_bw, 1e-12),
                                     max(launch, 1e-7), max(call, 1e-7)], np.ones(len(kinds))]))

        def residuals(theta: np.ndarray) -> np.ndarray:
            pred = self._model(theta[:4], np.exp(theta[4:])[kind_index], t)[0]
            return np.concatenate([np.log(pred) - np.log(y), EFFICIENCY_PRIOR * theta[4:]])

        result = least_squares(residuals, x0, method="trf", loss="soft_l1", f_scale=0.3)
        theta = result.x
        self.constants_ = {"peak_macs_per_ms": float(np.exp(theta[0])),
                           "bandwidth_bytes_per_ms": float(np.exp(theta[1])),
                           "launch_ms_per_op": float(np.exp(theta[2])),
                           "call_ms": float(np.exp(theta[3]))}
        self.efficiency_ = {k: float(np.exp(v)) for k, v in zip(kinds, theta[4:])}
        fitted = self._model(theta[:4], np.exp(theta[4:])[kind_index], t)[0]
        log_err = np.log(fitted) - np.log(y)
        self.sigma_ = {"*": float(np.sqrt(np.mean(log_err ** 2)))}
        for i, kind in enumerate(kinds):
            mine = log_err[kind_index == i]
            if mine.size >= 3:
                self.sigma_[kind] = float(np.sqrt(np.mean(mine ** 2)))
        self.n_fitted_ = int(len(y))
        return self

    @staticmethod
    def _model(log_constants: np.ndarray, efficiency: np.ndarray,
               t: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        peak, bandwidth, launch, call = np.exp(log_constants)
        compute = t["macs"] / (peak * efficiency * t["utilisation"])
        memory = t["bytes"] / bandwidth
        overhead = call + launch * t["ops"]
        p = SMOOTH_MAX_P
        body = (compute ** p + memory ** p) ** (1.0 / p)
        return overhead + body, compute, memory, overhead

    # -------------------------------------------------------------- prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "constants_"):
            raise PredictorError("the analytic predictor is not fitted; call fit(table) first")

    def _log_constants(self) -> np.ndarray:
        c = self.constants_
        return np.log([c["peak_macs_per_ms"], c["bandwidth_bytes_per_ms"], c["launch_ms_per_op"],
                       c["call_ms"]])

    def _efficiency(self, specs: Sequence[BlockSpec]) -> np.ndarray:
        # A kind never measured gets the geometric mean of the others (no better guess exists).
        default = float(np.exp(np.mean(np.log(list(self.efficiency_.values())))))
        return np.array([self.efficiency_.get(s.kind, default) for s in specs])

    def predict_blocks_with_spread(self, specs: Sequence[BlockSpec | str]) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        specs = as_specs(specs)
        if not specs:
            return np.zeros(0), np.zeros(0)
        t = _terms(specs, self.simd_lanes, self.threads)
        ms = self._model(self._log_constants(), self._efficiency(specs), t)[0]
        sigma = np.array([self.sigma_.get(s.kind, self.sigma_["*"]) for s in specs])
        return ms, ms * sigma

    def bounds(self, specs: Sequence[BlockSpec | str]) -> pd.DataFrame:
        """Which bound each block hits, with the three terms in ms."""
        self._check_fitted()
        specs = as_specs(specs)
        t = _terms(specs, self.simd_lanes, self.threads)
        total, compute, memory, overhead = self._model(self._log_constants(), self._efficiency(specs), t)
        terms = np.column_stack([overhead, compute, memory])
        return pd.DataFrame({"key": [s.key for s in specs], "kind": [s.kind for s in specs],
                             "ms": total, "overhead_ms": overhead, "compute_ms": compute,
                             "memory_ms": memory,
                             "bound": [BOUNDS[i] for i in terms.argmax(axis=1)]})

    def explain(self, config: SubnetConfig) -> pd.DataFrame:
        frame = self.bounds(self._require_space().blocks_of(config))
        frame["spread_ms"] = self.predict_blocks_with_spread(list(frame["key"]))[1]
        return frame

    # -------------------------------------------------------------- state (serialize.py)
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        header = {"simd_lanes": self.simd_lanes, "threads": self.threads,
                  "constants": self.constants_, "efficiency": self.efficiency_, "sigma": self.sigma_,
                  "correction": self.correction_, "n_fitted": self.n_fitted_}
        return header, {}

    @classmethod
    def from_state(cls, header: dict[str, Any], arrays: dict[str, np.ndarray],
                   space: SearchSpace | None = None) -> "AnalyticPredictor":
        predictor = cls(space, simd_lanes=int(header["simd_lanes"]), threads=int(header["threads"]))
        predictor.constants_ = {k: float(header["constants"][k]) for k in
                                ("peak_macs_per_ms", "bandwidth_bytes_per_ms", "launch_ms_per_op",
                                 "call_ms")}
        predictor.efficiency_ = {str(k): float(v) for k, v in header["efficiency"].items()
                                 if k in kind_fields()}
        predictor.sigma_ = {str(k): float(v) for k, v in header["sigma"].items()}
        predictor.correction_ = {"scale": float(header["correction"]["scale"]),
                                 "intercept": float(header["correction"]["intercept"])}
        predictor.n_fitted_ = int(header["n_fitted"])
        if not predictor.efficiency_ or "*" not in predictor.sigma_:
            raise PredictorError("analytic predictor file lacks fitted constants; refit it")
        return predictor


def build_from_context(cls: type[BlockSumPredictor], context: Any) -> BlockSumPredictor | None:
    """Registry builder shared by block-sum predictors: fit on the table's blocks, then on its
    calibration subnets when it has them; None when the table cannot support a fit."""
    try:
        predictor = cls(context.space).fit_blocks(context.table)
    except PredictorError:
        return None
    if len(context.calibration_configs):
        predictor.fit_overhead(context.calibration_configs, context.calibration_ms)
    return predictor


register_predictor("analytic", lambda context: build_from_context(AnalyticPredictor, context))
