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

import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lutnas.device_agents.base import DeviceAgent, Measurement, ModelFile, RunSettings
from lutnas.device_agents.factory import AgentOptions, open_agent
from lutnas.errors import BadInputError, LutnasError
from lutnas.profiler.export import ModelCache, export_many, format_for
from lutnas.profiler.plan import make_plan
from lutnas.space import SearchSpace
from lutnas.tables.store import MeasurementStore, check_store_file, cv_of, figure_of

REFERENCE = "reference"


@dataclass(frozen=True)
class QualitySettings:
    """Quality-control knobs. Defaults: the issue's 5% CV bound; a drift bound of 25%. A 10% bound
    (above the <=3.6% within-process noise) discarded 567 of 687 trials of `tiny` on this 2-core
    host while other work ran; 25% still catches the 20-50%-slow processes of toolchain.md."""

    cv_bound: float = 0.05
    max_remeasure: int = 2
    reference_every: int = 8
    drift_bound: float = 0.25
    max_extra_attempts: int = 3  # failed or drift-discarded trials a key may add before it is given up
    batch_size: int = 64  # files per worker process: amortises its start (~0.3 s) over many blocks


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
    failed: list[str] = field(default_factory=list)  # keys without a single ok trial
    measurements: int = 0
    drift_events: int = 0
    discarded: int = 0
    cvs: list[float] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("figures_ms")
        cvs = sorted(self.cvs)
        data["cvs"] = None
        data["cv_median"] = statistics.median(cvs) if cvs else None
        data["cv_p90"] = cvs[min(len(cvs) - 1, round(0.9 * (len(cvs) - 1)))] if cvs else None
        return data


def _with_references(batch: list[str], reference: str, every: int) -> list[tuple[str, bool]]:
    """Blocks of `batch` with the reference before the first, after every `every`, and at the end."""
    order: list[tuple[str, bool]] = [(reference, True)]
    for i, key in enumerate(batch, 1):
        order.append((key, False))
        if i % every == 0 or i == len(batch):
            order.append((reference, True))
    return order


