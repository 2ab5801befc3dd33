"""The search command's steps, outside the CLI: load the latency model, search per target and write
the outputs. Exporting and measuring the winner is device work (`lutnas.profiler.subnets`); the CLI
hands `run_target` an exporter, so search itself holds no device code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lutnas.errors import PredictorError, SearchError
from lutnas.predictors import serialize
from lutnas.predictors.base import Predictor, PredictorContext
from lutnas.predictors.lut import LutPredictor
from lutnas.predictors.registry import fit_for_table, fittable_names
from lutnas.search.constraints import Constraints, CostModel
from lutnas.search.evolution import EvolutionSettings, Progress, SearchResult, evolve
from lutnas.search.objectives import Objective, SupernetBundle
from lutnas.search.report import plot_pareto, write_best, write_candidates
from lutnas.space import SearchSpace, SubnetConfig
from lutnas.space.config import elasticvit_or_none
from lutnas.tables.table import LatencyTable

# `--predictor`: the LUT, or a predictor fitted on the table (saved beside it, or fitted now);
# `--fill`: the block predictor that prices keys the table lacks.
PREDICTORS = ("lut", *fittable_names())
FILLS = (*fittable_names(), "none")

# exporter(winner config, output folder) -> {format: file written}
Exporter = Callable[[SubnetConfig, Path], dict[str, Path]]


def load_latency_model(table_path: str | Path, name: str, space: SearchSpace,
                       fill: str = "analytic") -> tuple[Predictor, LatencyTable, list[str]]:
    """(predictor, table, estimated keys).

    `lut` sums the table; blocks the table lacks (a key whose trials all failed, a partial
    profile) are priced by `fill`, a block predictor fitted on the table's own blocks, and listed
    so the output can say how much of a prediction is estimated; with `fill="none"` a missing key
    is an error. `learned`/`analytic` load their file beside the table when it exists, else are
    fitted on the table's blocks now (seconds).
    """
    if name not in PREDICTORS:
        raise SearchError(f"unknown --predictor {name!r}; use one of {', '.join(PREDICTORS)}")
    if fill not in FILLS:
        raise SearchError(f"unknown --fill {fill!r}; use one of {', '.join(FILLS)}")
    table = LatencyTable.load(table_path)
    if name != "lut":
        return _saved_or_fitted(table_path, table, name, space), table, []
    present = set(table.keys)
    missing = [b.key for b in space.unique_blocks() if b.key not in present]
    fallback = _saved_or_fitted(table_path, table, fill, space) if missing and fill != "none" else None
    predictor = LutPredictor(space, fallback=fallback, corrected=bool(table.correction)).fit(table)
    return predictor, table, missing if fallback is not None else []


def _saved_or_fitted(table_path: str | Path, table: LatencyTable, name: str,
                     space: SearchSpace) -> Predictor:
    if serialize.predictor_path(table_path, name).is_file():  # `lutnas build-table --predictor ...`
        return serialize.load_predictor(table_path, name, space)
    try:
        return fit_for_table(name, PredictorContext(table, space))
    except PredictorError as exc:
        raise SearchError(f"the {name} predictor cannot be built from table {table_path} ({exc}); "
                          f"use --predictor lut with a fuller table") from None


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
               export: Exporter | None = None) -> Outcome:
    """Search under `target_ms`, write candidates.csv, pareto.png and best.json to `out`, and the
    winner's model files through `export` when given."""
    constraints = Constraints(target_ms, job.window_ms, job.max_params, job.max_mmacs)
    result = evolve(job.space, job.cost_model, job.objective, constraints, job.settings, progress,
                    where=job.table_label)
    out.mkdir(parents=True, exist_ok=True)
    files = {"candidates": write_candidates(result, out / "candidates.csv"),
             "pareto": plot_pareto(result, out / "pareto.png",
                                   f"{job.space.name}: {result.objective_label.split(' (')[0]} "
                                   f"under {target_ms:g} ms ({job.table_label})")}
    exported = export(result.best.config, out) if export is not None else {}
    files.update(exported)
    winner_blocks = [b.key for b in job.space.blocks_of(result.best.config)]
    estimated = sorted({k for k in winner_blocks if k in job.estimated_keys})
    extra = {"space": job.space.name, "table": job.table_label,
             "blocks": len(winner_blocks), "blocks_estimated": estimated,
             "exported": {k: v.name for k, v in exported.items()},
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
