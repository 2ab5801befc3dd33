"""Transfer a full latency table of device A to device B from K blocks measured on B.

Two devices (or two runtimes) disagree mostly per block kind: a phone's depthwise convs may be 3x
slower relative to its attention than the host's. So B's latency is A's latency mapped per kind in
log space (log b = a_k + s_k log a: a scale and an exponent per kind, falling back to the pooled
mapping for kinds with too few samples) plus a learned residual on the block's features, kept only
when K-fold held-out error says it helps. The K blocks are chosen to span kinds and sizes
(`choose_samples`), the rest of B's measured blocks, if any, are the held-out report.

`transfer_table` is the whole of `lutnas transfer` but the measuring (`profiler.subnets` measures
the K blocks on a device): fit, report, and B's table (measured rows as measured, the rest
predicted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lutnas.errors import PredictorError
from lutnas.predictors.adaptive import covering_sample
from lutnas.predictors.base import TWO_TABLES, check_fitted
from lutnas.predictors.blocksum import BlockSumPredictor, keyed_values
from lutnas.predictors.correction import Correction
from lutnas.predictors.features import block_feature_frame, log_features, measured_latencies
from lutnas.predictors.trees import FittedModel, fit_residual_model
from lutnas.space import BlockSpec, SearchSpace, as_specs, kind_fields
from lutnas.tables.table import LatencyTable

MIN_FOR_OWN_SLOPE = 4
SLOPE_RANGE = (0.3, 2.0)  # latency on B grows with latency on A, and not wildly faster or slower
SOURCE = "predicted:transfer"


def choose_samples(table_a: Any, k: int, seed: int = 0) -> list[BlockSpec]:
    """K blocks of A's table spanning kinds and sizes: the ones to measure on B."""
    keys = list(measured_latencies(table_a).index)
    if k < 3:
        raise PredictorError(f"transfer needs at least 3 samples on the new device, got {k}")
    return covering_sample(keys, min(k, len(keys)), seed)


def _pooled_columns() -> list[str]:
    seen: dict[str, None] = {}
    for kind in kind_fields():
        for column in block_feature_frame([], kind).columns:
            seen.setdefault(column, None)
    return list(seen)


def _union_design(specs: Sequence[BlockSpec], log_a: np.ndarray) -> np.ndarray:
    """Pooled features over kinds: kind one-hot, shape fields (0 where absent), analytic, log A."""
    frame = block_feature_frame(specs)
    kinds = frame.pop("kind")
    numeric = frame.reindex(columns=_pooled_columns(), fill_value=0.0)
    onehot = np.column_stack([(kinds == k).to_numpy(dtype=float) for k in kind_fields()])
    return np.column_stack([log_features(numeric), onehot, log_a])


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 2 or np.ptp(x) < 1e-9:
        return 1.0, float(np.mean(y - x))
    slope, intercept = np.polyfit(x, y, 1)
    if not SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1]:
        slope = float(np.clip(slope, *SLOPE_RANGE))
        intercept = float(np.mean(y - slope * x))
    return float(slope), float(intercept)


class TransferPredictor(BlockSumPredictor):
    """B's block latency from A's: per-kind log-linear mapping + learned residual."""

    name = "transfer"
    fit_hint = "fit(table_a, measured_b)"
    learns_from = TWO_TABLES
    fitted_attributes = ("mapping_",)

    def __init__(self, space: SearchSpace | None = None, residual: str = "auto",
                 random_state: int = 0) -> None:
        super().__init__(space)
        self.residual = residual
        self.random_state = random_state

    def fit(self, table_a: Any, measured_b: Any) -> TransferPredictor:
        """Fit on A's measured blocks and B's measured blocks (tables, frames or {key: ms}); needs at
        least 3 blocks measured on both."""
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
        design = _union_design(specs, x)
        self.model_ = fit_residual_model(design, y - mapped, self.random_state, self.residual)
        resid = y - mapped - self.model_.predict(design)[0]
        self.sigma_ = float(np.sqrt(np.mean(resid ** 2)))
        self.measured_ = dict(zip(common, b[common].to_numpy(dtype=float)))
        self.correction_ = Correction()
        return self

    def _map(self, specs: Sequence[BlockSpec], log_a: np.ndarray) -> np.ndarray:
        params = np.array([self.mapping_.get(s.kind, self.mapping_["*"]) for s in specs])
        return params[:, 0] * log_a + params[:, 1]

    def _predict_blocks(self, specs: list[BlockSpec], use_measured: bool) -> tuple[np.ndarray, np.ndarray]:
        missing = [s.key for s in specs if s.key not in self.source_]
        if missing:
            raise PredictorError(f"{len(missing)} blocks are not in table A (e.g. {missing[0]}); "
                                 f"transfer predicts only keys the source table holds")
        log_a = np.log([self.source_[s.key] for s in specs])
        residual, spread = self.model_.predict(_union_design(specs, log_a))
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
        ms, spread = self.predict_blocks(keys, return_spread=True)
        return pd.DataFrame({"median_ms": ms, "spread_ms": spread,
                             "kind": [k.partition(":")[0] for k in keys],
                             "source": ["measured" if k in self.measured_ else SOURCE for k in keys]},
                            index=pd.Index(keys, name="key"))

    # -------------------------------------------------------------- state (serialize.py)
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self)
        model, arrays = self.model_.state("residual")
        header: dict[str, Any] = {
            "residual": self.residual, "random_state": self.random_state,
            "correction": self._correction_state(), "sigma": self.sigma_,
            "mapping": {k: list(v) for k, v in self.mapping_.items()},
            "source_keys": list(self.source_), "measured_keys": list(self.measured_), "model": model}
        arrays.update({"source.ms": np.array(list(self.source_.values()), dtype=float),
                       "measured.ms": np.array(list(self.measured_.values()), dtype=float)})
        return header, arrays

    @classmethod
    def from_state(cls, header: dict[str, Any], arrays: dict[str, np.ndarray],
                   space: SearchSpace | None = None) -> TransferPredictor:
        predictor = cls(space, residual=str(header["residual"]), random_state=int(header["random_state"]))
        predictor._load_correction(header)
        predictor.sigma_ = float(header["sigma"])
        predictor.mapping_ = {str(k): (float(v[0]), float(v[1])) for k, v in header["mapping"].items()}
        predictor.source_ = keyed_values(header["source_keys"], arrays["source.ms"])
        predictor.measured_ = keyed_values(header["measured_keys"], arrays["measured.ms"])
        predictor.model_ = FittedModel.from_state(header["model"], arrays, "residual")
        return predictor


