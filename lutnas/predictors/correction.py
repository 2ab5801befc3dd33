"""The whole-model correction of every block-sum predictor (LUT, learned, analytic, transfer).

A subnet's blocks were measured one at a time, so their sum misses what the whole model does
differently. The correction models the causes, each with a physical sign:

    whole_ms = scale * (block_sum_ms - blocks * invoke_ms) + weight_ms_per_mib * weight_mib
               + invoke_ms + overhead_ms

- `invoke_ms` (>= 0): the per-invoke cost (interpreter call, input copy) that each isolated block's
  figure includes and the whole model pays once. Best measured (an empty model, measured the same
  way) and passed in; otherwise fitted when the data can carry it.
- `scale` (in [0.5, 2]): how the blocks' compute changes inside the whole model (caches, layouts).
  A scale outside this range is not physics but a machine state (e.g. calibration measured while
  the host was loaded), so the fit stops at the bound and says so.
- `overhead_ms` (>= 0): whole-model cost the blocks lack (layout conversions at the boundaries).
- `weight_ms_per_mib` (in [0, WEIGHT_MS_PER_MIB_MAX]), only when the subnets' weight MiB are given:
  a whole model larger than the last-level cache streams every block's weights from DRAM on each
  invoke, while an isolated block, run again and again, finds its own weights in L3 (or L2). The
  extra time per MiB of weights is 1/DRAM - 1/L3 bandwidth; portable (phones included: weight bytes
  are known without the device).

What the scale carries depends on how the blocks were timed (measured on `elasticvit` 128 px,
1 thread, 3 subnets, benchmarks/results/lut_gap.json):

- warm blocks (run back to back: their weights stay in L2, which they never do inside the whole
  model; benchmark_model on a phone times this way): whole / block sum 1.195-1.297 (onnxruntime),
  1.119-1.310 (LiteRT). The spread across subnets (+-4 %, +-8 %) is what one scale cannot fit.
- cold-L2 blocks (`RunSettings.cache = "cold-l2"`: the host worker evicts L2 before every timed
  run, blocks and whole subnets alike): whole / block sum 1.059-1.073 (onnxruntime), 1.068-1.195
  (LiteRT). The cause of the warm error is removed at the measurement; the scale keeps the rest.
- cold-LLC blocks (`cache = "cold-llc"`: every cache flushed before each timed run and, paced,
  before each pace invoke): each block then pays a cold interpreter call and fetches its input and
  weights from DRAM, which a block inside the whole model does not, so the block sums over-count:
  raw LUT +96 % (onnxruntime) and +13 % (LiteRT int8) on the proofs' 50 held-out subnets
  (benchmarks/results/predictor_accuracy_elasticvit-*-coldllc-*paced.json). The empty model's
  cold invoke is not what a block pays there, so the invoke is fitted, not measured
  (profiler/subnets.INVOKE_FROM_EMPTY_MODEL): 0.26 ms and scale 0.68 (onnxruntime), 0.19 ms and
  scale 1.02 (int8). The state is chosen for the pace model (its time no longer depends on the
  model before it), not for the blocks; the correction carries the difference.
- a per-byte cache term (c x min(block bytes, L2)) was tried instead of cold timing and rejected:
  per block it explains little of the chained - warm difference (R^2 -0.2..0.31 by subnet), and
  per subnet it left -2.6..+5.1 % (onnxruntime), so it is not a term here.

Measured in the proof (benchmarks/results/predictor_accuracy_elasticvit-onnxruntime-t1-r128-coldl2
.json, quiet host, 10 calibration and 50 held-out subnets): in fresh worker processes the cold-L2
block sums were still 1.20-1.49x under whole subnets, a ratio that grows with the subnet's weights
(27-100 MiB, beyond the 32 MiB L3; correlation 0.53). Fitted on the 10, scale + weight term (+
overhead) predicts the 50 held-out with MAPE 3.2 % (74 % within +-5 %) where the scale alone gives
4.6 % (62 %); fitted on the 50 themselves the two-term ceiling is MAPE 2.8 % (84 %). onnxruntime's
per-node profile (lut_gap.json) puts the whole model's extra time in Gemm/Conv (+1.5-3.1 ms), the
weight-heavy kernels.

Constants: WEIGHT_MS_PER_MIB_MAX = 1 ms/MiB (1 GB/s: slower than any DRAM this runs on, so a
larger fit is a machine state); SCALE_BOUNDS (0.5, 2) hold every ratio above with margin and
exclude the -1.83 fitted on a loaded host (issue 19); POINTS_PER_TERM = 3 is issue 19's "fewer than
~3 points per parameter fits noise"; _SLACK, _GRID and _LOO_FLOOR are numerical (float tolerance,
invoke grid before refinement, and the leave-one-out gain below which two fits tie: 1e-10 in squared
relative error, a 0.001 % RMS, so float round-off on data both fit exactly never adds a term).

Free parameters are added in that order of robustness (scale, overhead, invoke) and never more than
one per three calibration subnets: two points give a scale only, nine all three. The weight term,
when weight MiB are given, is a candidate second after the scale, but it enters only where it has a
physical reason the data show: the fit is run with it and without it (then the next term takes its
place), each subnet predicted from the others (leave-one-out), and the term is kept only when its
mean squared relative leave-one-out error is lower by more than _LOO_FLOOR. Subnets whose weights fit in the
last-level cache (tiny spaces, evmini) gain nothing from it, so it stays out there. Checked on stored
measurements: fitted on each of 5 disjoint groups of 10 of the proof's 50 elasticvit subnets it is
taken every time (MAPE on the other 40: 2.8-3.8 % against 3.9-5.1 % without it); on
predictor_accuracy_tiny-tflite-t1.json (0.6-1.4 MiB of weights, 4 groups of 10) it is left out every
time. The weight MiB are `lutnas.space.complexity.weight_mib` (parameters x bytes at the table's
precision); `LutPredictor.calibrate` and `BlockSumPredictor.calibrate` (learned, analytic,
transfer) pass them, and their predict paths apply them. The fit minimises
relative residuals (the accuracy that matters is the +-5 % share), under the bounds, exactly: every
active set of the box is tried (at most 27). Its uncertainty is reported as the standard errors of
the fitted terms and the spread of relative residuals.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lutnas.errors import PredictorError

SCALE_BOUNDS = (0.5, 2.0)
POINTS_PER_TERM = 3  # fewer calibration subnets per free parameter would fit their noise
MIN_SUBNETS = 2
WEIGHT_MS_PER_MIB_MAX = 1.0
_BOUNDS = {"scale": SCALE_BOUNDS, "overhead_ms": (0.0, math.inf), "invoke_ms": (0.0, math.inf),
           "weight_ms_per_mib": (0.0, WEIGHT_MS_PER_MIB_MAX)}
_SLACK = 1e-9  # relative float slack when checking a fitted value against its bound
_GRID = 64  # invoke values tried before the golden-section refinement (when it is fitted)
_LOO_FLOOR = 1e-10  # leave-one-out gain (squared relative error) below which two fits tie


def _nan_to_none(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _none_to_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class Correction:
    """`scale * (sum - blocks * invoke_ms) + weight_ms_per_mib * weight MiB + invoke_ms + overhead_ms`;
    the default is the identity.

    Construction validates the physical bounds (PredictorError naming the parameter). `terms` are the
    parameters that were fitted, `at_bound` those the fit pinned to a bound, `n` the number of
    subnets, `rel_sigma` the residual spread of relative errors (NaN without spare data points),
    `std_errors` the standard error of each fitted term not at a bound, `subnets` their keys.
    """

    scale: float = 1.0
    overhead_ms: float = 0.0
    invoke_ms: float = 0.0
    invoke_measured: bool = False
    terms: tuple[str, ...] = ()
    at_bound: tuple[str, ...] = ()
    n: int = 0
    rmse_ms: float = float("nan")
    rel_sigma: float = float("nan")
    std_errors: Mapping[str, float] = field(default_factory=dict)
    covariance: tuple[tuple[float, ...], ...] = ()
    subnets: tuple[str, ...] = ()
    weight_ms_per_mib: float = 0.0

    def __post_init__(self) -> None:
        for name, (low, high) in _BOUNDS.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and low * (1 - _SLACK) - _SLACK <= value <= high * (1 + _SLACK)):
                raise PredictorError(
                    f"whole-model correction {name}={value:g} is outside its physical range "
                    f"[{low:g}, {high:g}]; refit it from subnets measured on a quiet device "
                    f"(build-table --calibrate K)")

    # ------------------------------------------------------------------ derived
    @property
    def fitted(self) -> bool:
        """True once fitted on measured subnets (the default correction is the identity)."""
        return self.n > 0

    @property
    def per_block_ms(self) -> float:
        """The coefficient of the block count in the expanded form (<= 0: over-counted invokes)."""
        return -self.scale * self.invoke_ms if self.invoke_ms else 0.0

    @property
    def intercept_ms(self) -> float:
        """The constant of the expanded form `scale * sum + per_block_ms * blocks + intercept_ms`."""
        return self.invoke_ms + self.overhead_ms

    def apply(self, block_sum_ms: Sequence[float] | np.ndarray,
              blocks: Sequence[float] | np.ndarray | None = None,
              weight_mib: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
        """Corrected whole-model ms per subnet from its block sum (ms), its number of blocks and,
        for a correction with a weight term, its weights (MiB). PredictorError when one is missing."""
        raw = np.asarray(block_sum_ms, dtype=float)
        if self.weight_ms_per_mib:
            if weight_mib is None:
                raise PredictorError("this correction charges each MiB of weights streamed from DRAM; "
                                     "pass the weight MiB of each subnet")
            weights = self.weight_ms_per_mib * np.asarray(weight_mib, dtype=float)
            return Correction(**{**self.__dict__, "weight_ms_per_mib": 0.0}).apply(raw, blocks) + weights
        if self.invoke_ms == 0.0:
            return self.scale * raw + self.overhead_ms
        if blocks is None:
            raise PredictorError("this correction removes a per-invoke overhead per block; pass the "
                                 "number of blocks of each subnet")
        count = np.asarray(blocks, dtype=float)
        return self.scale * (raw - count * self.invoke_ms) + self.invoke_ms + self.overhead_ms

    def std_ms(self, block_sum_ms: Sequence[float] | np.ndarray,
               blocks: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
        """Standard error (ms) of `apply` from the fitted terms' uncertainty; NaN when unknown."""
        raw = np.asarray(block_sum_ms, dtype=float)
        free = [t for t in self.terms if t not in self.at_bound]
        if not free or len(self.covariance) != len(free):
            return np.full(raw.shape, np.nan)
        count = np.zeros_like(raw) if blocks is None else np.asarray(blocks, dtype=float)
        if "weight_ms_per_mib" in free:
            return np.full(raw.shape, np.nan)  # needs the weight MiB: reported as unknown
        jac = _jacobian(free, self.scale, self.invoke_ms, raw, count)
        cov = np.asarray(self.covariance, dtype=float)
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", jac, cov, jac), 0.0))

    def describe(self) -> str:
        """One line: the expanded form and where it came from."""
        text = f"{self.scale:.4f} x block sum"
        if self.invoke_ms:
            text += f" {self.per_block_ms:+.4f} ms x blocks"
        if self.weight_ms_per_mib:
            text += f" {self.weight_ms_per_mib:+.4f} ms x weight MiB"
        text += f" {self.intercept_ms:+.4f} ms"
        if not self.fitted:
            return text
        source = f"{len(self.terms)} term(s) fitted on {self.n} subnets"
        if self.invoke_measured:
            source += f", invoke {self.invoke_ms:.4f} ms measured"
        if math.isfinite(self.rel_sigma):
            source += f", residual ±{100 * self.rel_sigma:.1f} %"
        if self.at_bound:
            source += f", at its bound: {', '.join(self.at_bound)}"
        return f"{text} ({source})"

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; also carries the expanded form's `intercept` and `per_block_ms`."""
        return {"scale": self.scale, "overhead_ms": self.overhead_ms, "invoke_ms": self.invoke_ms,
                "invoke_measured": self.invoke_measured, "terms": list(self.terms),
                "at_bound": list(self.at_bound), "n": self.n, "rmse_ms": _nan_to_none(self.rmse_ms),
                "rel_sigma": _nan_to_none(self.rel_sigma),
                "std_errors": {k: _nan_to_none(v) for k, v in self.std_errors.items()},
                "covariance": [list(row) for row in self.covariance], "subnets": list(self.subnets),
                "intercept": self.intercept_ms, "per_block_ms": self.per_block_ms,
                "weight_ms_per_mib": self.weight_ms_per_mib}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Correction":
        """Inverse of `to_dict`; also reads the older {scale, intercept, per_block_ms} form. Keys it
        does not know (a table's calibration record: seed, configs, measured_ms) are ignored."""
        try:
            scale = float(data["scale"])
            if "overhead_ms" in data:
                invoke, overhead = float(data.get("invoke_ms", 0.0)), float(data["overhead_ms"])
            else:  # the expanded form: per_block_ms = -scale * invoke, intercept = invoke + overhead
                invoke = -float(data.get("per_block_ms") or 0.0) / scale if scale else 0.0
                overhead = float(data.get("intercept") or 0.0) - invoke
            return cls(scale, overhead, invoke, bool(data.get("invoke_measured", False)),
                       tuple(str(t) for t in data.get("terms", ())),
                       tuple(str(t) for t in data.get("at_bound", ())), int(data.get("n", 0) or 0),
                       _none_to_nan(data.get("rmse_ms")), _none_to_nan(data.get("rel_sigma")),
                       {str(k): _none_to_nan(v) for k, v in (data.get("std_errors") or {}).items()},
                       tuple(tuple(float(v) for v in row) for row in data.get("covariance") or ()),
                       tuple(str(k) for k in data.get("subnets") or ()),
                       float(data.get("weight_ms_per_mib") or 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise PredictorError(f"whole-model correction record is malformed ({type(exc).__name__}: "
                                 f"{exc}); refit it (build-table --calibrate K)") from None

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, block_sum_ms: Sequence[float] | np.ndarray, measured_ms: Sequence[float] | np.ndarray,
            blocks: Sequence[float] | np.ndarray | None = None, invoke_ms: float | None = None,
            subnets: Sequence[str] = (),
            weight_mib: Sequence[float] | np.ndarray | None = None) -> "Correction":
        """Fit on subnets measured end to end: their block sums (ms), measured ms and block counts.

        `invoke_ms`, when given (an empty model measured like the blocks), is used as is and not
        fitted. `weight_mib` (each subnet's weights, MiB: `lutnas.space.complexity.weight_mib`) makes
        the weight term a candidate, second after the scale, kept only when it lowers the
        leave-one-out error (module docstring). Raises PredictorError for fewer than 2 usable
        subnets or identical block sums.
        """
        raw, measured = np.asarray(block_sum_ms, float), np.asarray(measured_ms, float)
        if raw.shape != measured.shape or raw.ndim != 1:
            raise PredictorError(f"a correction needs equal 1-D arrays, got {raw.shape} and "
                                 f"{measured.shape}")
        count = None if blocks is None else np.asarray(blocks, float)
        if count is not None and count.shape != raw.shape:
            raise PredictorError(f"{count.size} block counts for {raw.size} subnets")
        ok = np.isfinite(raw) & np.isfinite(measured) & (measured > 0)
        if count is not None:
            ok &= np.isfinite(count)
        weights = None if weight_mib is None else np.asarray(weight_mib, float)
        if weights is not None:
            if weights.shape != raw.shape:
                raise PredictorError(f"{weights.size} weight sizes for {raw.size} subnets")
            ok &= np.isfinite(weights)
        _check_data(raw[ok], invoke_ms, count)
        x, y = raw[ok], measured[ok]
        n_blocks = count[ok] if count is not None else np.zeros_like(x)
        w = weights[ok] if weights is not None else np.zeros_like(x)
        counted = n_blocks if count is not None else None
        terms = _terms_for(int(ok.sum()), counted, invoke_ms, w if weights is not None else None)
        if "weight_ms_per_mib" in terms:  # only where it predicts unseen subnets better
            without = _terms_for(int(ok.sum()), counted, invoke_ms, None)
            if (_loo_error(terms, x, y, n_blocks, invoke_ms or 0.0, w)
                    >= _loo_error(without, x, y, n_blocks, invoke_ms or 0.0, w) - _LOO_FLOOR):
                terms = without
        params = _solve(terms, x, y, n_blocks, invoke_ms or 0.0, w)
        keys = tuple(str(k) for k, good in zip(subnets, ok)) if len(subnets) == raw.size else ()
        return cls._with_uncertainty(terms, params, x, y, n_blocks, invoke_ms is not None, keys, w)

    @classmethod
    def _with_uncertainty(cls, terms: tuple[str, ...], params: dict[str, float], x: np.ndarray,
                          y: np.ndarray, n_blocks: np.ndarray, invoke_measured: bool,
                          subnets: tuple[str, ...], w: np.ndarray) -> "Correction":
        scale, invoke, per_mib = params["scale"], params["invoke_ms"], params["weight_ms_per_mib"]
        predicted = scale * (x - n_blocks * invoke) + per_mib * w + invoke + params["overhead_ms"]
        at_bound = tuple(t for t in terms if _at_bound(t, params[t]))
        free = [t for t in terms if t not in at_bound]
        relative = (y - predicted) / y
        dof = len(y) - len(free)
        rel_sigma = float(np.sqrt(np.sum(relative ** 2) / dof)) if dof > 0 else float("nan")
        std_errors: dict[str, float] = {}
        covariance: tuple[tuple[float, ...], ...] = ()
        if free and dof > 0:
            jac = _jacobian(free, scale, invoke, x, n_blocks, w) / y[:, None]
            cov = rel_sigma ** 2 * np.linalg.pinv(jac.T @ jac)
            if np.isfinite(cov).all():
                std_errors = {t: float(np.sqrt(max(cov[i, i], 0.0))) for i, t in enumerate(free)}
                covariance = tuple(tuple(float(v) for v in row) for row in cov)
        return cls(scale, params["overhead_ms"], invoke, invoke_measured, terms, at_bound, len(y),
                   float(np.sqrt(np.mean((y - predicted) ** 2))), rel_sigma, std_errors, covariance,
                   subnets, per_mib)


def _check_data(x: np.ndarray, invoke_ms: float | None, count: np.ndarray | None) -> None:
    if x.size < MIN_SUBNETS:
        raise PredictorError(f"a whole-model correction needs at least {MIN_SUBNETS} measured "
                             f"subnets, got {x.size}; use --calibrate 2 or more (6-10 is better)")
    if np.ptp(x) <= 1e-9 * max(1.0, float(np.abs(x).max())):
        raise PredictorError("the calibration subnets all have the same LUT sum (block sum); sample "
                             "more varied subnets (another --seed)")
    if invoke_ms is not None:
        if not (math.isfinite(invoke_ms) and invoke_ms >= 0):
            raise PredictorError(f"the measured per-invoke overhead must be >= 0 ms, got {invoke_ms}")
        if count is None and invoke_ms > 0:
            raise PredictorError("a measured per-invoke overhead needs each subnet's block count")


def _terms_for(n: int, count: np.ndarray | None, invoke_ms: float | None,
               weights: np.ndarray | None = None) -> tuple[str, ...]:
    """The free parameters `n` subnets can carry: one per POINTS_PER_TERM, at least a scale."""
    candidates = ["scale", "overhead_ms"]
    if weights is not None and np.ptp(weights) > 0:
        candidates.insert(1, "weight_ms_per_mib")
    if invoke_ms is None and count is not None and np.ptp(count) > 0:
        candidates.append("invoke_ms")  # identifiable only when block counts differ
    return tuple(candidates[:max(1, n // POINTS_PER_TERM)])


def _loo_error(terms: tuple[str, ...], x: np.ndarray, y: np.ndarray, n_blocks: np.ndarray,
               invoke_fixed: float, mib: np.ndarray) -> float:
    """Mean squared relative error of each subnet predicted by `terms` fitted on the others
    (leave-one-out): how well the fit carries to subnets it has not seen."""
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        p = _solve(terms, x[keep], y[keep], n_blocks[keep], invoke_fixed, mib[keep])
        predicted = (p["scale"] * (x[i] - n_blocks[i] * p["invoke_ms"]) + p["invoke_ms"]
                     + p["overhead_ms"] + p["weight_ms_per_mib"] * mib[i])
        errors.append(((y[i] - predicted) / y[i]) ** 2)
    return float(np.mean(errors))


def _at_bound(term: str, value: float) -> bool:
    low, high = _BOUNDS[term]
    return abs(value - low) <= _SLACK * max(1.0, abs(low)) or (
        math.isfinite(high) and abs(value - high) <= _SLACK * high)


def _jacobian(free: Sequence[str], scale: float, invoke: float, x: np.ndarray,
              n_blocks: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """d(prediction)/d(term) per subnet, one column per free term."""
    columns = {"scale": x - n_blocks * invoke, "overhead_ms": np.ones_like(x),
               "invoke_ms": 1.0 - scale * n_blocks,
               "weight_ms_per_mib": np.zeros_like(x) if w is None else w}
    return np.column_stack([columns[t] for t in free])


def _solve(terms: tuple[str, ...], x: np.ndarray, y: np.ndarray, n_blocks: np.ndarray,
           invoke_fixed: float, mib: np.ndarray) -> dict[str, float]:
    """Bounded weighted least squares of the correction's free `terms`; the others keep their
    neutral value (scale 1, overhead 0, weight term 0) or the measured invoke."""
    if "invoke_ms" not in terms:
        scale, overhead, per_mib, _ = _fit_at_invoke(terms, x, y, n_blocks, invoke_fixed, mib)
        return {"scale": scale, "overhead_ms": overhead, "invoke_ms": invoke_fixed,
                "weight_ms_per_mib": per_mib}
    # The model is bilinear in (scale, invoke). Its expanded form is linear: when the unconstrained
    # optimum maps back inside the bounds it is the answer; otherwise profile over invoke.
    w = 1.0 / y
    with_mib = "weight_ms_per_mib" in terms
    columns = [x, n_blocks, np.ones_like(x)] + ([mib] if with_mib else [])
    solution, *_ = np.linalg.lstsq(np.column_stack(columns) * w[:, None], y * w, rcond=None)
    a, b, c = solution[:3]
    invoke_max = float(np.min(x / np.maximum(n_blocks, 1.0)))  # the compute part stays >= 0
    if a > 0:
        invoke = -b / a
        candidate = {"scale": float(a), "invoke_ms": float(invoke), "overhead_ms": float(c - invoke),
                     "weight_ms_per_mib": float(solution[3]) if with_mib else 0.0}
        if all(_inside(t, v) for t, v in candidate.items()) and invoke <= invoke_max:
            return candidate
    invoke = _profile_invoke(terms, x, y, n_blocks, invoke_max, mib)
    scale, overhead, per_mib, _ = _fit_at_invoke(terms, x, y, n_blocks, invoke, mib)
    return {"scale": scale, "overhead_ms": overhead, "invoke_ms": invoke, "weight_ms_per_mib": per_mib}


def _inside(term: str, value: float) -> bool:
    low, high = _BOUNDS[term]
    return low <= value <= high


def _fit_at_invoke(terms: tuple[str, ...], x: np.ndarray, y: np.ndarray, n_blocks: np.ndarray,
                   invoke: float, mib: np.ndarray) -> tuple[float, float, float, float]:
    """(scale, overhead, weight ms per MiB, weighted SSR) with invoke fixed: a box-constrained
    linear problem."""
    compute, target = x - n_blocks * invoke, y - invoke
    w = 1.0 / y
    free = [t for t in ("scale", "overhead_ms", "weight_ms_per_mib") if t in terms]
    fixed = {"scale": 1.0, "overhead_ms": 0.0, "weight_ms_per_mib": 0.0}
    columns = {"scale": compute, "overhead_ms": np.ones_like(x), "weight_ms_per_mib": mib}
    rest = target - sum(fixed[t] * columns[t] for t in fixed if t not in free)
    design = np.column_stack([columns[t] for t in free]) * w[:, None]
    theta, ssr = _box_lstsq(design, rest * w, [_BOUNDS[t] for t in free])
    values = dict(fixed) | dict(zip(free, theta))
    return float(values["scale"]), float(values["overhead_ms"]), float(values["weight_ms_per_mib"]), ssr


def _box_lstsq(design: np.ndarray, target: np.ndarray,
               bounds: Sequence[tuple[float, float]]) -> tuple[np.ndarray, float]:
    """min ||design @ theta - target||^2 with low <= theta <= high, exactly: the problem is convex, so
    the best feasible solution over all active sets (free / at low / at high) is the optimum."""
    best: tuple[np.ndarray, float] | None = None
    states = [("free", "low") + (("high",) if math.isfinite(high) else ()) for _, high in bounds]
    for choice in itertools.product(*states):
        theta = np.array([low if s == "low" else high if s == "high" else np.nan
                          for s, (low, high) in zip(choice, bounds)], dtype=float)
        free = np.array([s == "free" for s in choice])
        residual = target - design[:, ~free] @ theta[~free]
        if free.any():
            theta[free] = np.linalg.lstsq(design[:, free], residual, rcond=None)[0]
        if not all(low - _SLACK * max(1.0, abs(low)) <= v <= high + _SLACK * max(1.0, abs(high))
                   for v, (low, high) in zip(theta, bounds)):
            continue
        theta = np.clip(theta, [b[0] for b in bounds], [b[1] for b in bounds])
        ssr = float(np.sum((design @ theta - target) ** 2))
        if best is None or ssr < best[1] - 1e-15:
            best = (theta, ssr)
    assert best is not None  # every parameter at its lower bound is always feasible
    return best


def _profile_invoke(terms: tuple[str, ...], x: np.ndarray, y: np.ndarray, n_blocks: np.ndarray,
                    invoke_max: float, mib: np.ndarray) -> float:
    """The invoke in [0, invoke_max] whose best (scale, overhead) fits best: a grid, then a
    golden-section search in the bracket around the grid's best point."""
    if invoke_max <= 0:
        return 0.0

    def ssr(invoke: float) -> float:
        return _fit_at_invoke(terms, x, y, n_blocks, invoke, mib)[3]

    grid = np.linspace(0.0, invoke_max, _GRID + 1)
    values = [ssr(v) for v in grid]
    i = int(np.argmin(values))
    low, high = grid[max(i - 1, 0)], grid[min(i + 1, _GRID)]
    ratio = (math.sqrt(5) - 1) / 2
    while high - low > 1e-12 * max(invoke_max, 1e-12):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if ssr(a) <= ssr(b):
            high = b
        else:
            low = a
    middle = (low + high) / 2
    return float(middle if ssr(middle) <= values[i] else grid[i])
