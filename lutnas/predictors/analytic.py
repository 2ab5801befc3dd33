"""Analytic latency predictor (AutoViT's idea): MACs, bytes moved and parallelism against a few
device constants fitted by least squares.

A block costs a fixed per-call overhead, a launch cost per operator, and the larger of its compute
time (MACs over peak compute, scaled by how well its widths fill the SIMD lanes and by a per-kind
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

from lutnas.errors import PredictorError
from lutnas.predictors.base import check_fitted
from lutnas.predictors.blocksum import BlockSumPredictor
from lutnas.predictors.correction import Correction
from lutnas.predictors.features import (
    DEFAULT_SIMD_LANES,
    analytic_features,
    lane_utilisation,
    measured_latencies,
)
from lutnas.space import BlockSpec, SearchSpace, SubnetConfig, as_specs, kind_fields

SMOOTH_MAX_P = 4.0
# Pull of the per-kind efficiencies towards 1 (log space): with few blocks of a kind the fit would
# otherwise trade them freely against peak compute.
EFFICIENCY_PRIOR = 0.3
# How far (natural log) a fitted constant may move from its starting estimate.
LOG_BOUND = 25.0
BOUNDS = ("overhead", "compute", "memory")
CONSTANTS = ("peak_macs_per_ms", "bandwidth_bytes_per_ms", "launch_ms_per_op", "call_ms")


def _terms(specs: Sequence[BlockSpec], lanes: int, threads: int) -> dict[str, np.ndarray]:
    feats = [analytic_features(s) for s in specs]
    macs = np.array([f["macs"] for f in feats])
    moved = np.array([f["bytes_read"] + f["bytes_written"] for f in feats])
    ops = np.array([f["num_ops"] for f in feats])
    work = np.array([f["parallel_work"] for f in feats])
    utilisation = np.array([lane_utilisation(int(w), lanes * max(1, threads)) for w in work])
    return {"macs": macs, "bytes": moved, "ops": ops, "utilisation": utilisation}


def threads_of(source: Any) -> int:
    """The thread count of a table's settings (1 for data without settings)."""
    settings = getattr(source, "settings", None)
    if isinstance(settings, dict) and settings.get("threads"):
        return int(settings["threads"])
    return 1