def transfer_report(predictor: TransferPredictor, heldout_b: Mapping[str, float] | Any) -> dict[str, Any]:
    """Error of the transferred table on blocks of B that were measured but not used to fit:
    held-out count, MAPE and shares within +-5/10 % (fractions), and MAPE per kind."""
    truth = measured_latencies(heldout_b)
    truth = truth[[k for k in truth.index if k not in predictor.measured_ and k in predictor.source_]]
    if truth.empty:
        return {"heldout": 0}
    pred = predictor.predict_blocks(list(truth.index), use_measured=False)
    y = truth.to_numpy(dtype=float)
    rel = np.abs(pred - y) / y
    kinds = np.array([k.partition(":")[0] for k in truth.index])
    return {"heldout": int(len(y)), "samples": len(predictor.measured_),
            "mape": float(rel.mean()), "within_10pct": float(np.mean(rel <= 0.10)),
            "within_5pct": float(np.mean(rel <= 0.05)),
            "by_kind": {str(k): {"n": int((kinds == k).sum()), "mape": float(rel[kinds == k].mean())}
                        for k in sorted(set(kinds))}}


# ------------------------------------------------------------------------------------------------
# `lutnas transfer` without its I/O.

@dataclass
class TransferResult:
    """The fitted predictor, B's table (every key of A), and the held-out report."""

    predictor: TransferPredictor
    table: LatencyTable
    report: dict[str, Any]


def samples_from_table(table_a: LatencyTable, table_b: LatencyTable, k: int,
                       seed: int = 0) -> tuple[dict[str, float], pd.Series]:
    """K blocks measured in B's table to fit on (spanning kinds and sizes of A's), and B's other
    measured blocks as the held-out report."""
    known_b = measured_latencies(table_b)
    samples = choose_samples(table_a, k, seed)
    picked = {s.key: float(known_b[s.key]) for s in samples if s.key in known_b.index}
    if len(picked) < min(len(samples), 3):
        # Table B lacks some chosen blocks: choose among what B has, still spanning kinds.
        shared = known_b[known_b.index.isin(table_a.frame.index)]
        picked = {s.key: float(known_b[s.key]) for s in choose_samples(shared, k, seed)}
    return picked, known_b.drop(index=list(picked))


def transfer_table(table_a: LatencyTable, measured_b: Mapping[str, float], heldout_b: pd.Series,
                   device: Any, settings: Any, seed: int = 0, source: str = "",
                   base_rows: pd.DataFrame | None = None, keep_heldout: bool = False) -> TransferResult:
    """Fit A -> B on `measured_b`, report on `heldout_b`, and build B's table under `device` (its
    DeviceInfo) and `settings` (a table's settings dict or RunSettings).

    The blocks measured on B are measurements in it (with `base_rows`' statistics when B's own table
    is given; held-out ones too when `keep_heldout`); every other key of A is predicted:transfer.
    `source` (table A's path) is recorded in the metadata.
    """
    predictor = TransferPredictor(random_state=seed).fit(table_a, dict(measured_b))
    report = transfer_report(predictor, heldout_b)
    measured = pd.Series(predictor.measured_, dtype=float)
    if keep_heldout and len(heldout_b):
        held = heldout_b[[k for k in heldout_b.index if k in predictor.source_]]
        measured = pd.concat([measured, held[~held.index.isin(measured.index)].astype(float)])
    rows = measured.to_frame("median_ms")
    if base_rows is not None:  # B's own statistics (trials, spread, flag) for the keys it measured
        known = [k for k in rows.index if k in base_rows.index]
        rows = pd.concat([base_rows.loc[known], rows.drop(index=known)])
    metadata = {"transfer": {"from": source, "samples": len(predictor.measured_), "report": report},
                "space_yaml": table_a.metadata.get("space_yaml")}
    table = LatencyTable.from_latencies(rows, device, settings, table_a.space, metadata)
    predicted = predictor.predict_table()
    table = table.completed_with(predicted.loc[predicted["source"] == SOURCE, ["median_ms"]], SOURCE)
    return TransferResult(predictor, table, report)


def transfer_between_tables(table_a: LatencyTable, table_b: LatencyTable, samples: int, seed: int = 0,
                            source: str = "") -> TransferResult:
    """`lutnas transfer --to-table`: fit on K blocks B's table measured, report on B's others, and
    complete B's table with every key of A (B's measured rows keep their statistics)."""
    picked, heldout = samples_from_table(table_a, table_b, samples, seed)
    return transfer_table(table_a, picked, heldout, table_b.device, dict(table_b.settings), seed,
                          source, base_rows=table_b.frame)
