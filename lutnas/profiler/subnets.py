"""Whole models on a device: calibrate a table's correction, evaluate predictors, verify a winner.

A LUT prediction is only worth something once it is checked against whole subnets measured end to
end on the same device with the same runtime, threads, cores and trial protocol as the table
(`table.run_settings()`). Subnets measured here go into the store (kind "subnet") so a rerun reuses
them; the ones used to fit the whole-model correction are excluded from evaluation (they would
flatter it). Search's winner is exported and measured the same way (`verify_winner`), and
`lutnas transfer --device` measures its K blocks here (`transfer_on_device`).
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lutnas.device_agents.base import DeviceAgent, ModelFile, RunSettings, check_cache_state
from lutnas.device_agents.factory import AgentOptions, open_agent
from lutnas.device_agents.local_worker import eviction_bytes
from lutnas.errors import BadInputError, DeviceError, SearchError, TableError
from lutnas.predictors.base import Predictor, PredictorContext
from lutnas.predictors.evaluate import Evaluation, evaluate_predictors
from lutnas.predictors.lut import LutPredictor
from lutnas.predictors.transfer import TransferResult, choose_samples, transfer_table
from lutnas.profiler.adaptive_run import store_measurer
from lutnas.profiler.export import (
    FORMATS,
    ModelCache,
    export_empty,
    export_spec,
    export_subnet,
    export_subnets,
    format_for,
    trained_assembly,
)
from lutnas.profiler.run import measure_files
from lutnas.space import BlockSpec, SearchSpace, SubnetConfig, subnet_key
from lutnas.tables.frame import HOST_CHECK_KIND, SUBNET_KIND, WHOLE_MODEL_KINDS
from lutnas.tables.store import MeasurementStore, ci_half_width, figure_of
from lutnas.tables.table import LatencyTable

FORMATS_OUT = ("tflite", "onnx")  # what a search winner is exported to by default


# ---------------------------------------------------------------------- sampling

def sample_configs(space: SearchSpace, count: int, seed: int, exclude: set[str] | None = None,
                   resolutions: Sequence[int] | None = None) -> list[SubnetConfig]:
    """`count` distinct subnets (by subnet key), none of them in `exclude`, reproducible by seed;
    BadInputError when the space has fewer."""
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


def table_trials(table: LatencyTable) -> int:
    """The trial count the table's keys typically got: whole models get the same protocol."""
    trials = table.frame["trials"]
    return max(1, int(np.median(trials))) if len(trials) else 1


def covered_resolutions(table: LatencyTable, space: SearchSpace) -> list[int]:
    """Resolutions whose every unique block is in the table (a table profiled at one resolution)."""
    return [r for r in space.resolutions if table.coverage(space, [r])["share"] == 1.0]


def _resolutions(table: LatencyTable, space: SearchSpace, given: Sequence[int] | None) -> list[int]:
    if given:
        return list(given)
    covered = covered_resolutions(table, space)
    return covered or list(space.resolutions)  # none complete: missing keys are reported by name


# ---------------------------------------------------------------------- measuring whole subnets

