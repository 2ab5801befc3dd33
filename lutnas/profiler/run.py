"""The profiling loop: plan -> export (cache) -> shuffled, interleaved trials -> measure -> QC -> store.

Why it is shaped this way (DESIGN.md, "Measurement rules"; numbers from toolchain.md):
- A trial is a pass over every pending key in a fresh shuffled order, cut into batches that each run
  in one fresh worker process: a process keeps its speed for its life (5-19% CV across processes,
  0.2-3.6% within one), so a key's trials must come from different processes, and shuffling keeps a
  slow process from always hitting the same neighbours.
- The figure of a key is the median of its trial medians; a key whose trial medians have a CV above
  `cv_bound` gets another `trials` trials (judged on that new set), up to `max_remeasure` times,
  then is flagged never-settled.
- A reference block opens each batch and recurs every `reference_every` blocks; when it drifts from
  its running median by more than `drift_bound`, the blocks measured next to it are marked "drift"
  (kept, but not used) and measured again in another process.
- Each measurement is committed as it arrives from the agent and resume counts what the store
  holds, so a `kill -9` loses at most the measurement in flight and a rerun finishes the job.
The loop speaks only the DeviceAgent contract, so a phone over ADB profiles the same way.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lutnas.device_agents.base import DeviceAgent, Measurement, ModelFile, RunSettings, check_cache_state
from lutnas.device_agents.factory import AgentOptions, open_agent
from lutnas.device_agents.policy import is_deterministic
from lutnas.errors import BadInputError, LutnasError
from lutnas.profiler.export import ModelCache, export_many, format_for, pace_file
from lutnas.profiler.plan import make_plan
from lutnas.space import BlockSpec, SearchSpace
from lutnas.tables.store import (
    MeasurementStore,
    check_store_file,
    ci_half_width,
    cv_of,
    figure_of,
    paced_ms,
    settings_identity,
)

REFERENCE = "reference"


@dataclass(frozen=True)
class QualitySettings:
    """Quality-control knobs: QC bounds the uncertainty of the figure, not the spread of trials.

    The figure of a key is the median of its trial medians; QC asks that the distribution-free 95%
    confidence interval of that median (`median_ci`) has a relative half-width under `ci_bound`,
    adding trials (up to `max_trials` per key, and `remeasure_time_factor` x the first pass's wall
    time in all) until it does. The trial-to-trial CV across fresh processes on this project's
    2-core VM was 0.4-2% (median over `elasticvit` 128 px blocks, warm) when it was quiet and 4-11%
    when its neighbours were busy, however many trials were taken (benchmarks/qc_flags.py,
    paced_estimator.py); the interval of the median shrinks as 1/sqrt(n).
    A key whose figure is within `resolution_steps` of the runner's time resolution is flagged
    "below-resolution" rather than chased. The drift bound (25%) tolerates the process-to-process
    spread and still catches the 20-50%-slow processes of toolchain.md; a drift must also exceed
    two resolution steps.
    """

    ci_bound: float = 0.02
    max_trials: int = 20
    remeasure_time_factor: float = 1.0  # extra trials may take at most this x the first pass ...
    min_remeasure_s: float = 30.0  # ... or this many seconds, whichever is longer
    resolution_steps: float = 5.0
    reference_every: int = 8
    drift_bound: float = 0.25
    max_extra_attempts: int = 3  # failed or drift-discarded trials a key may add before it is given up
    batch_size: int = 64  # files per worker process: amortises its start (~0.3 s) over many blocks

    def __post_init__(self) -> None:
        if not self.ci_bound > 0 or self.max_trials < 1:
            raise BadInputError(f"--ci-bound must be positive and --max-trials at least 1, got "
                                f"{self.ci_bound} and {self.max_trials}")


@dataclass
class Progress:
    """What a progress display needs; sent after every measurement and phase change."""

    device: str
    phase: str  # "export", "measure", "done"
    keys_done: int = 0
    keys_total: int = 0
    measurements_done: int = 0
    measurements_expected: int = 0
    current_cv: float | None = None
    message: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass
class KeysResult:
    """Outcome of measuring a set of keys on one device under one setting."""

    device_id: str
    figures_ms: dict[str, float] = field(default_factory=dict)
    measured: int = 0  # keys finished in this call
    skipped: int = 0  # keys already finished in the store
    re_measured: int = 0  # keys that needed more trials to settle (or were flagged)
    flagged: int = 0  # never-settled
    flagged_cvs: list[float] = field(default_factory=list)  # trial CVs of the never-settled keys
    below_resolution: int = 0  # within a few runner time steps: flagged, not chased
    failed: list[str] = field(default_factory=list)  # keys without a single ok trial
    first_error: str = ""  # "KEY: status" of the first failed trial (for the summary)
    measurements: int = 0
    drift_events: int = 0
    discarded: int = 0
    cvs: list[float] = field(default_factory=list)
    ci_half_widths: list[float] = field(default_factory=list)  # relative, of the figure (95%)
    resolution_ms: float | None = None  # the runner's time step, as seen in its samples
    interrupted: bool = False
    wall_s: float = 0.0

    def flagged_cv_median(self) -> float | None:
        """The (upper) median trial CV of the never-settled keys with a positive CV; None without."""
        cvs = sorted(cv for cv in self.flagged_cvs if cv > 0)
        return cvs[len(cvs) // 2] if cvs else None

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("figures_ms")
        for name, values in (("cv", sorted(self.cvs)), ("ci", sorted(self.ci_half_widths))):
            data[f"{name}_median"] = statistics.median(values) if values else None
            data[f"{name}_p90"] = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))] \
                if values else None
        data["flagged_cv_median"] = self.flagged_cv_median()
        data["cvs"] = data["ci_half_widths"] = data["flagged_cvs"] = None
        return data


def _with_references(batch: list[str], reference: str, every: int) -> list[tuple[str, bool]]:
    """Blocks of `batch` with the reference before the first, after every `every`, and at the end."""
    order: list[tuple[str, bool]] = [(reference, True)]
    for i, key in enumerate(batch, 1):
        order.append((key, False))
        if i % every == 0 or i == len(batch):
            order.append((reference, True))
    return order


def _choose_reference(files: dict[str, ModelFile]) -> str:
    """A block at the 90th percentile of file size, chosen the same way on every rerun so its
    history carries over: big enough to sit well above a runner's time resolution (a phone runner
    printing 10 us steps makes a 20 us block "drift" by 50%), not so big that it dominates."""
    if not files:
        return ""
    ordered = sorted(files, key=lambda k: (files[k].path.stat().st_size, k))
    return ordered[min(len(ordered) - 1, (9 * len(ordered)) // 10)]


def _time_step(samples: Sequence[float]) -> float | None:
    """Smallest positive gap between distinct samples (ms): the runner's resolution, or a multiple."""
    distinct = sorted(set(samples))
    gaps = [b - a for a, b in zip(distinct, distinct[1:]) if b - a > 1e-9]
    return min(gaps) if gaps else None


