"""Proof against measured whole models: accuracy metrics, scatter plots, and measuring subnets.

A LUT prediction is only worth something once it is checked against whole subnets measured end to
end on the same device with the same runtime, threads, cores and trial protocol as the table. The
subnets measured here go into the store (kind "subnet") so a rerun reuses them; the ones used to fit
the whole-model correction are excluded from evaluation (they would flatter it).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from lutnas.device_agents.base import DeviceAgent, ModelFile, RunSettings
from lutnas.errors import BadInputError, DeviceError, TableError
from lutnas.plotting import pyplot, save_figure
from lutnas.predictors.base import Predictor, PredictorContext, build_available
from lutnas.space import SearchSpace, SubnetConfig
from lutnas.tables.table import SUBNET_KIND, LatencyTable


@dataclass(frozen=True)
class AccuracyReport:
    predictor: str
    n: int
    rmse_ms: float
    mape: float  # percent
    within_5: float  # share of subnets within +-5 %
    within_10: float
    spearman: float
    kendall: float
    max_abs_pct_error: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy(name: str, predicted_ms: Sequence[float], measured_ms: Sequence[float]) -> AccuracyReport:
    predicted = np.asarray(predicted_ms, dtype=float)
    measured = np.asarray(measured_ms, dtype=float)
    if predicted.shape != measured.shape or predicted.ndim != 1 or predicted.size == 0:
        raise BadInputError(f"accuracy needs equal non-empty 1-D arrays, got {predicted.shape} "
                            f"predicted and {measured.shape} measured")
    if (measured <= 0).any() or not np.isfinite(measured).all():
        raise BadInputError("measured latencies must be finite and positive")
    error = predicted - measured
    pct = np.abs(error) / measured * 100.0
    if predicted.size > 1 and np.ptp(predicted) > 0 and np.ptp(measured) > 0:
        spearman = float(stats.spearmanr(predicted, measured).statistic)
        kendall = float(stats.kendalltau(predicted, measured).statistic)
    else:
        spearman = kendall = float("nan")
    return AccuracyReport(name, int(predicted.size), float(np.sqrt(np.mean(error ** 2))),
                          float(pct.mean()), float((pct <= 5.0).mean()), float((pct <= 10.0).mean()),
                          spearman, kendall, float(pct.max()))


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


# ---------------------------------------------------------------------- sampling and measuring

def sample_configs(space: SearchSpace, count: int, seed: int, exclude: set[str] | None = None,
                   resolutions: Sequence[int] | None = None) -> list[SubnetConfig]:
    """`count` distinct subnets (by subnet key), none of them in `exclude`, reproducible by seed."""
    from lutnas.profiler.export import subnet_key

    exclude = set(exclude or ())
    rng = random.Random(seed)
    chosen: dict[str, SubnetConfig] = {}
    attempts = 0
    while len(chosen) < count:
        attempts += 1
        if attempts > 100 * count + 1000:
            raise BadInputError(f"space {space.name!r} has fewer than {count} distinct subnets "
                                f"outside the excluded ones; ask for fewer --samples")
        config = space.sample(rng)
        if resolutions:
            config = SubnetConfig(rng.choice(list(resolutions)), config.stem, config.stages)
        key = subnet_key(space, config)
        if key not in exclude and key not in chosen:
            chosen[key] = config
    return list(chosen.values())


def table_run_settings(table: LatencyTable) -> RunSettings:
    """The RunSettings a table was measured under (kept for callers; see LatencyTable.run_settings)."""
    return table.run_settings()


def table_trials(table: LatencyTable) -> int:
    """The trial count the table's keys typically got: whole models get the same protocol."""
    trials = table.frame["trials"]
    return max(1, int(np.median(trials))) if len(trials) else 1


# measure(agent, files, kind, settings, trials, store, run_id) -> {key: median_ms}
MeasureFiles = Callable[..., dict[str, float]]


def _default_measure_files() -> MeasureFiles:
    try:
        from lutnas.profiler.run import measure_files
    except ImportError as exc:
        raise DeviceError(f"the profiling loop (lutnas.profiler.run.measure_files) is not "
                          f"available: {exc}") from None
    return measure_files


