"""The search command's steps, outside the CLI: load the latency model, search per target, write
the outputs, export the winner, and measure it end to end on a device with the table's settings.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lutnas.errors import SearchError
from lutnas.search.constraints import Constraints, CostModel
from lutnas.search.evolution import EvolutionSettings, Progress, SearchResult, evolve
from lutnas.search.objectives import Objective, SupernetBundle
from lutnas.search.report import plot_pareto, write_best, write_candidates
from lutnas.space import SearchSpace, SubnetConfig
from lutnas.space.config import elasticvit_or_none

PREDICTORS = ("lut", "learned", "analytic")
FORMATS_OUT = ("tflite", "onnx")


FILLS = ("analytic", "learned", "none")


def load_latency_model(table_path: str | Path, name: str, space: SearchSpace,
                       fill: str = "analytic") -> tuple[Any, Any, list[str]]:
    """(predictor, table, estimated keys).

    `lut` sums the table; blocks the table lacks (a key whose trials all failed, a partial
    profile) are priced by `fill`, a block predictor fitted on the table's own blocks, and listed
    so the output can say how much of a prediction is estimated; with `fill="none"` a missing key
    is an error. `learned`/`analytic` load their file beside the table when it exists, else are
    fitted on the table's blocks now (seconds).
    """
    from lutnas.tables.table import LatencyTable

    if name not in PREDICTORS:
        raise SearchError(f"unknown --predictor {name!r}; use one of {', '.join(PREDICTORS)}")
    if fill not in FILLS:
        raise SearchError(f"unknown --fill {fill!r}; use one of {', '.join(FILLS)}")
    table = LatencyTable.load(table_path)
    if name == "lut":
        from lutnas.predictors.lut import LutPredictor

        present = set(table.keys)
        missing = [b.key for b in space.unique_blocks() if b.key not in present]
        fallback = _block_predictor(table_path, table, fill, space) if missing else None
        predictor = LutPredictor(table, space, fallback=fallback, corrected=bool(table.correction))
        return predictor, table, missing if fallback is not None else []
    return _whole_predictor(table_path, table, name, space), table, []


def _block_predictor(table_path: str | Path, table: Any, fill: str, space: SearchSpace) -> Any:
    if fill == "none":
        return None
    return _whole_predictor(table_path, table, fill, space)


def _whole_predictor(table_path: str | Path, table: Any, name: str, space: SearchSpace) -> Any:
    from lutnas.predictors import serialize

    path = serialize.predictor_path(table_path, name)
    if path.is_file():  # saved by `lutnas build-table --predictor ...`
        loader = getattr(serialize, "load_predictor", None)
        if loader is not None:
            return loader(table_path, name, space)
        return serialize.load_predictor_file(path, space)
    from lutnas.predictors.base import PredictorContext, registered_predictors

    builder = registered_predictors().get(name)
    predictor = builder(PredictorContext(table, space, (), ())) if builder else None
    if predictor is None:
        raise SearchError(f"the {name} predictor cannot be built from table {table_path} (too few "
                          f"blocks); use --predictor lut with a fuller table")
    return predictor


@dataclass
class SearchJob:
    space: SearchSpace
    cost_model: CostModel
    objective: Objective
    settings: EvolutionSettings
    window_ms: float
    max_params: float | None
    max_mmacs: float | None
    table_label: str
    supernet: SupernetBundle | None = None
    estimated_keys: frozenset[str] = frozenset()  # blocks priced by the fill predictor


@dataclass
class Outcome:
    result: SearchResult
    out: Path
    files: dict[str, Path] = field(default_factory=dict)


def run_target(job: SearchJob, target_ms: float, out: Path, progress: Progress | None = None,
               export: bool = True, cache_root: Path | None = None) -> Outcome:
    constraints = Constraints(target_ms, job.window_ms, job.max_params, job.max_mmacs)
    result = evolve(job.space, job.cost_model, job.objective, constraints, job.settings, progress,
                    where=job.table_label)
    out.mkdir(parents=True, exist_ok=True)
    files = {"candidates": write_candidates(result, out / "candidates.csv"),
             "pareto": plot_pareto(result, out / "pareto.png",
                                   f"{job.space.name}: {result.objective_label.split(' (')[0]} "
                                   f"under {target_ms:g} ms ({job.table_label})")}
    if export:
        files.update(export_winner(job, result.best.config, out, cache_root))
    winner_blocks = [b.key for b in job.space.blocks_of(result.best.config)]
    estimated = sorted({k for k in winner_blocks if k in job.estimated_keys})
    extra = {"space": job.space.name, "table": job.table_label,
             "blocks": len(winner_blocks), "blocks_estimated": estimated,
             "exported": {k: v.name for k, v in files.items() if k in FORMATS_OUT},
             "elasticvit": elasticvit_or_none(result.best.config, job.space)}
    files["best"] = write_best(result, out / "best.json", extra)
    return Outcome(result, out, files)


def winner_module(job: SearchJob, config: SubnetConfig) -> Any:
    """The winner as a static module: the supernet's weights (BN recalibrated for it), or None."""
    if job.supernet is None:
        return None
    bundle = job.supernet
    bundle.recalibrate(config)
    return bundle.supernet.extract(config).eval()