class _KeyLoop:
    """State of one device's measurement of a key set; see `measure_keys`."""

    def __init__(self, agent: DeviceAgent, files: dict[str, ModelFile], kinds: dict[str, str],
                 settings: RunSettings, trials: int, store: MeasurementStore, run_id: int,
                 qc: QualitySettings, progress: ProgressCallback | None, stop: threading.Event | None,
                 seed: int | None, label: str, pace: ModelFile | None = None) -> None:
        self.agent, self.files, self.kinds, self.settings = agent, files, kinds, settings
        self.pace = pace
        self.fixed_scales: dict[str, float] = {}  # pace units set by earlier runs: they never move
        self.trials, self.store, self.run_id, self.qc = trials, store, run_id, qc
        self.max_trials = max(qc.max_trials, trials)
        self.progress, self.stop, self.label = progress, stop or threading.Event(), label
        self.rng = random.Random(seed)
        self.device_id = agent.info().device_id
        self.result = KeysResult(self.device_id)
        self.reference = _choose_reference(files)
        self._last: tuple[int, int, int, float | None] = (0, len(files), 0, None)
        self.reference_history = store.reference_medians(self.device_id, settings, self.reference)
        self.target: dict[str, int] = {}
        self.rounds: dict[str, int] = {}  # QC rounds of extra trials per key
        self.discards: dict[str, int] = {}
        self.will_repeat: set[str] = set()  # keys whose failure will repeat: never retried
        self.qc_started: float | None = None
        self.qc_budget_s = qc.min_remeasure_s

    def _emit(self, keys_done: int, total: int, expected: int, cv: float | None, message: str = "") -> None:
        self._last = (keys_done, total, expected, cv)
        if self.progress:
            self.progress(Progress(self.label, "measure", keys_done, total, self.result.measurements,
                                   expected, cv, message))

    def _say(self, message: str) -> None:
        self._emit(*self._last, message=message)

    def _allowance(self, key: str) -> int:
        return self.qc.max_extra_attempts * (1 + self.rounds.get(key, 0))

    def _open_keys(self) -> set[str]:
        """Keys to (re)measure: unfinished ones, and finished ones with fewer ok trials than asked
        (`--trials 20` on a store measured with 5 adds the 15 missing)."""
        finished = self.store.finished_keys(self.device_id, self.settings)
        have = self.store.trial_medians(self.device_id, self.settings, self.files)
        todo = [k for k in self.files
                if k not in finished or 0 < len(have.get(k, [])) < self.trials]
        self.result.skipped = len(self.files) - len(todo)
        self.target = dict.fromkeys(todo, self.trials)
        return set(todo)

    def _pending(self, open_keys: set[str], medians: dict[str, list[float]],
                 attempts: dict[str, int]) -> list[str]:
        # Failed and drift-discarded trials are retried, each within its own allowance, so a file
        # that always fails ends (as failed) and drift never starves a key.
        return [k for k in open_keys
                if len(medians.get(k, [])) < self.target[k]
                and attempts.get(k, 0) < self.target[k] + 2 * self._allowance(k)
                and k not in self.will_repeat]

    def run(self) -> KeysResult:
        start = time.perf_counter()
        open_keys = self._open_keys()
        total = len(self.files)
        round_index = 0
        last_cv: float | None = None
        try:
            while open_keys and not self.stop.is_set():
                medians = self.store.trial_medians(self.device_id, self.settings, open_keys)
                attempts = self.store.attempts(self.device_id, self.settings)
                pending = self._pending(open_keys, medians, attempts)
                if pending:
                    expected = self.result.measurements + sum(
                        max(0, self.target[k] - len(medians.get(k, []))) for k in pending)
                    self._emit(total - len(open_keys), total, expected, last_cv)
                    last_cv = self._trial(pending, round_index, attempts, medians, total - len(open_keys),
                                          total, expected) or last_cv
                    round_index += 1
                    continue
                if self.qc_started is None:  # the first pass is done: QC may take as long again
                    self.qc_started = time.perf_counter()
                    self.qc_budget_s = max(self.qc.min_remeasure_s,
                                           self.qc.remeasure_time_factor * (self.qc_started - start))
                for key in sorted(open_keys):
                    if self._judge(key, medians.get(key, [])):
                        open_keys.discard(key)
                        self._emit(total - len(open_keys), total, self.result.measurements, last_cv)
        except KeyboardInterrupt:
            self.result.interrupted = True
        self.result.interrupted = self.result.interrupted or self.stop.is_set()
        figures = self.store.trial_medians(self.device_id, self.settings, self.files)
        self.result.figures_ms = {k: figure_of(v) for k, v in figures.items() if v}
        self.result.wall_s = time.perf_counter() - start
        return self.result

    def _judge(self, key: str, values: list[float]) -> bool:
        """QC of one key with all its trials; True when it is finished (quality stored)."""
        if not values:
            self.result.failed.append(key)
            return True
        figure, cv, half = figure_of(values), cv_of(values), ci_half_width(values)
        resolution = self.result.resolution_ms
        if resolution and figure < self.qc.resolution_steps * resolution:
            flag = "below-resolution"
            self.result.below_resolution += 1
        elif half is None or half <= self.qc.ci_bound:  # a single trial asked for: no interval
            flag = "re-measured" if self.rounds.get(key) else "settled"
        elif len(values) < self.max_trials and self._time_left():
            if not self.rounds.get(key):
                self.result.re_measured += 1
            self.rounds[key] = self.rounds.get(key, 0) + 1
            self.target[key] = min(self.max_trials, len(values) + self.trials)
            return False
        else:
            flag = "never-settled"
            self.result.flagged += 1
            if cv is not None:
                self.result.flagged_cvs.append(cv)
        self.store.set_quality(self.device_id, self.settings, key, flag, cv, len(values), figure,
                               self.run_id)
        if cv is not None:
            self.result.cvs.append(cv)
        if half is not None:
            self.result.ci_half_widths.append(half)
        self.result.measured += 1
        return True

    def _time_left(self) -> bool:
        return self.qc_started is None or time.perf_counter() - self.qc_started < self.qc_budget_s

    def _trial(self, pending: list[str], round_index: int, attempts: dict[str, int],
               medians: dict[str, list[float]], keys_done: int, total: int, expected: int) -> float | None:
        """One shuffled pass over `pending`, batch by batch, each batch in a fresh worker."""
        self.rng.shuffle(pending)
        size = max(1, self.qc.batch_size)
        last_cv = None
        for start in range(0, len(pending), size):
            if self.stop.is_set():
                break
            order = _with_references(pending[start:start + size], self.reference,
                                     max(1, self.qc.reference_every))
            files = [self.files[k] for k, _ in order]
            segment: list[tuple[int, str]] = []
            previous_drifted = False
            stream = self.agent.measure_stream(files, self.settings, round_index, self.pace)
            try:
                for (key, is_reference), measurement in zip(order, stream):
                    if self.stop.is_set():
                        break
                    if measurement.key != key:
                        raise LutnasError(f"the agent answered for {measurement.key!r} where "
                                          f"{key!r} was asked: results out of order")
                    self._note_resolution(measurement)
                    if is_reference:
                        drifted = self._reference_check(measurement, round_index)
                        if drifted or previous_drifted:
                            self._discard(segment, medians)
                        previous_drifted, segment = drifted, []
                        continue
                    measurement.trial_index = attempts.get(key, 0)
                    attempts[key] = attempts.get(key, 0) + 1
                    row = self.store.add_measurement(self.run_id, self.device_id, self.settings,
                                                     self.kinds[key], measurement)
                    self.result.measurements += 1
                    segment.append((row, key))
                    if not measurement.ok:
                        self.result.first_error = self.result.first_error or f"{key}: {measurement.status}"
                        if is_deterministic(measurement.status):
                            self.will_repeat.add(key)
                    if measurement.ok and measurement.median_ms is not None:
                        values = medians.setdefault(key, [])
                        values.append(self._figure(measurement))
                        last_cv = cv_of(values) if len(values) > 1 else last_cv
                    self._emit(keys_done, total, expected, last_cv)
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()
        return last_cv

    def _discard(self, segment: list[tuple[int, str]], medians: dict[str, list[float]]) -> None:
        """Mark a drifted segment's measurements unused, within each key's discard allowance."""
        rows = []
        for row, key in segment:
            if self.discards.get(key, 0) < self._allowance(key):
                self.discards[key] = self.discards.get(key, 0) + 1
                rows.append(row)
        if rows:
            self.store.set_status(rows, f"drift: reference {self.reference} moved beyond "
                                        f"{self.qc.drift_bound:.0%}")
            self.result.discarded += len(rows)

    def _figure(self, measurement: Measurement) -> float:
        """The trial's median in the store's units: paced ones through the store's pace scale
        (read from the store until it is fixed by an earlier run, then kept)."""
        if measurement.pace_ms is None:
            return float(measurement.median_ms or 0.0)
        scales = self.fixed_scales
        if measurement.pace_sha256 not in scales:
            units = self.store.pace_units(self.device_id, self.settings)
            scales = {sha: scale for sha, (_, scale) in units.items()}
            self.fixed_scales = {sha: scale for sha, (run, scale) in units.items() if run != self.run_id}
        return paced_ms(float(measurement.median_ms or 0.0), measurement.pace_ms,
                        measurement.pace_sha256, scales, measurement.pace_ratio)

    def _reference_check(self, measurement: Measurement, round_index: int) -> bool:
        if not measurement.ok or measurement.median_ms is None:
            return False
        value = self._figure(measurement)
        baseline = statistics.median(self.reference_history) if self.reference_history else value
        self.store.add_reference_check(self.run_id, self.device_id, self.settings, self.reference,
                                       round_index, value, baseline)
        self.reference_history.append(value)
        drift = value / baseline - 1.0
        # A move of a step or two of the runner's clock is no drift: the reference must move by the
        # bound and by more than two resolution steps (a 10 us runner on a 30 us block reads +-33%).
        step = self.result.resolution_ms or 0.0
        if abs(drift) > self.qc.drift_bound and abs(value - baseline) > 2 * step:
            self.result.drift_events += 1
            self._say(f"reference drifted {drift:+.0%}; re-measuring its neighbours")
            return True
        return False

    def _note_resolution(self, measurement: Measurement) -> None:
        step = _time_step(measurement.samples_ms or [])
        if step is not None and (self.result.resolution_ms is None or step < self.result.resolution_ms):
            self.result.resolution_ms = step


