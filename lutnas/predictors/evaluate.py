"""Score every predictor of a table against whole subnets measured end to end, and plot it.

A LUT prediction is only worth something once it is checked against whole subnets measured on the
same device with the same runtime, threads, cores and trial protocol as the table; measuring them
is `lutnas.profiler.subnets`' job. Here the measured latencies are given: every predictor the
registry can build for the table is corrected on the table's calibration subnets (the same ones for
all) and scored on the held-out ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lutnas.plotting import pyplot, save_figure
from lutnas.predictors.base import Predictor, PredictorContext
from lutnas.predictors.metrics import AccuracyReport, accuracy
from lutnas.predictors.registry import build_available
from lutnas.space import SearchSpace, SubnetConfig
from lutnas.tables.table import LatencyTable


@dataclass
class Evaluation:
    """Held-out subnets, their measured ms, each predictor's ms (by label) and its report."""

    configs: list[SubnetConfig]
    measured_ms: np.ndarray
    predictions: dict[str, np.ndarray]
    reports: list[AccuracyReport]

    def to_dict(self) -> dict[str, Any]:
        return {"reports": [r.to_dict() for r in self.reports],
                "subnets": [{"config": c.to_dict(), "measured_ms": float(m),
                             **{name: float(p[i]) for name, p in self.predictions.items()}}
                            for i, (c, m) in enumerate(zip(self.configs, self.measured_ms))]}


def evaluate_predictors(table: LatencyTable, space: SearchSpace, configs: Sequence[SubnetConfig],
                        measured_ms: Sequence[float], extra: Sequence[Predictor] = ()) -> Evaluation:
    """Report every registered predictor that can be built for the table, plus `extra` ones."""
    context = PredictorContext.from_table(table, space)
    measured = np.asarray(measured_ms, dtype=float)
    predictions, reports = {}, []
    for predictor in [*build_available(context), *extra]:
        predicted = np.asarray(predictor.predict(list(configs)), dtype=float)
        predictions[predictor.label] = predicted
        reports.append(accuracy(predictor.label, predicted, measured))
    return Evaluation(list(configs), measured, predictions, reports)


def scatter_plot(path: str | Path, measured_ms: Sequence[float],
                 predictions: dict[str, Sequence[float]], title: str = "") -> Path:
    """Predicted against measured, one marker per predictor, with the y = x and +-5 % lines."""
    plt = pyplot()
    measured = np.asarray(measured_ms, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    low = min([measured.min()] + [float(np.min(p)) for p in predictions.values()]) * 0.95
    high = max([measured.max()] + [float(np.max(p)) for p in predictions.values()]) * 1.05
    line = np.array([low, high])
    ax.plot(line, line, color="black", linewidth=1, label="y = x")
    ax.fill_between(line, line * 0.95, line * 1.05, color="grey", alpha=0.2, label="±5 %")
    for (name, values), marker in zip(predictions.items(), "osD^v<>"):
        ax.scatter(measured, np.asarray(values, dtype=float), s=18, marker=marker, label=name,
                   alpha=0.8)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured whole model (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(title or "predicted vs measured")
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)
