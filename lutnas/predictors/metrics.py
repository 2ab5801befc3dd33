"""Accuracy of predicted against measured whole-model latencies: MAPE, RMSE, share within +-5/10 %,
rank agreement (Spearman, Kendall), as one `AccuracyReport`.

Numpy only: importing scipy.stats costs about a second, and every predictor module imports this one.
The rank statistics match scipy's (`spearmanr`, `kendalltau` tau-b), ties included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lutnas.errors import BadInputError

# Kendall's tau walks all pairs; rows per chunk keep the pair matrix under ~8 MB at any size.
_PAIR_CHUNK = 1 << 20


@dataclass(frozen=True)
class AccuracyReport:
    """One predictor's accuracy on `n` subnets; `mape` and `max_abs_pct_error` in percent,
    `within_5` / `within_10` as shares in [0, 1]."""

    predictor: str
    n: int
    rmse_ms: float
    mape: float
    within_5: float
    within_10: float
    spearman: float
    kendall: float
    max_abs_pct_error: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (as scipy.stats.rankdata)."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    inverse = np.empty(values.size, dtype=np.intp)
    inverse[order] = np.arange(values.size)
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.cumsum(first)[inverse]
    bounds = np.r_[np.flatnonzero(first), values.size]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's r of average ranks); NaN when either side is constant."""
    ra, rb = average_ranks(np.asarray(a, float)), average_ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) pairs over the pairs untied on each side."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    n = x.size
    chunk = max(1, _PAIR_CHUNK // max(n, 1))
    score = untied_x = untied_y = 0.0
    for start in range(0, n, chunk):
        sx = np.sign(x[start:start + chunk, None] - x[None, :])
        sy = np.sign(y[start:start + chunk, None] - y[None, :])
        score += float((sx * sy).sum())
        untied_x += float(np.abs(sx).sum())
        untied_y += float(np.abs(sy).sum())
    denominator = np.sqrt(untied_x * untied_y)
    return float(score / denominator) if denominator > 0 else float("nan")


def accuracy(name: str, predicted_ms: Sequence[float], measured_ms: Sequence[float]) -> AccuracyReport:
    """The report of `name` on equal-length 1-D arrays; BadInputError for other shapes or for a
    measured latency that is not finite and positive."""
    predicted = np.asarray(predicted_ms, dtype=float)
    measured = np.asarray(measured_ms, dtype=float)
    if predicted.shape != measured.shape or predicted.ndim != 1 or predicted.size == 0:
        raise BadInputError(f"accuracy needs equal non-empty 1-D arrays, got {predicted.shape} "
                            f"predicted and {measured.shape} measured")
    if (measured <= 0).any() or not np.isfinite(measured).all():
        raise BadInputError("measured latencies must be finite and positive")
    error = predicted - measured
    pct = np.abs(error) / measured * 100.0
    return AccuracyReport(name, int(predicted.size), float(np.sqrt(np.mean(error ** 2))),
                          float(pct.mean()), float((pct <= 5.0).mean()), float((pct <= 10.0).mean()),
                          spearman(predicted, measured), kendall(predicted, measured), float(pct.max()))