def measure_keys(agent: DeviceAgent, files: dict[str, ModelFile], kinds: dict[str, str],
                 settings: RunSettings, trials: int, store: MeasurementStore, run_id: int,
                 qc: QualitySettings | None = None, progress: ProgressCallback | None = None,
                 stop: threading.Event | None = None, seed: int | None = None,
                 label: str | None = None, cache: ModelCache | None = None) -> KeysResult:
    """Measure `files` (key -> file) on one device with the trial protocol, QC and resume; with
    `settings.pace`, against the pace model (exported into `cache` if not there yet)."""
    if trials < 1:
        raise BadInputError(f"--trials must be at least 1, got {trials}")
    agent.check_settings(settings)
    check_cache_state(agent, settings)
    pace = pace_file(settings.runtime, settings.precision, cache or ModelCache()) if settings.pace else None
    loop = _KeyLoop(agent, files, kinds, settings, trials, store, run_id, qc or QualitySettings(),
                    progress, stop, seed, label or agent.info().device_id, pace)
    return loop.run()


def measure_files(agent: DeviceAgent, files: Sequence[ModelFile], kind: str, settings: RunSettings,
                  trials: int, store: MeasurementStore, run_id: int | None = None,
                  qc: QualitySettings | None = None, progress: ProgressCallback | None = None,
                  stop: threading.Event | None = None, kinds: Mapping[str, str] | None = None,
                  cache: ModelCache | None = None) -> dict[str, float]:
    """Measure arbitrary model files (e.g. whole subnets, kind="subnet"); key -> median of trial medians.

    `kinds` gives some keys another stored kind than `kind` (the host check next to subnets).

    Keys already finished under these settings are not measured again. With `run_id=None` a run
    (space "files") is opened and closed around the measurement. Ctrl-C or SIGTERM during it
    raises KeyboardInterrupt once the measurements taken are stored (the run marked interrupted),
    so a caller never fits or saves from a part of its trials.
    """
    info = agent.info()
    store.upsert_device(info)
    own_run = run_id is None
    if own_run:
        run_id = store.start_run(info.device_id, settings, "files", kind, [])
    by_key = {f.key: f for f in files}
    stored_kinds = {k: (kinds or {}).get(k, kind) for k in by_key}
    result = measure_keys(agent, by_key, stored_kinds, settings, trials, store, int(run_id), qc,
                          progress, stop, cache=cache)
    if own_run:
        store.finish_run(int(run_id), result.summary())
    # The loop turns an interrupt into a flag (profile-device reports it); here a caller would go on
    # to calibrate, evaluate or pick the next adaptive batch from partial figures: raise it again.
    # A `stop` set by another device's thread is that caller's to handle, not an interrupt.
    if result.interrupted and not (stop is not None and stop.is_set()):
        raise KeyboardInterrupt
    return {k: v for k, v in result.figures_ms.items() if k in by_key}