class AnalyticPredictor(BlockSumPredictor):
    """Roofline-style block latency with fitted device constants (peak MAC/ms, bytes/ms, launch ms).

    `threads=None` takes the thread count from the table it is fitted on (`threads_`).
    """

    name = "analytic"
    fitted_attributes = ("constants_",)

    def __init__(self, space: SearchSpace | None = None, simd_lanes: int = DEFAULT_SIMD_LANES,
                 threads: int | None = None) -> None:
        super().__init__(space)
        self.simd_lanes = simd_lanes
        self.threads = threads

    # -------------------------------------------------------------- fitting
    def fit(self, table_or_frame: Any) -> AnalyticPredictor:
        """Fit the device constants on the measured blocks of a table, frame or {key: ms} mapping;
        PredictorError with fewer than 3 blocks."""
        latencies = measured_latencies(table_or_frame)
        if len(latencies) < 3:
            raise PredictorError(f"the analytic predictor needs at least 3 measured blocks, got "
                                 f"{len(latencies)}; profile more blocks")
        threads = self.threads if self.threads is not None else threads_of(table_or_frame)
        return self.fit_specs(as_specs(latencies.index), latencies.to_numpy(dtype=float), threads)

    def fit_specs(self, specs: Sequence[BlockSpec], latency_ms: np.ndarray,
                  threads: int | None = None) -> AnalyticPredictor:
        """Fit on blocks and their latencies (ms) directly."""
        from scipy.optimize import least_squares, nnls  # fitting only: ~0.6 s to import

        self.threads_ = int(threads if threads is not None else self.threads or 1)
        t = _terms(specs, self.simd_lanes, self.threads_)
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
            pred = _model(theta[:4], np.exp(theta[4:])[kind_index], t)[0]
            return np.concatenate([np.log(pred) - np.log(y), EFFICIENCY_PRIOR * theta[4:]])

        # Bounded in log space (e^±25 around the start): a constant the data does not pin (a
        # bandwidth no block is short of) otherwise drifts until exp() overflows to inf, and the
        # predictor file (strict JSON) cannot be written (seen once in CI on a noisy host).
        theta = least_squares(residuals, x0, method="trf", loss="soft_l1", f_scale=0.3,
                              bounds=(x0 - LOG_BOUND, x0 + LOG_BOUND)).x
        self.constants_ = {name: float(np.exp(v)) for name, v in zip(CONSTANTS, theta[:4])}
        self.efficiency_ = {k: float(np.exp(v)) for k, v in zip(kinds, theta[4:])}
        log_err = np.log(_model(theta[:4], np.exp(theta[4:])[kind_index], t)[0]) - np.log(y)
        self.sigma_ = {"*": float(np.sqrt(np.mean(log_err ** 2)))}
        for i, kind in enumerate(kinds):
            mine = log_err[kind_index == i]
            if mine.size >= 3:
                self.sigma_[kind] = float(np.sqrt(np.mean(mine ** 2)))
        self.n_fitted_ = int(len(y))
        self.correction_ = Correction()
        return self

    # -------------------------------------------------------------- prediction
    @property
    def _threads(self) -> int:
        return int(getattr(self, "threads_", None) or self.threads or 1)

    def _log_constants(self) -> np.ndarray:
        return np.log([self.constants_[name] for name in CONSTANTS])

    def _efficiency(self, specs: Sequence[BlockSpec]) -> np.ndarray:
        # A kind never measured gets the geometric mean of the others (no better guess exists).
        default = float(np.exp(np.mean(np.log(list(self.efficiency_.values())))))
        return np.array([self.efficiency_.get(s.kind, default) for s in specs])

    def _predict_blocks(self, specs: list[BlockSpec], use_measured: bool) -> tuple[np.ndarray, np.ndarray]:
        t = _terms(specs, self.simd_lanes, self._threads)
        ms = _model(self._log_constants(), self._efficiency(specs), t)[0]
        sigma = np.array([self.sigma_.get(s.kind, self.sigma_["*"]) for s in specs])
        return ms, ms * sigma

    def bounds(self, specs: Sequence[BlockSpec | str]) -> pd.DataFrame:
        """Which bound each block hits, with the three terms in ms."""
        check_fitted(self)
        specs = as_specs(specs)
        t = _terms(specs, self.simd_lanes, self._threads)
        total, compute, memory, overhead = _model(self._log_constants(), self._efficiency(specs), t)
        terms = np.column_stack([overhead, compute, memory])
        return pd.DataFrame({"key": [s.key for s in specs], "kind": [s.kind for s in specs],
                             "ms": total, "overhead_ms": overhead, "compute_ms": compute,
                             "memory_ms": memory,
                             "bound": [BOUNDS[i] for i in terms.argmax(axis=1)]})

    def explain(self, config: SubnetConfig) -> pd.DataFrame:
        frame = self.bounds(self._require_space().blocks_of(config))
        frame["spread_ms"] = self.predict_blocks(list(frame["key"]), return_spread=True)[1]
        return frame

    # -------------------------------------------------------------- state (serialize.py)
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self)
        header = {"simd_lanes": self.simd_lanes, "threads": self._threads,
                  "constants": self.constants_, "efficiency": self.efficiency_, "sigma": self.sigma_,
                  "correction": self._correction_state(), "n_fitted": self.n_fitted_}
        return header, {}

    @classmethod
    def from_state(cls, header: dict[str, Any], arrays: dict[str, np.ndarray],
                   space: SearchSpace | None = None) -> AnalyticPredictor:
        predictor = cls(space, simd_lanes=int(header["simd_lanes"]), threads=int(header["threads"]))
        predictor.threads_ = int(header["threads"])
        predictor.constants_ = {k: float(header["constants"][k]) for k in CONSTANTS}
        predictor.efficiency_ = {str(k): float(v) for k, v in header["efficiency"].items()
                                 if k in kind_fields()}
        predictor.sigma_ = {str(k): float(v) for k, v in header["sigma"].items()}
        predictor._load_correction(header)
        predictor.n_fitted_ = int(header["n_fitted"])
        if not predictor.efficiency_ or "*" not in predictor.sigma_:
            raise PredictorError("analytic predictor file lacks fitted constants; refit it")
        return predictor


def _model(log_constants: np.ndarray, efficiency: np.ndarray,
           t: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(total, compute, memory, overhead) ms per block."""
    peak, bandwidth, launch, call = np.exp(log_constants)
    compute = t["macs"] / (peak * efficiency * t["utilisation"])
    memory = t["bytes"] / bandwidth
    overhead = call + launch * t["ops"]
    p = SMOOTH_MAX_P
    body = (compute ** p + memory ** p) ** (1.0 / p)
    return overhead + body, compute, memory, overhead