class _KeyLoop:
    """State of one device's measurement of a key set; see `measure_keys`."""

    def __init__(self, agent: DeviceAgent, files: dict[str, ModelFile], kinds: dict[str, str],
                 settings: RunSettings, trials: int, store: MeasurementStore, run_id: int,
                 qc: QualitySettings, progress: ProgressCallback | None, stop: threading.Event | None,
                 seed: int | None, label: str) -> None:
        self.agent, self.files, self.kinds, self.settings = agent, files, kinds, settings
        self.trials, self.store, self.run_id, self.qc = trials, store, run_id, qc
        self.progress, self.stop, self.label = progress, stop or threading.Event(), label
        self.rng = random.Random(seed)
        self.device_id = agent.info().device_id
        self.result = KeysResult(self.device_id)
        # A mid-cost block of the set, chosen the same way on every rerun so its history carries over.
        self.reference = sorted(files, key=lambda k: (files[k].path.stat().st_size, k))[len(files) // 2] \
            if files else ""
        self._last: tuple[int, int, int, float | None] = (0, len(files), 0, None)
        self.reference_history = store.reference_medians(self.device_id, settings, self.reference)

    def _emit(self, keys_done: int, total: int, expected: int, cv: float | None, message: str = "") -> None:
        self._last = (keys_done, total, expected, cv)
        if self.progress:
            self.progress(Progress(self.label, "measure", keys_done, total, self.result.measurements,
                                   expected, cv, message))

    def _say(self, message: str) -> None:
        self._emit(*self._last, message=message)

    def _allowance(self, key: str, remeasures: dict[str, int]) -> int:
        return self.qc.max_extra_attempts * (1 + remeasures.get(key, 0))

    def run(self) -> KeysResult:
        start = time.perf_counter()
        finished = self.store.finished_keys(self.device_id, self.settings)
        todo = [k for k in self.files if k not in finished]
        self.result.skipped = len(self.files) - len(todo)
        target = dict.fromkeys(todo, self.trials)
        remeasures = dict.fromkeys(todo, 0)
        self.remeasures = remeasures
        self.discards: dict[str, int] = {}
        open_keys = set(todo)
        total = len(self.files)
        round_index = 0
        last_cv: float | None = None
        try:
            while open_keys and not self.stop.is_set():
                medians = self.store.trial_medians(self.device_id, self.settings, open_keys)
                attempts = self.store.attempts(self.device_id, self.settings)
                # Failed and drift-discarded trials are retried, each within its own allowance,
                # so a file that always fails ends (as failed) and drift never starves a key.
                pending = [k for k in open_keys
                           if len(medians.get(k, [])) < target[k]
                           and attempts.get(k, 0) < target[k] + 2 * self._allowance(k, remeasures)]
                expected = self.result.measurements + sum(
                    max(0, target[k] - len(medians.get(k, []))) for k in pending)
                if pending:
                    self._emit(total - len(open_keys), total, expected, last_cv)
                    last_cv = self._trial(pending, round_index, attempts, medians, total - len(open_keys),
                                          total, expected) or last_cv
                    round_index += 1
                    continue
                # Every open key has its trials (or used up its attempts): quality control.
                for key in sorted(open_keys):
                    values = medians.get(key, [])
                    if not values:
                        self.result.failed.append(key)
                        open_keys.discard(key)
                        continue
                    # Judge the latest set of trials: a re-measurement is a fresh set in fresh
                    # processes, and one slow process in an earlier set must not condemn a key whose
                    # new set agrees (the figure still uses every trial median; their median shrugs
                    # off the outlier).
                    cv = cv_of(values[-self.trials:])
                    if cv is not None and cv > self.qc.cv_bound and remeasures[key] < self.qc.max_remeasure:
                        if remeasures[key] == 0:
                            self.result.re_measured += 1
                        remeasures[key] += 1
                        target[key] += self.trials
                        continue
                    if cv is not None and cv > self.qc.cv_bound:
                        flag = "never-settled"
                        self.result.flagged += 1
                    else:
                        flag = "re-measured" if remeasures[key] else "settled"
                    self.store.set_quality(self.device_id, self.settings, key, flag, cv, len(values),
                                           figure_of(values), self.run_id)
                    if cv is not None:
                        self.result.cvs.append(cv)
                    self.result.measured += 1
                    open_keys.discard(key)
                    self._emit(total - len(open_keys), total, self.result.measurements, cv)
        except KeyboardInterrupt:
            self.result.interrupted = True
        self.result.interrupted = self.result.interrupted or self.stop.is_set()
        figures = self.store.trial_medians(self.device_id, self.settings, self.files)
        self.result.figures_ms = {k: figure_of(v) for k, v in figures.items() if v}
        self.result.wall_s = time.perf_counter() - start
        return self.result

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
            stream = self.agent.measure_stream(files, self.settings, round_index)
            try:
                for (key, is_reference), measurement in zip(order, stream):
                    if self.stop.is_set():
                        break
                    if measurement.key != key:
                        raise LutnasError(f"the agent answered for {measurement.key!r} where "
                                          f"{key!r} was asked: results out of order")
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
                    if measurement.ok and measurement.median_ms is not None:
                        values = medians.setdefault(key, [])
                        values.append(measurement.median_ms)
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
            if self.discards.get(key, 0) < self._allowance(key, self.remeasures):
                self.discards[key] = self.discards.get(key, 0) + 1
                rows.append(row)
        if rows:
            self.store.set_status(rows, f"drift: reference {self.reference} moved beyond "
                                        f"{self.qc.drift_bound:.0%}")
            self.result.discarded += len(rows)

    def _reference_check(self, measurement: Measurement, round_index: int) -> bool:
        if not measurement.ok or measurement.median_ms is None:
            return False
        baseline = statistics.median(self.reference_history) if self.reference_history \
            else measurement.median_ms
        self.store.add_reference_check(self.run_id, self.device_id, self.settings, self.reference,
                                       round_index, measurement.median_ms, baseline)
        self.reference_history.append(measurement.median_ms)
        drift = measurement.median_ms / baseline - 1.0
        if abs(drift) > self.qc.drift_bound:
            self.result.drift_events += 1
            self._say(f"reference drifted {drift:+.0%}; re-measuring its neighbours")
            return True
        return False


def measure_keys(agent: DeviceAgent, files: dict[str, ModelFile], kinds: dict[str, str],
                 settings: RunSettings, trials: int, store: MeasurementStore, run_id: int,
                 qc: QualitySettings | None = None, progress: ProgressCallback | None = None,
                 stop: threading.Event | None = None, seed: int | None = None,
                 label: str | None = None) -> KeysResult:
    """Measure `files` (key -> file) on one device with the trial protocol, QC and resume."""
    if trials < 1:
        raise BadInputError(f"--trials must be at least 1, got {trials}")
    agent.check_settings(settings)
    loop = _KeyLoop(agent, files, kinds, settings, trials, store, run_id, qc or QualitySettings(),
                    progress, stop, seed, label or agent.info().device_id)
    return loop.run()


def measure_files(agent: DeviceAgent, files: Sequence[ModelFile], kind: str, settings: RunSettings,
                  trials: int, store: MeasurementStore, run_id: int | None = None,
                  qc: QualitySettings | None = None, progress: ProgressCallback | None = None,
                  stop: threading.Event | None = None) -> dict[str, float]:
    """Measure arbitrary model files (e.g. whole subnets, kind="subnet"); key -> median of trial medians.

    Keys already finished under these settings are not measured again. With `run_id=None` a run
    (space "files") is opened and closed around the measurement.
    """
    info = agent.info()
    store.upsert_device(info)
    own_run = run_id is None
    if own_run:
        run_id = store.start_run(info.device_id, settings, "files", kind, [])
    by_key = {f.key: f for f in files}
    result = measure_keys(agent, by_key, dict.fromkeys(by_key, kind), settings, trials, store,
                          int(run_id), qc, progress, stop)
    if own_run:
        store.finish_run(int(run_id), result.summary())
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


def run_profile(devices: Sequence[str | DeviceAgent], space: SearchSpace | str, settings: RunSettings,
                store_path: str | Path, *, trials: int = 5, granularity: str = "block",
                resolutions: Sequence[int] | None = None, limit: int | None = None,
                sample_fraction: float | None = None, seed: int = 0, cache: ModelCache | None = None,
                export_workers: int = 2, qc: QualitySettings | None = None,
                agent_options: AgentOptions | None = None, argv: Sequence[str] = (),
                progress: ProgressCallback | None = None,
                stop: threading.Event | None = None) -> ProfileSummary:
    """Profile a space on one or more devices; each device gets its own worker thread and run.

    Everything that can be refused (space, plan, settings on every device, the store) is checked
    before anything is exported or measured.
    """
    started = time.perf_counter()
    if not devices:
        raise BadInputError("give at least one --device")
    if trials < 1:
        raise BadInputError(f"--trials must be at least 1, got {trials}")
    space = space if isinstance(space, SearchSpace) else SearchSpace.load(space)
    plan = make_plan(space, resolutions, granularity, limit, sample_fraction, seed)
    store_path = Path(store_path)
    if not store_path.parent.is_dir():
        raise BadInputError(f"directory {store_path.parent} of store {store_path} does not exist; create it "
                            f"or pass another --store")
    check_store_file(store_path)  # read-only: refuse a foreign store before touching any device
    agents = list(_iter_agents(devices, agent_options))
    for agent in agents:
        agent.check_settings(settings)
    store = MeasurementStore(store_path)  # created only once every check passed
    infos = [agent.info() for agent in agents]
    ids = [info.device_id for info in infos]
    if len(set(ids)) != len(ids):
        raise BadInputError(f"the same device is given twice ({', '.join(ids)}); give each --device once")
    for info in infos:
        store.upsert_device(info)

    kinds = {spec.key: spec.kind for spec in plan.specs}
    done_everywhere = set(kinds)
    for info in infos:
        done_everywhere &= set(store.finished_keys(info.device_id, settings))
    to_export = [spec for spec in plan.specs if spec.key not in done_everywhere]
    cache = cache or ModelCache()
    fmt = format_for(settings.runtime, settings.precision)
    export_start = time.perf_counter()
    exported = 0

    def on_export(_entry: object) -> None:
        nonlocal exported
        exported += 1
        if progress:
            progress(Progress("export", "export", exported, len(to_export)))

    entries = export_many(to_export, fmt, cache, export_workers, on_export) if to_export else {}
    export_s = time.perf_counter() - export_start
    files = {key: ModelFile(e.path, key, e.sha256) for key, e in entries.items()}
    stop = stop or threading.Event()
    results: dict[str, KeysResult] = {}
    run_ids: dict[str, int] = {}
    errors: list[BaseException] = []

    def profile_one(agent: DeviceAgent, info_id: str, own_store: MeasurementStore) -> None:
        run_id = own_store.start_run(info_id, settings, space.name, granularity, list(argv))
        run_ids[info_id] = run_id
        try:
            # Keys finished on this device need no file; the loop skips them from the store anyway.
            device_files = {k: f for k, f in files.items()}
            result = measure_keys(agent, device_files, kinds, settings, trials, own_store, run_id, qc,
                                  progress, stop, seed=None, label=info_id)
            result.skipped += len(kinds) - len(device_files)
            results[info_id] = result
            own_store.finish_run(run_id, result.summary() | {"plan_keys": len(kinds)})
        except BaseException as exc:
            own_store.finish_run(run_id, {"error": str(exc) or type(exc).__name__})
            raise

    try:
        if len(agents) == 1:
            try:
                profile_one(agents[0], ids[0], store)
            except KeyboardInterrupt:
                stop.set()
        else:
            def thread_body(agent: DeviceAgent, info_id: str) -> None:
                own = MeasurementStore(store_path)
                try:
                    profile_one(agent, info_id, own)
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
    finally:
        for agent in agents:
            agent.close()
        store.close()
    for info_id in ids:
        results.setdefault(info_id, KeysResult(info_id, interrupted=True))
    return ProfileSummary(Path(store_path), len(kinds), len(to_export), export_s, results, run_ids,
                          time.perf_counter() - started)