@dataclass
class ProfileSummary:
    store: Path
    plan_keys: int
    exported: int
    export_s: float
    devices: dict[str, KeysResult]
    run_ids: dict[str, int]
    wall_s: float

    @property
    def interrupted(self) -> bool:
        return any(r.interrupted for r in self.devices.values())


def _iter_agents(devices: Sequence[str | DeviceAgent], options: AgentOptions | None) -> Iterator[DeviceAgent]:
    for device in devices:
        yield open_agent(device, options) if isinstance(device, str) else device


def _check_store_path(store_path: Path) -> None:
    if not store_path.parent.is_dir():
        raise BadInputError(f"directory {store_path.parent} of store {store_path} does not exist; create it "
                            f"or pass another --store")
    check_store_file(store_path)  # read-only: refuse a foreign store before touching any device


def _register_devices(agents: Sequence[DeviceAgent], settings: RunSettings,
                      store: MeasurementStore) -> list[str]:
    ids = [agent.info().device_id for agent in agents]
    if len(set(ids)) != len(ids):
        raise BadInputError(f"the same device is given twice ({', '.join(ids)}); give each --device once")
    _check_one_cache_state(store, ids, settings)
    for agent in agents:
        store.upsert_device(agent.info())
    return ids


def _check_one_cache_state(store: MeasurementStore, ids: Sequence[str], settings: RunSettings) -> None:
    """BadInputError when the store already holds measurements of one of `ids` with the same
    settings but another timing loop: another cache state (RunSettings.cache; a cold-L2 block is
    ~13 % slower, benchmarks/results/lut_gap.json) or the other side of --pace (paced figures are in
    the pace model's unit). Resume would count those keys finished, and a table refuses the mix."""
    runs = store.runs_frame()
    if runs.empty:
        return
    for device_id in ids:
        identity = settings_identity(device_id, settings)
        for row in runs.itertuples(index=False):
            mine = (row.device_id, row.runtime, int(row.threads), row.core_mask, row.accelerator,
                    row.precision)
            if mine != identity:
                continue
            other = str((row.settings or {}).get("cache") or "warm")
            if other != settings.cache:
                raise BadInputError(f"the store holds {device_id} measurements with --cache-state {other} "
                                    f"(run {row.run_id}); measuring --cache-state {settings.cache} into it "
                                    f"would mix cache states: give another --store")
            if bool((row.settings or {}).get("pace")) != settings.pace:
                was, now = ("paced", "unpaced") if settings.pace is False else ("unpaced", "paced")
                raise BadInputError(f"the store holds {was} {device_id} measurements (run {row.run_id}); "
                                    f"measuring {now} into it would mix units: give another --store")