def export_winner(job: SearchJob, config: SubnetConfig, out: Path, cache_root: Path | None = None,
                  formats: Sequence[str] = FORMATS_OUT) -> dict[str, Path]:
    """best.tflite / best.onnx (and others asked for) in `out`, checked against PyTorch on export."""
    from lutnas.profiler.export import FORMATS, ModelCache, export_subnet

    cache = ModelCache(cache_root)
    module = winner_module(job, config)
    files = {}
    for fmt in formats:
        # Trained weights differ from the static model's seeded ones but share its key: keep them
        # apart in the cache by writing trained exports to a cache of their own.
        use_cache = cache if module is None else ModelCache(out / ".export-cache")
        entry = export_subnet(job.space, config, fmt, use_cache, module=module)
        target = out / f"best{FORMATS[fmt]}"
        shutil.copyfile(entry.path, target)
        files[fmt] = target
    return files


# ---------------------------------------------------------------------- verification

@dataclass
class Verification:
    device: str
    table_device: str
    runtime: str
    file: Path
    predicted_ms: float
    measured_ms: float
    trials: int

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_ms - self.measured_ms) / self.measured_ms

    @property
    def same_device(self) -> bool:
        return self.device == self.table_device

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "table_device": self.table_device, "runtime": self.runtime,
                "file": self.file.name, "predicted_ms": self.predicted_ms,
                "measured_ms": self.measured_ms, "error_pct": self.error_pct, "trials": self.trials,
                "same_device": self.same_device}


def run_settings_of(table: Any) -> Any:
    """The table's measurement settings as RunSettings (see LatencyTable.run_settings)."""
    return table.run_settings()


def verify_winner(job: SearchJob, table: Any, config: SubnetConfig, predicted_ms: float, out: Path,
                  address: str, trials: int = 5, store_path: Path | None = None,
                  agent_options: Any = None, cache_root: Path | None = None,
                  progress: Callable[..., None] | None = None) -> Verification:
    """Measure the exported winner end to end with the table's settings (the profiling loop's trials)."""
    from lutnas.device_agents.base import ModelFile
    from lutnas.device_agents.factory import open_agent
    from lutnas.profiler.export import RUNTIME_FORMATS, subnet_key
    from lutnas.profiler.run import measure_files
    from lutnas.tables.store import MeasurementStore

    settings = run_settings_of(table)
    fmt = RUNTIME_FORMATS.get(settings.runtime)
    if fmt is None:
        raise SearchError(f"table runtime {settings.runtime!r} cannot be verified; known runtimes: "
                          f"{', '.join(RUNTIME_FORMATS)}")
    files = export_winner(job, config, out, cache_root, formats=[fmt])
    key = subnet_key(job.space, config) + (":trained" if job.supernet is not None else "")
    store = MeasurementStore(store_path or out / "verify.sqlite")
    try:
        with open_agent(address, agent_options) as agent:
            figures = measure_files(agent, [ModelFile.from_path(files[fmt], key)], "subnet", settings,
                                    trials, store, progress=progress)
            device = agent.info().device_id
    finally:
        store.close()
    if key not in figures:
        raise SearchError(f"the winner {files[fmt].name} was not measured on {address}; see "
                          f"`lutnas measurements` in {store_path or out / 'verify.sqlite'}")
    return Verification(device, table.device.device_id, settings.runtime, files[fmt],
                        float(predicted_ms), float(figures[key]), trials)