def measure_subnets(agent: DeviceAgent, table: LatencyTable, space: SearchSpace,
                    configs: Sequence[SubnetConfig], store: Any, trials: int, argv: Sequence[str] = (),
                    measure_files: MeasureFiles | None = None, cache: Any = None,
                    progress: Callable[..., None] | None = None,
                    on_export: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Median over trials of each whole subnet, measured like the table's blocks, reusing the store.

    The profiling loop's `measure_files` gives subnets the blocks' protocol (shuffled trials in fresh
    processes, CV re-measure, drift checks); subnets it finished before are not measured again.
    """
    from lutnas.profiler.export import RUNTIME_FORMATS, ModelCache, export_subnet, subnet_key
    from lutnas.tables.store import figure_of

    settings = table_run_settings(table)
    info = agent.info()
    if info.device_id != table.device.device_id:
        raise TableError(f"the table was measured on {table.device.device_id}, but the device given "
                         f"is {info.device_id}; evaluate a table on its own device")
    agent.check_settings(settings)
    keys = [subnet_key(space, c) for c in configs]
    finished = store.finished_keys(info.device_id, settings)
    todo = [(k, c) for k, c in zip(keys, configs) if k not in finished]
    if todo:
        cache = cache or ModelCache()
        fmt = RUNTIME_FORMATS[settings.runtime]
        files = []
        for i, (key, config) in enumerate(todo):
            exported = export_subnet(space, config, fmt, cache)
            files.append(ModelFile(exported.path, key, exported.sha256))
            if on_export:
                on_export(i + 1, len(todo))
        store.upsert_device(info)
        run_id = store.start_run(info.device_id, settings, space.name, SUBNET_KIND, list(argv))
        measure = measure_files or _default_measure_files()
        try:
            measure(agent, files, SUBNET_KIND, settings, trials, store, run_id, progress=progress)
        finally:
            store.finish_run(run_id, {"subnets": len(files), "trials": trials})
    done = store.trial_medians(info.device_id, settings, keys)
    failed = [k for k in keys if not done.get(k)]
    if failed:
        raise DeviceError(f"{len(failed)} of {len(keys)} subnets have no successful measurement "
                          f"(e.g. {failed[0]}); see `lutnas measurements` for their errors")
    return np.asarray([figure_of(done[k]) for k in keys], dtype=float)


# ---------------------------------------------------------------------- calibration and evaluation

def covered_resolutions(table: LatencyTable, space: SearchSpace) -> list[int]:
    """Resolutions whose every unique block is in the table (a table profiled at one resolution)."""
    return [r for r in space.resolutions if table.coverage(space, [r])["share"] == 1.0]


def _resolutions(table: LatencyTable, space: SearchSpace, given: Sequence[int] | None) -> list[int]:
    if given:
        return list(given)
    covered = covered_resolutions(table, space)
    return covered or list(space.resolutions)  # none complete: missing keys are reported by name


def calibrate(agent: DeviceAgent, table: LatencyTable, space: SearchSpace, count: int, seed: int,
              store: Any, trials: int | None = None, resolutions: Sequence[int] | None = None,
              **kwargs: Any) -> dict[str, Any]:
    """Measure `count` random subnets and store the fitted correction in the table's metadata."""
    from lutnas.predictors.lut import LutPredictor

    configs = sample_configs(space, count, seed, resolutions=_resolutions(table, space, resolutions))
    predictor = LutPredictor(table, space)
    predictor.predict(configs)  # missing keys fail here, before minutes of measuring
    measured = measure_subnets(agent, table, space, configs, store, trials or table_trials(table),
                               **kwargs)
    predictor.fit(configs, measured)
    correction = dict(predictor.correction_ or {})
    correction["seed"] = seed
    correction["configs"] = [c.to_dict() for c in configs]
    correction["measured_ms"] = [float(v) for v in measured]
    table.set_correction(correction)
    return correction


@dataclass
class Evaluation:
    configs: list[SubnetConfig]
    measured_ms: np.ndarray
    predictions: dict[str, np.ndarray]
    reports: list[AccuracyReport]

    def to_dict(self) -> dict[str, Any]:
        return {"reports": [r.to_dict() for r in self.reports],
                "subnets": [{"config": c.to_dict(), "measured_ms": float(m),
                             **{name: float(p[i]) for name, p in self.predictions.items()}}
                            for i, (c, m) in enumerate(zip(self.configs, self.measured_ms))]}


def calibration_of(table: LatencyTable, space: SearchSpace) -> tuple[list[SubnetConfig], list[float]]:
    correction = table.correction or {}
    configs = [space.validate(SubnetConfig.from_dict(c)) for c in correction.get("configs", [])]
    return configs, [float(v) for v in correction.get("measured_ms", [])]


def evaluate_predictors(table: LatencyTable, space: SearchSpace, configs: Sequence[SubnetConfig],
                        measured_ms: Sequence[float],
                        extra: Sequence[Predictor] = ()) -> Evaluation:
    """Report every registered predictor that can be built for the table, plus `extra` ones."""
    calib_configs, calib_ms = calibration_of(table, space)
    context = PredictorContext(table, space, calib_configs, calib_ms)
    measured = np.asarray(measured_ms, dtype=float)
    predictions, reports = {}, []
    for predictor in [*build_available(context), *extra]:
        predicted = np.asarray(predictor.predict(list(configs)), dtype=float)
        predictions[predictor.name] = predicted
        reports.append(accuracy(predictor.name, predicted, measured))
    return Evaluation(list(configs), measured, predictions, reports)


def evaluate_on_device(agent: DeviceAgent, table: LatencyTable, space: SearchSpace, samples: int,
                       seed: int, store: Any, trials: int | None = None,
                       extra: Sequence[Predictor] = (), resolutions: Sequence[int] | None = None,
                       **kwargs: Any) -> Evaluation:
    """Sample held-out subnets, measure them end to end, and score every predictor on them."""
    from lutnas.profiler.export import subnet_key

    calib_configs, _ = calibration_of(table, space)
    exclude = {subnet_key(space, c) for c in calib_configs}
    exclude |= set((table.correction or {}).get("subnets", []))
    configs = sample_configs(space, samples, seed, exclude=exclude,
                             resolutions=_resolutions(table, space, resolutions))
    from lutnas.predictors.lut import LutPredictor

    LutPredictor(table, space).predict(configs)  # missing keys fail here, before any measuring
    measured = measure_subnets(agent, table, space, configs, store, trials or table_trials(table),
                               **kwargs)
    return evaluate_predictors(table, space, configs, measured, extra)