def _export_plan(specs: Sequence[BlockSpec], ids: Sequence[str], settings: RunSettings, trials: int,
                 store: MeasurementStore, cache: ModelCache, workers: int,
                 progress: ProgressCallback | None) -> tuple[dict[str, ModelFile], int, float]:
    """Files of every key some device still needs (unfinished, or fewer trials than asked)."""
    done_everywhere = {spec.key for spec in specs}
    for device_id in ids:
        finished = store.finished_keys(device_id, settings)
        have = store.trial_medians(device_id, settings, done_everywhere)
        done_everywhere &= {k for k in finished if not 0 < len(have.get(k, [])) < trials}
    to_export = [spec for spec in specs if spec.key not in done_everywhere]
    fmt = format_for(settings.runtime, settings.precision)
    start = time.perf_counter()
    count = 0

    def on_export(_entry: object) -> None:
        nonlocal count
        count += 1
        if progress:
            progress(Progress("export", "export", count, len(to_export)))

    if progress and to_export:  # the bar starts with the export, not at its first file
        progress(Progress("export", "export", 0, len(to_export)))
    entries = export_many(to_export, fmt, cache, workers, on_export) if to_export else {}
    files = {key: ModelFile(e.path, key, e.sha256) for key, e in entries.items()}
    return files, len(to_export), time.perf_counter() - start