HOST_TOLERANCE = 0.03  # the reference block within +-3% of its table figure: the host is as it was
HOST_REFUSE = 0.30  # beyond +-30% the host is too different to normalise: refuse
# Both bounds widen by the uncertainty of the references' ratios (HostCheck.slack): the 95%
# intervals of their table figures and of their figures in the session, combined as the relative
# errors of a ratio of two independent estimates (root sum of squares). A table of 3 noisy trials
# (CV 23% on CI's shared cores) cannot tell a 36% move from noise; nor can a session's references:
# on the 128 px proof (elasticvit, onnxruntime, cold-llc paced, 20 trials, 2026-12-03) the
# calibration's references read x0.939, 0.913, 1.002 with session intervals of +-1.7-4.2% and
# table intervals of +-2.2-2.9%. Judged by the table's intervals alone (3% + 2.4%) the session was
# normalised by 0.939, and the correction then over-predicted the 50 held-out subnets (measured in a
# session whose references read x0.998) by 3.4% (72% within +-5%); taken as measured, -2.9% (90%).
# With both intervals (3% + 4.3%) it is taken as measured.
# A reference block faster than this is dominated by per-invoke and cache effects (benchmarks/lut_gap.py:
# blocks under ~50 us do not time like their in-model selves), so its ratio says nothing of the host:
# the check is skipped (recorded as no check), never used to normalise or refuse.
HOST_CHECK_MIN_MS = 0.05
# The subnets' blocks at these percentiles of table latency are the references; a session's ratio is
# the median of theirs. One reference alone once normalised a whole calibration by its own x1.18
# (elasticvit 160 px, onnxruntime, cold-llc paced, 2026-12-02) while the evaluation's reference read
# x0.99: the correction came out 14% low (MAPE 13.75%, 2.56% had the calibration been taken as
# measured). A median of three is not moved by one block's trouble.
HOST_REFERENCE_PERCENTILES = (50, 75, 90)
# Paced timing assumes the pace model runs alike after every model it follows. A model whose
# memory footprint evicts the pace model breaks that: on `elasticvit` at 128 px (onnxruntime) the
# pace model took 0.255 ms after whole subnets and 0.135-0.14 ms after blocks, so paced subnets came
# out ~45% low and the correction hit its 0.5 bound (measured 2026-12-01); on `evmini` (LiteRT)
# 0.086 after both; on a 32 px `tiny` copy (onnxruntime, 2 trials, loaded host) x1.12. With
# --cache-state cold-llc (every cache flushed before the pace as well) it took 0.455 ms after the
# elasticvit subnets and 0.473 after their blocks (x0.96, same day). A moderate,
# consistent bias is what the correction's scale absorbs; beyond this move of the pace model
# between the table's blocks and the subnets it grows with the model's size: refuse.
# Not checked with cold-llc: no footprint reaches a pace that starts from flushed caches, yet on
# 2026-12-02 (another host CPU, pace 0.16 ms) it ran x1.5 after the 128 px subnets (0.235-0.246 ms
# over 7-13 ms subnets) and x1.2-1.6 after 13 ms of sleep, of a numpy compute loop or of rewriting
# 100 MiB (throwaway script): the host's timing state after any long step, the same for every
# subnet, which the scale absorbs. Refusing there sent the user to the cold-llc they already used.
# Priming the pace instead (one untimed pace invoke before the timed one, no flush) made it
# x0.94-1.04 after all of those, but doubled the blocks' cold-llc trial CV (3.64% -> 7.38%,
# benchmarks/results/paced_estimator_primed_b28b3e3.json): a flushed pace tracks the memory
# system that cold-llc runs depend on. Reverted.
PACE_STATE_BOUND = 0.25


@dataclass
class HostCheck:
    """How the device's speed now compares with when the table was profiled: reference blocks of
    the table measured in the same processes as the subnets (ratio = the median of now / table)."""

    reference: str  # the reference blocks' keys, joined by "; "
    ratio: float  # the median of the references' ratios
    invoke_ms: float | None  # an almost empty model measured the same way: the per-invoke cost
    # Relative half-width of the 95% interval of the references' ratios (median over them of the
    # root sum of squares of their table figures' and session figures' relative half-widths; 0:
    # unknown): a change smaller than that cannot be told from noise.
    slack: float = 0.0
    # The move beyond which the host is refused (before the slack): `--max-host-change`.
    refuse_beyond: float = HOST_REFUSE
    ratios: tuple[float, ...] = ()  # each reference's now / table, in the order of `reference`

    @property
    def tolerance(self) -> float:
        """The relative move within which the host counts as unchanged (HOST_TOLERANCE + slack)."""
        return HOST_TOLERANCE + self.slack

    @property
    def normalised(self) -> bool:
        return abs(self.ratio - 1.0) > self.tolerance

    @property
    def refused(self) -> bool:
        return abs(self.ratio - 1.0) > self.refuse_beyond + self.slack

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "ratio": self.ratio, "ratios": list(self.ratios),
                "invoke_ms": self.invoke_ms, "normalised": self.normalised, "slack": self.slack,
                "refuse_beyond": self.refuse_beyond}