def _run_devices(agents: Sequence[DeviceAgent], ids: Sequence[str], store: MeasurementStore,
                 store_path: Path, body: Callable[[DeviceAgent, str, MeasurementStore], None],
                 stop: threading.Event) -> None:
    """`body` for every device: in this thread for one, else a thread each with its own store
    connection; Ctrl-C (or one device's error) stops them all, the first error is raised."""
    if len(agents) == 1:
        try:
            body(agents[0], ids[0], store)
        except KeyboardInterrupt:
            stop.set()
        return
    errors: list[BaseException] = []

    def thread_body(agent: DeviceAgent, info_id: str) -> None:
        own = MeasurementStore(store_path)
        try:
            body(agent, info_id, own)
        except KeyboardInterrupt:
            stop.set()
        except BaseException as exc:  # reported after the other devices stop
            errors.append(exc)
            stop.set()
        finally:
            own.close()

    threads = [threading.Thread(target=thread_body, args=(a, i), name=f"profile-{i}", daemon=True)
               for a, i in zip(agents, ids)]
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(timeout=0.2)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def run_profile(devices: Sequence[str | DeviceAgent], space: SearchSpace | str, settings: RunSettings,
                store_path: str | Path, *, trials: int = 5, granularity: str = "block",
                resolutions: Sequence[int] | None = None, limit: int | None = None,
                sample_fraction: float | None = None, seed: int = 0, cache: ModelCache | None = None,
                export_workers: int = 2, qc: QualitySettings | None = None,
                agent_options: AgentOptions | None = None, argv: Sequence[str] = (),
                progress: ProgressCallback | None = None,
                stop: threading.Event | None = None,
                specs: Sequence[BlockSpec] | None = None) -> ProfileSummary:
    """Profile a space on one or more devices; each device gets its own worker thread and run.

    `specs` replaces the plan (e.g. the blocks of chosen subnets). Everything that can be refused
    (space, plan, settings on every device, the store) is checked before anything is exported or
    measured. BadInputError for bad arguments or the same device twice.
    """
    started = time.perf_counter()
    if not devices:
        raise BadInputError("give at least one --device")
    if trials < 1:
        raise BadInputError(f"--trials must be at least 1, got {trials}")
    space = space if isinstance(space, SearchSpace) else SearchSpace.load(space)
    plan_specs = tuple(specs) if specs is not None else \
        make_plan(space, resolutions, granularity, limit, sample_fraction, seed).specs
    store_path = Path(store_path)
    _check_store_path(store_path)
    with contextlib.ExitStack() as closing:  # every agent opened is closed, whatever raises
        agents = []
        for agent in _iter_agents(devices, agent_options):
            closing.callback(agent.close)
            agents.append(agent)
        for agent in agents:
            agent.check_settings(settings)
            check_cache_state(agent, settings)
        store = MeasurementStore(store_path)  # created only once every check passed
        closing.callback(store.close)
        return _profile_devices(agents, store, store_path, space, settings, plan_specs, trials,
                                granularity, cache, export_workers, qc, argv, progress, stop, started)


def _profile_devices(agents: list[DeviceAgent], store: MeasurementStore, store_path: Path,
                     space: SearchSpace, settings: RunSettings, plan_specs: Sequence[BlockSpec],
                     trials: int, granularity: str, cache: ModelCache | None, export_workers: int,
                     qc: QualitySettings | None, argv: Sequence[str], progress: ProgressCallback | None,
                     stop: threading.Event | None, started: float) -> ProfileSummary:
    """`run_profile` once its agents and store are open (the caller closes them): export the plan,
    then one run per device, in a thread each when there are several."""
    ids = _register_devices(agents, settings, store)
    kinds = {spec.key: spec.kind for spec in plan_specs}
    stop = stop or threading.Event()
    results: dict[str, KeysResult] = {}
    run_ids: dict[str, int] = {}

    def profile_one(agent: DeviceAgent, info_id: str, own_store: MeasurementStore) -> None:
        run_id = own_store.start_run(info_id, settings, space, granularity, list(argv))  # keeps its YAML
        run_ids[info_id] = run_id
        try:
            result = measure_keys(agent, files, kinds, settings, trials, own_store, run_id, qc,
                                  progress, stop, seed=None, label=info_id, cache=cache)
            # Keys finished everywhere have no file: the loop never saw them.
            result.skipped += len(kinds) - len(files)
            results[info_id] = result
            own_store.finish_run(run_id, result.summary() | {"plan_keys": len(kinds)})
        except BaseException as exc:
            own_store.finish_run(run_id, {"error": str(exc) or type(exc).__name__})
            raise

    cache = cache or ModelCache()
    files, exported, export_s = _export_plan(plan_specs, ids, settings, trials, store, cache,
                                             export_workers, progress)
    _run_devices(agents, ids, store, store_path, profile_one, stop)
    for info_id in ids:
        results.setdefault(info_id, KeysResult(info_id, interrupted=True))
    return ProfileSummary(Path(store_path), len(kinds), exported, export_s, results, run_ids,
                          time.perf_counter() - started)