def _check_pace_state(store: MeasurementStore, device_id: str, settings: RunSettings,
                      table: LatencyTable, keys: Sequence[str]) -> None:
    """DeviceError when the pace model ran more than PACE_STATE_BOUND slower (or faster) after the
    subnets `keys` than after the table's blocks: paced figures of the whole models would be biased
    by their memory footprint, not by the host, so nothing is fitted on them. The blocks are the
    host check's references timed in the same processes where the store has them (a host that got
    slower since profiling moves both alike), else the table's pace unit. Not checked for a cache
    state that flushes every cache before the pace invoke (cold-llc): no footprint reaches it."""
    scales = pace_scales(table)
    if not scales or eviction_bytes(settings.cache)[1] > 0:
        return
    # whole models and host-check references only: not the table's thousands of block trials
    frame = store.measurements_frame(device_id=device_id, runtime=settings.runtime,
                                     threads=settings.threads, core_mask=settings.core_mask,
                                     precision=settings.precision, kinds=WHOLE_MODEL_KINDS)
    frame = frame[frame["pace_sha256"].isin(list(scales))]
    subnets = frame[frame["key"].isin(list(keys))]
    if subnets.empty:
        return
    references = frame[frame["run_id"].isin(set(subnets["run_id"]))
                       & frame["key"].str.startswith("hostref:")]
    after_blocks = float(np.median(references["pace_ms"])) if not references.empty else None
    ratio = float(np.median([p / (after_blocks or scales[s])
                             for p, s in zip(subnets["pace_ms"], subnets["pace_sha256"])]))
    if abs(ratio - 1.0) > PACE_STATE_BOUND:
        raise DeviceError(
            f"the pace model ran x{ratio:.2f} of its table figure after these whole models: their "
            f"memory footprint changes its cache state, so their paced figures would be off by about "
            f"that much; profile this space with --cache-state cold-llc (the pace then starts from "
            f"flushed caches after every model) or without --pace, nothing was fitted")


def pace_scales(table: LatencyTable) -> dict[str, float] | None:
    """The ms unit of a paced table (pace model sha256 -> ms), so whole models measured later are in
    the same unit as its blocks whatever store they go to; None for an unpaced table."""
    scales = table.metadata.get("pace_scales_ms")
    return {str(k): float(v) for k, v in scales.items()} if scales else None


def _reference_blocks(table: LatencyTable, space: SearchSpace,
                      configs: Sequence[SubnetConfig]) -> list[BlockSpec]:
    """The subnets' blocks at HOST_REFERENCE_PERCENTILES of table latency (distinct; fewer when
    the subnets have fewer blocks): well above any timer step. TableError when none is in the table."""
    keys = {b.key: b for c in configs for b in space.blocks_of(c) if table.has(b.key)}
    if not keys:
        raise TableError("none of the subnets' blocks is in the table; profile the space first")
    figures = table.lookup()
    ordered = sorted(keys, key=lambda k: (figures[k], k))
    picked = [ordered[min(len(ordered) - 1, (p * len(ordered)) // 100)] for p in HOST_REFERENCE_PERCENTILES]
    return [keys[k] for k in dict.fromkeys(picked)]


def _host_check(store: MeasurementStore, device_id: str, settings: RunSettings, table: LatencyTable,
                references: Sequence[BlockSpec], run_id: int,
                refuse_beyond: float = HOST_REFUSE) -> HostCheck | None:
    """The session's HostCheck from its references measured next to the subnets: the median of
    their ratios and of their ratios' relative 95% half-widths (table and session intervals
    combined: `_ratio_half_width`). References faster than
    HOST_CHECK_MIN_MS are left out; None when none is left (no check). DeviceError when a
    reference failed in every trial."""
    usable = [r for r in references if table.latency_ms(r.key) >= HOST_CHECK_MIN_MS]
    if not usable:
        return None
    ref_keys, invoke_key = [f"hostref:{run_id}:{r.key}" for r in usable], f"invoke:{run_id}"
    done = store.trial_medians(device_id, settings, [*ref_keys, invoke_key], scales=pace_scales(table))
    ratios, slacks = [], []
    for reference, ref_key in zip(usable, ref_keys):
        if not done.get(ref_key):
            raise DeviceError(f"the reference block {reference.key} failed in every trial next to the "
                              f"subnets; see `lutnas measurements --all`")
        figure = table.latency_ms(reference.key)
        ratios.append(figure_of(done[ref_key]) / figure)
        interval = (table.metadata.get("ci95_ms") or {}).get(reference.key)
        slacks.append(_ratio_half_width(interval, figure, done[ref_key]))
    invoke = figure_of(done[invoke_key]) if done.get(invoke_key) else None
    return HostCheck("; ".join(r.key for r in usable), float(np.median(ratios)), invoke,
                     max(0.0, float(np.median(slacks))), refuse_beyond, tuple(ratios))


def _ratio_half_width(table_interval: Sequence[float] | None, table_ms: float,
                      session_trials: Sequence[float]) -> float:
    """Relative 95% half-width of a reference's session / table ratio: the table figure's
    (`table_interval`, ms, or None) and the session figure's (`median_ci` of its trial medians, ms)
    relative half-widths in quadrature, as for a ratio of two independent estimates; a missing one
    counts 0."""
    from_table = ((float(table_interval[1]) - float(table_interval[0])) / (2.0 * table_ms)
                  if table_interval and table_ms > 0 else 0.0)
    from_session = ci_half_width(session_trials) or 0.0
    return math.hypot(from_table, from_session)


def _measure_with_host_check(agent: DeviceAgent, info: Any, table: LatencyTable, space: SearchSpace,
                             configs: Sequence[SubnetConfig], files: list[ModelFile],
                             settings: RunSettings, trials: int, store: MeasurementStore,
                             cache: ModelCache, argv: Sequence[str] = (),
                             progress: Callable[..., None] | None = None) -> int:
    """One store run measuring `files` (whole models of `configs`) with the table's reference block
    and an almost empty model in the same processes (the host check); returns the run id."""
    fmt = format_for(settings.runtime, settings.precision)
    store.upsert_device(info)
    run_id = store.start_run(info.device_id, settings, space.name, SUBNET_KIND, list(argv))
    references = _reference_blocks(table, space, configs)
    empty = export_empty(configs[0].resolution, fmt, cache)
    checked = [ModelFile(empty.path, f"invoke:{run_id}", empty.sha256)]
    for reference in references:
        entry = export_spec(reference, fmt, cache)
        checked.append(ModelFile(entry.path, f"hostref:{run_id}:{reference.key}", entry.sha256))
    summary: dict[str, Any] = {"subnets": len(files), "trials": trials,
                               "host_reference": "; ".join(r.key for r in references)}
    try:
        measure_files(agent, list(files) + checked, SUBNET_KIND, settings, trials, store, run_id,
                      progress=progress, kinds={f.key: HOST_CHECK_KIND for f in checked}, cache=cache)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: `lutnas runs` shows the session as interrupted
        summary["interrupted"] = True
        raise
    finally:
        store.finish_run(run_id, summary)
    return run_id


def measure_subnets(agent: DeviceAgent, table: LatencyTable, space: SearchSpace,
                    configs: Sequence[SubnetConfig], store: MeasurementStore, trials: int,
                    argv: Sequence[str] = (), cache: ModelCache | None = None,
                    progress: Callable[..., None] | None = None,
                    on_export: Callable[[int, int], None] | None = None,
                    checks: list[HostCheck] | None = None, export_workers: int = 2,
                    max_host_change: float = HOST_REFUSE) -> np.ndarray:
    """Median over trials (ms) of each whole subnet, measured like the table's blocks, reusing the
    store, and normalised to the host's speed when the table was profiled.

    The profiling loop's `measure_files` gives subnets the blocks' protocol (shuffled trials in
    fresh processes, QC, drift checks). Reference blocks of the table (HOST_REFERENCE_PERCENTILES)
    and an almost empty model are measured in the same processes: the median of the blocks'
    figures now / in the table is the host's change of speed (HostCheck, appended to `checks`);
    beyond +-3% the subnets of that session are divided by it, beyond +-30% they are refused
    (DeviceError), never fitted; both bounds widen by the median relative half-width of the
    references' 95% intervals in the table; `max_host_change` (a fraction, `--max-host-change`)
    replaces the 30%. Subnets finished before are not measured again (their own session's check
    applies), whichever file they were measured from: a store filled before whole subnets had
    distinct weights per position (their rows' model_sha256 name the merged-weight files, which
    measured x1.002-1.024 of the distinct ones here, benchmarks/subnet_stitch.py) keeps those
    figures; use a new --store to measure the current files. TableError for another device;
    DeviceError when a subnet has no successful trial."""
    settings = table.run_settings()
    info = agent.info()
    if info.device_id != table.device.device_id:
        raise TableError(f"the table was measured on {table.device.device_id}, but the device given "
                         f"is {info.device_id}; evaluate a table on its own device")
    agent.check_settings(settings)
    check_cache_state(agent, settings)
    keys = [subnet_key(space, c) for c in configs]
    finished = store.finished_keys(info.device_id, settings)
    todo = [(k, c) for k, c in zip(keys, configs) if k not in finished]
    if todo:
        cache = cache or ModelCache()
        fmt = format_for(settings.runtime, settings.precision)
        exported = export_subnets(space, [c for _, c in todo], fmt, cache, export_workers)
        if on_export:
            on_export(len(todo), len(todo))
        files = [ModelFile(e.path, k, e.sha256) for (k, _), e in zip(todo, exported)]
        _measure_with_host_check(agent, info, table, space, [c for _, c in todo], files, settings,
                                 trials, store, cache, argv, progress)
    _check_pace_state(store, info.device_id, settings, table, keys)
    done = store.trial_medians(info.device_id, settings, keys, scales=pace_scales(table))
    failed = [k for k in keys if not done.get(k)]
    if failed:
        raise DeviceError(f"{len(failed)} of {len(keys)} subnets have no successful measurement "
                          f"(e.g. {failed[0]}); see `lutnas measurements` for their errors")
    ratios = _session_ratios(store, info.device_id, settings, table, keys, checks, max_host_change)
    return np.asarray([figure_of(done[k]) / ratios.get(k, 1.0) for k in keys], dtype=float)


def _session_ratios(store: MeasurementStore, device_id: str, settings: RunSettings, table: LatencyTable,
                    keys: Sequence[str], checks: list[HostCheck] | None,
                    refuse_beyond: float = HOST_REFUSE) -> dict[str, float]:
    """Subnet key -> the host ratio of the session that measured it (none: a store from before
    host checks, taken as it is). DeviceError when a session's host was too different: that
    session's rows are kept but marked, and its keys unfinished, so a rerun measures them again."""
    frame = store.measurements_frame(device_id=device_id, runtime=settings.runtime,
                                     threads=settings.threads, core_mask=settings.core_mask,
                                     keys=list(keys), precision=settings.precision)
    ratios: dict[str, float] = {}
    measured = list(store.trial_medians(device_id, settings))  # read once, not once per session
    for run_id, group in frame.groupby("run_id"):
        refs = [BlockSpec.parse(k.split(":", 2)[2]) for k in measured
                if k.startswith(f"hostref:{int(run_id)}:")]
        check = _host_check(store, device_id, settings, table, refs, int(run_id), refuse_beyond)
        if check is None:  # a store from before host checks, or only references under the timer
            continue
        if check.refused:
            _set_aside(store, device_id, settings, group, check)
            raise DeviceError(
                f"the host ran the table's blocks {check.reference} {check.ratio - 1:+.0%} off their "
                f"table figures (median; beyond {refuse_beyond:.0%} + their own "
                f"±{check.slack:.0%} uncertainty) "
                f"while measuring these subnets: it is not in the state it was profiled in; rerun on "
                f"a quiet host (these subnets are measured again), re-profile, or accept a larger "
                f"--max-host-change; nothing was fitted")
        if checks is not None:
            checks.append(check)
        for key in group["key"].unique():
            ratios[str(key)] = check.ratio if check.normalised else 1.0
    return ratios


def _set_aside(store: MeasurementStore, device_id: str, settings: RunSettings, group: Any,
               check: HostCheck) -> None:
    """Mark a refused session's subnet rows (kept, not used) and unfinish their keys."""
    status = f"host-refused: references ran {check.ratio - 1:+.0%} off their table figures"
    store.set_status([int(i) for i in group["measurement_id"]], status)
    store.unfinish(device_id, settings, [str(k) for k in group["key"].unique()])


# Cache states whose empty-model time is the per-invoke cost a block's figure carries. Under
# cold-llc the empty model pays a cold invoke (every cache flushed) that is not what a block pays:
# on the two cold-llc proofs (elasticvit 128 px, 10 calibration / 50 held-out subnets) the measured
# 0.32 ms (LiteRT int8) left 52 % within +-5 %, MAPE 5.81 %, where the invoke fitted from the same
# 10 subnets (0.19 ms) gave 80 %, 3.76 %; onnxruntime: measured 0.29 ms 82 % / 3.02 %, fitted
# 0.26 ms 82 % / 3.08 % (refits on the stored measurements, 2026-12-01). There it is fitted.
INVOKE_FROM_EMPTY_MODEL = ("warm", "cold-l2")


def measured_invoke(table: LatencyTable, checks: Sequence[HostCheck]) -> float | None:
    """The empty model's median ms measured next to the subnets, when it was and the table's cache
    state makes it the per-invoke cost (INVOKE_FROM_EMPTY_MODEL); None: the correction fits it."""
    return invoke_for_cache(str(table.settings.get("cache") or "warm"), [c.invoke_ms for c in checks])


def invoke_for_cache(cache: str, invokes: Sequence[float | None]) -> float | None:
    """The median of the empty model's ms (`invokes`, None where not measured) when the cache state
    `cache` makes it the per-invoke cost (INVOKE_FROM_EMPTY_MODEL), else None (fitted)."""
    measured = [v for v in invokes if v is not None]
    if cache not in INVOKE_FROM_EMPTY_MODEL or not measured:
        return None
    return float(np.median(measured))


def calibrate(agent: DeviceAgent, table: LatencyTable, space: SearchSpace, count: int, seed: int,
              store: MeasurementStore, trials: int | None = None,
              resolutions: Sequence[int] | None = None, invoke_ms: float | None = None,
              **kwargs: Any) -> dict[str, Any]:
    """Measure `count` random subnets, fit the whole-model `Correction` of the table's LUT on them
    and store it, with the subnets (seed, configs, measured ms), in the table's metadata; returns
    that record. `invoke_ms`: the measured per-invoke overhead, if known (not fitted then)."""
    configs = sample_configs(space, count, seed, resolutions=_resolutions(table, space, resolutions))
    predictor = LutPredictor(space).fit(table)
    predictor.predict(configs)  # missing keys fail here, before minutes of measuring
    checks: list[HostCheck] = []
    measured = measure_subnets(agent, table, space, configs, store, trials or table_trials(table),
                               checks=checks, **kwargs)
    if invoke_ms is None:
        invoke_ms = measured_invoke(table, checks)
    predictor.calibrate(configs, measured, invoke_ms)
    record = predictor.correction_.to_dict()
    record.update(seed=seed, configs=[c.to_dict() for c in configs],
                  measured_ms=[float(v) for v in measured], host_checks=[c.to_dict() for c in checks])
    table.set_correction(record)
    return record


def evaluate_on_device(agent: DeviceAgent, table: LatencyTable, space: SearchSpace, samples: int,
                       seed: int, store: MeasurementStore, trials: int | None = None,
                       extra: Sequence[Predictor] = (), resolutions: Sequence[int] | None = None,
                       **kwargs: Any) -> Evaluation:
    """Sample held-out subnets (never the calibration ones), measure them end to end, and score every
    predictor the registry builds for the table (plus `extra`) on them."""
    context = PredictorContext.from_table(table, space)
    exclude = {subnet_key(space, c) for c in context.calibration_configs}
    exclude |= set((table.correction or {}).get("subnets", []))
    configs = sample_configs(space, samples, seed, exclude=exclude,
                             resolutions=_resolutions(table, space, resolutions))
    LutPredictor(space).fit(table).predict(configs)  # missing keys fail here, before any measuring
    measured = measure_subnets(agent, table, space, configs, store, trials or table_trials(table),
                               **kwargs)
    return evaluate_predictors(table, space, configs, measured, extra)


# ---------------------------------------------------------------------- a search winner

@dataclass
class Verification:
    """A winner measured end to end against its predicted latency."""

    device: str
    table_device: str
    runtime: str
    file: Path
    predicted_ms: float
    measured_ms: float
    trials: int
    raw_ms: float | None = None  # measured before the host check's normalisation
    host_check: HostCheck | None = None  # on the table's own device only
    static_ms: float | None = None  # the same config with seeded weights, same processes

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
                "same_device": self.same_device, "raw_ms": self.raw_ms, "static_ms": self.static_ms,
                "host_check": self.host_check.to_dict() if self.host_check else None}


def export_winner(space: SearchSpace, config: SubnetConfig, out: Path, module: Any = None,
                  cache_root: Path | None = None, formats: Sequence[str] = FORMATS_OUT) -> dict[str, Path]:
    """best.tflite / best.onnx (and others asked for) in `out`, checked against PyTorch on export;
    `module` is the winner with trained weights (None: the static model)."""
    cache = ModelCache(cache_root)
    files = {}
    for fmt in formats:
        # Trained weights differ from the static model's seeded ones but share its key: they are
        # cached under the digest of their weights (export_subnet), in a cache of their own.
        use_cache = cache if module is None else ModelCache(out / ".export-cache")
        entry = export_subnet(space, config, fmt, use_cache, module=module)
        target = out / f"best{FORMATS[fmt]}"
        shutil.copyfile(entry.path, target)
        files[fmt] = target
    return files


def verify_winner(space: SearchSpace, table: LatencyTable, config: SubnetConfig, predicted_ms: float,
                  out: Path, address: str, trials: int = 5, store_path: Path | None = None,
                  agent_options: AgentOptions | None = None, cache_root: Path | None = None,
                  progress: Callable[..., None] | None = None, module: Any = None,
                  max_host_change: float = HOST_REFUSE) -> Verification:
    """Export the winner (`module`: with trained weights) and measure it end to end with the
    table's settings (the profiling loop's trials) on the device at `address`.

    On the table's own device the winner is measured as calibration and evaluation measure subnets:
    with the table's reference blocks and an empty model in the same processes (host check: the
    figure is normalised beyond +-3%, refused beyond +-30%, DeviceError; both widened by the
    references' own intervals in the table), and, when it carries
    trained weights, next to the same config with the table's seeded weights (`static_ms`), so a
    gap between prediction and measurement can be told apart from the host and from the weights.
    SearchError when the device returned no latency."""
    settings = table.run_settings()
    fmt = format_for(settings.runtime, settings.precision)  # BadInputError: int8 of a non-TFLite runtime
    files = export_winner(space, config, out, module, cache_root, formats=[fmt])
    static_key = subnet_key(space, config)
    # The trained winner's key names its weights: a rerun after retraining measures the new file
    # instead of finding the old one's measurement finished in the store.
    key = static_key + (f":{trained_assembly(module)}" if module is not None else "")
    store_path = store_path or out / "verify.sqlite"
    with MeasurementStore(store_path) as store, open_agent(address, agent_options) as agent:
        info = agent.info()
        if info.device_id != table.device.device_id:  # another device: no table figure to check
            figures = measure_files(agent, [ModelFile.from_path(files[fmt], key)], SUBNET_KIND, settings,
                                    trials, store, progress=progress)
            if key not in figures:
                raise SearchError(f"the winner {files[fmt].name} was not measured on {address}; see "
                                  f"`lutnas measurements` in {store_path}")
            return Verification(info.device_id, table.device.device_id, settings.runtime, files[fmt],
                                float(predicted_ms), float(figures[key]), trials, float(figures[key]))
        return _verify_on_table_device(agent, info, space, table, config, files[fmt], key, static_key,
                                       float(predicted_ms), settings, trials, store, cache_root, progress,
                                       max_host_change)


def _verify_on_table_device(agent: DeviceAgent, info: Any, space: SearchSpace, table: LatencyTable,
                            config: SubnetConfig, path: Path, key: str, static_key: str,
                            predicted_ms: float, settings: RunSettings, trials: int,
                            store: MeasurementStore, cache_root: Path | None,
                            progress: Callable[..., None] | None,
                            max_host_change: float = HOST_REFUSE) -> Verification:
    """`verify_winner` on the table's device: winner (+ seeded twin) with the host check."""
    agent.check_settings(settings)
    check_cache_state(agent, settings)
    cache = ModelCache(cache_root)
    files = [ModelFile.from_path(path, key)]
    if key != static_key:
        static = export_subnet(space, config, format_for(settings.runtime, settings.precision), cache)
        files.append(ModelFile(static.path, static_key, static.sha256))
    finished = store.finished_keys(info.device_id, settings)
    if any(f.key not in finished for f in files):
        _measure_with_host_check(agent, info, table, space, [config], files, settings, trials, store,
                                 cache, ("search --verify-on",), progress)
    _check_pace_state(store, info.device_id, settings, table, [f.key for f in files])
    done = store.trial_medians(info.device_id, settings, [f.key for f in files], scales=pace_scales(table))
    if not done.get(key):
        raise SearchError(f"the winner {path.name} was not measured on {info.device_id}; see "
                          f"`lutnas measurements` in {store.path}")
    checks: list[HostCheck] = []
    ratios = _session_ratios(store, info.device_id, settings, table, [key], checks, max_host_change)
    ratio = ratios.get(key, 1.0)
    raw = figure_of(done[key])
    static_ms = figure_of(done[static_key]) / ratio if key != static_key and done.get(static_key) else None
    return Verification(info.device_id, table.device.device_id, settings.runtime, path, predicted_ms,
                        raw / ratio, trials, raw, checks[-1] if checks else None, static_ms)


# ---------------------------------------------------------------------- transfer to a device

def transfer_on_device(table_a: LatencyTable, address: str, samples: int, holdout: int = 0,
                       runtime: str | None = None, threads: int | None = None, trials: int = 5,
                       store_path: str | Path = "measurements.sqlite", seed: int = 0,
                       source: str = "", agent_options: AgentOptions | None = None) -> TransferResult:
    """Measure K blocks of A's table (spanning kinds and sizes) on the device at `address` (opened
    with `agent_options`), plus `holdout` others to report the error, and transfer A's table to it
    (`transfer_table`). Runtime and threads default to table A's."""
    chosen = choose_samples(table_a, samples, seed)
    settings = RunSettings(runtime=runtime or str(table_a.settings.get("runtime", "tflite")),
                           threads=int(threads or table_a.settings.get("threads") or 1))
    extra: list[BlockSpec] = []
    if holdout > 0:
        keys = {s.key for s in chosen}
        rest = [k for k in table_a.keys if k not in keys and not k.startswith("subnet:")]
        extra = [BlockSpec.parse(k) for k in random.Random(seed).sample(rest, min(holdout, len(rest)))]
    with open_agent(address, agent_options) as agent, MeasurementStore(store_path) as store:
        figures = store_measurer(agent, settings, trials, store)(list(chosen) + extra)
        info = agent.info()
    picked = {s.key: figures[s.key] for s in chosen if s.key in figures}
    heldout = pd.Series({s.key: figures[s.key] for s in extra if s.key in figures}, dtype=float)
    # Held-out blocks measured on B are measurements of B: the table keeps them, not predictions.
    return transfer_table(table_a, picked, heldout, info, settings, seed, source, keep_heldout=True)
