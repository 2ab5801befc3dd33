"""The profiling loop: trial protocol, QC re-measure, drift, resume, several devices, measure_files.

The loop is driven through the DeviceAgent contract; a scripted agent (a simulated device whose
speed per process is set by the test) makes the QC and drift paths deterministic, and the real
LocalAgent runs the same loop on real exported blocks.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from lutnas.device_agents.base import (
    DeviceAgent,
    DeviceInfo,
    Measurement,
    ModelFile,
    RunnerInfo,
    RunSettings,
)
from lutnas.device_agents.local import LocalAgent
from lutnas.errors import BadInputError
from lutnas.profiler.export import ModelCache, export_many
from lutnas.profiler.plan import make_plan
from lutnas.profiler.run import QualitySettings, measure_files, measure_keys, run_profile
from lutnas.tables.store import MeasurementStore

SETTINGS = RunSettings(runtime="onnxruntime", warmup=1, runs=3)


class ScriptedDevice(DeviceAgent):
    """A simulated device: key latency = base[key] * speed of the process (one factor per batch)."""

    def __init__(self, device_id: str, base_ms: dict[str, float], speeds: Sequence[float] = (),
                 noisy: dict[str, list[float]] | None = None) -> None:
        self.device_id, self.base_ms, self.speeds = device_id, base_ms, list(speeds)
        self.noisy = {k: list(v) for k, v in (noisy or {}).items()}
        self.batches: list[list[str]] = []

    def info(self) -> DeviceInfo:
        return DeviceInfo(device_id=self.device_id, kind="simulated", model="scripted")

    def measure_batch(self, files: Sequence[ModelFile], settings: RunSettings,
                      trial_index: int) -> list[Measurement]:
        speed = self.speeds.pop(0) if self.speeds else 1.0
        self.batches.append([f.key for f in files])
        out = []
        for f in files:
            scale = self.noisy[f.key].pop(0) if self.noisy.get(f.key) else 1.0
            value = self.base_ms[f.key] * speed * scale
            out.append(Measurement(f.key, f.sha256, trial_index, RunnerInfo("scripted", "1"),
                                   samples_ms=[value] * settings.runs).fill_stats_from_samples())
        return out


@pytest.fixture()
def keyed_files(tmp_path) -> dict[str, ModelFile]:
    files = {}
    for i in range(6):
        path = tmp_path / f"block{i}.bin"
        path.write_bytes(b"x" * (100 + i))
        files[f"conv:k={i}"] = ModelFile.from_path(path, f"conv:k={i}")
    return files


def _base(files):
    return {k: 1.0 + i for i, k in enumerate(sorted(files))}


def test_trials_are_shuffled_interleaved_and_the_figure_is_the_median_of_trial_medians(tmp_path, keyed_files):
    base = _base(keyed_files)
    agent = ScriptedDevice("sim", base)
    store = MeasurementStore(tmp_path / "m.sqlite")
    run = store.start_run("sim", SETTINGS, "t", "block", [])
    result = measure_keys(agent, keyed_files, dict.fromkeys(keyed_files, "conv"), SETTINGS, 4, store, run,
                          QualitySettings(reference_every=100), seed=3)
    assert result.measured == 6 and result.flagged == 0 and not result.failed
    orders = [[k for k in batch[1:-1]] for batch in agent.batches]  # strip the reference checks
    assert len(orders) == 4 and all(sorted(o) == sorted(keyed_files) for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # each trial has its own order
    frame = store.measurements_frame(device_id="sim")
    assert frame.groupby("key").size().tolist() == [4] * 6
    assert sorted(frame.groupby("key")["trial_index"].apply(list).iloc[0]) == [0, 1, 2, 3]
    for key, figure in result.figures_ms.items():
        assert figure == statistics.median(frame[frame.key == key]["median_ms"])
        assert figure == pytest.approx(base[key])
    assert set(store.quality_frame()["flag"]) == {"settled"}


def test_unsettled_keys_are_re_measured_then_flagged(tmp_path, keyed_files):
    base = _base(keyed_files)
    steady, wobbly, hopeless = sorted(keyed_files)[:3]
    noisy = {wobbly: [1.0, 1.5, 1.0] + [1.0] * 30, hopeless: [1.0, 1.5] * 20}
    agent = ScriptedDevice("sim", base, noisy=noisy)
    store = MeasurementStore(tmp_path / "m.sqlite")
    run = store.start_run("sim", SETTINGS, "t", "block", [])
    qc = QualitySettings(ci_bound=0.05, max_trials=9, reference_every=100)
    result = measure_keys(agent, keyed_files, dict.fromkeys(keyed_files, "conv"), SETTINGS, 3, store, run, qc)
    flags = dict(store.quality_frame()[["key", "flag"]].values)
    trials = store.measurements_frame().groupby("key").size()
    assert flags[steady] == "settled" and trials[steady] == 3
    # QC bounds the interval of the median: up to 6 trials it is the range, so one slow trial keeps
    # it wide; at 9 the order statistics x(2)..x(8) leave the outlier out.
    assert flags[wobbly] == "re-measured" and trials[wobbly] == 9
    assert flags[hopeless] == "never-settled" and trials[hopeless] == 9  # 3 + 2 rounds of 3
    assert result.re_measured == 2 and result.flagged == 1


def test_a_drifting_reference_discards_and_re_measures_its_neighbours(tmp_path, keyed_files):
    base = _base(keyed_files)
    # Batches are processes: the third one runs 40% slow, as a slow process does.
    agent = ScriptedDevice("sim", base, speeds=[1.0, 1.0, 1.4, 1.0, 1.0])
    store = MeasurementStore(tmp_path / "m.sqlite")
    run = store.start_run("sim", SETTINGS, "t", "block", [])
    qc = QualitySettings(ci_bound=0.05, drift_bound=0.10, reference_every=3)
    result = measure_keys(agent, keyed_files, dict.fromkeys(keyed_files, "conv"), SETTINGS, 3, store, run, qc)
    assert result.drift_events == 3 and result.discarded == 6
    everything = store.measurements_frame(ok_only=False)
    assert (everything["status"].str.startswith("drift")).sum() == 6
    assert result.flagged == 0 and result.re_measured == 0
    for key, figure in result.figures_ms.items():
        assert figure == pytest.approx(base[key])  # the slow process left no trace in the figures


def test_resume_after_a_stop_measures_only_what_is_missing(tmp_path, keyed_files):
    base = _base(keyed_files)
    store = MeasurementStore(tmp_path / "m.sqlite")
    stop = threading.Event()
    taken = []

    def stop_after_eight(event):
        taken.append(event.measurements_done)
        if event.measurements_done >= 8:
            stop.set()

    qc = QualitySettings(reference_every=100, batch_size=4)
    run = store.start_run("sim", SETTINGS, "t", "block", [])
    first = measure_keys(ScriptedDevice("sim", base), keyed_files, dict.fromkeys(keyed_files, "conv"),
                         SETTINGS, 3, store, run, qc, progress=stop_after_eight, stop=stop)
    assert first.interrupted and first.measurements == 8
    run2 = store.start_run("sim", SETTINGS, "t", "block", [])
    second = measure_keys(ScriptedDevice("sim", base), keyed_files, dict.fromkeys(keyed_files, "conv"),
                          SETTINGS, 3, store, run2, qc)
    assert not second.interrupted and second.measured == 6 and second.measurements == 18 - 8
    assert store.measurements_frame().groupby("key").size().tolist() == [3] * 6
    third = measure_keys(ScriptedDevice("sim", base), keyed_files, dict.fromkeys(keyed_files, "conv"),
                         SETTINGS, 3, store, run2, qc)
    assert third.skipped == 6 and third.measurements == 0


def test_measure_files_stores_subnets_and_skips_them_next_time(tmp_path, tiny_space):
    configs = [tiny_space.smallest(), tiny_space.largest()]
    from lutnas.profiler.export import export_subnet, subnet_key

    cache = ModelCache()
    files = [ModelFile(e.path, subnet_key(tiny_space, c), e.sha256)
             for c in configs for e in [export_subnet(tiny_space, c, "onnx", cache)]]
    store = MeasurementStore(tmp_path / "m.sqlite")
    agent = LocalAgent()
    figures = measure_files(agent, files, "subnet", SETTINGS, 2, store)
    assert set(figures) == {f.key for f in files} and all(v > 0 for v in figures.values())
    frame = store.measurements_frame(kinds=["subnet"])
    assert len(frame) >= 4 and set(frame["key"]) == set(figures)
    again = measure_files(agent, files, "subnet", SETTINGS, 2, store)
    assert again == figures and len(store.measurements_frame(kinds=["subnet"])) == len(frame)


def test_an_interrupt_during_measure_files_is_raised_after_its_measurements_are_stored(tmp_path, keyed_files):
    # Calibrate, evaluate and adaptive profiling go on from what measure_files returns: an interrupt
    # the loop turned into a flag must reach them, or they fit and save from part of the trials.
    store = MeasurementStore(tmp_path / "m.sqlite")

    def ctrl_c_after_five(event):
        if event.measurements_done >= 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        measure_files(ScriptedDevice("sim", _base(keyed_files)), list(keyed_files.values()), "conv",
                      SETTINGS, 3, store, qc=QualitySettings(reference_every=100),
                      progress=ctrl_c_after_five)
    assert len(store.measurements_frame()) == 5  # every measurement taken is kept
    assert store.runs_frame().iloc[0].summary["interrupted"] is True
    # A stop set by another device's thread is the caller's to handle: what is stored, no exception.
    stop = threading.Event()
    stop.set()
    figures = measure_files(ScriptedDevice("sim", _base(keyed_files)), list(keyed_files.values()), "conv",
                            SETTINGS, 3, store, stop=stop)
    stored = store.measurements_frame()
    assert len(stored) == 5 and set(figures) == set(stored["key"])


def test_several_devices_profile_in_parallel_each_into_its_own_rows(tmp_path, tiny_space):
    plan = make_plan(tiny_space, limit=3, seed=2)
    keys = [s.key for s in plan.specs]
    phones = [ScriptedDevice(f"phone-{i}", {k: 1.0 + i for k in keys}) for i in range(2)]
    summary = run_profile(phones, tiny_space, SETTINGS, tmp_path / "m.sqlite", trials=2, limit=3, seed=2,
                          qc=QualitySettings(reference_every=100), export_workers=1)
    assert not summary.interrupted and set(summary.devices) == {"phone-0", "phone-1"}
    store = MeasurementStore(tmp_path / "m.sqlite")
    frame = store.measurements_frame()
    for i in range(2):
        rows = frame[frame.device_id == f"phone-{i}"]
        assert set(rows["key"]) == set(keys) and len(rows) == 2 * len(keys)
        assert (rows["median_ms"] == 1.0 + i).all()
    assert len(store.runs_frame()) == 2 and len(store.devices()) == 2


def test_the_same_device_twice_is_refused(tmp_path, tiny_space):
    with pytest.raises(BadInputError, match="twice"):
        run_profile([ScriptedDevice("x", {}), ScriptedDevice("x", {})], tiny_space, SETTINGS,
                    tmp_path / "m.sqlite", limit=1)


def test_local_profile_of_real_blocks(tmp_path, tiny_space):
    summary = run_profile(["local"], tiny_space, SETTINGS, Path(tmp_path / "m.sqlite"), trials=2, limit=3,
                          seed=5, export_workers=1)
    (result,) = summary.devices.values()
    assert result.measured + len(result.failed) == 3 and not result.failed
    entries = export_many(make_plan(tiny_space, limit=3, seed=5).specs, "onnx", ModelCache(), workers=1)
    frame = MeasurementStore(tmp_path / "m.sqlite").measurements_frame()
    assert set(frame["key"]) == set(entries)
    assert set(frame["model_sha256"]) == {e.sha256 for e in entries.values()}


def test_the_interval_of_the_median_is_the_binomial_order_statistics():
    from lutnas.tables.store import ci_half_width, median_ci

    assert median_ci([float(v) for v in range(1, 11)]) == (2.0, 9.0)  # P(x2 <= m <= x9) = 97.9%
    assert median_ci([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)  # below 6 trials: the range
    assert median_ci([1.0]) is None and ci_half_width([1.0]) is None
    assert ci_half_width([1.0] * 20) == 0.0


def test_the_trials_a_bound_needs_give_intervals_of_that_width():
    import numpy as np

    from lutnas.tables.store import MIN_CI_TRIALS, ci_half_width, trials_for_half_width

    rng = np.random.default_rng(0)
    for cv, bound in ((0.05, 0.02), (0.04, 0.02), (0.10, 0.05)):
        n = trials_for_half_width(cv, bound)
        widths = [ci_half_width(list(rng.normal(1.0, cv, n))) for _ in range(2000)]
        # median_ci's own interval at that n: within the bound, by at most ~15% (discreteness)
        assert 0.85 * bound < float(np.median(widths)) <= 1.03 * bound, (cv, bound, n)
    assert trials_for_half_width(0.05, 0.02) == 42  # the large-sample formula says 38
    assert trials_for_half_width(0.001, 0.02) == MIN_CI_TRIALS  # no 95% interval below it
    assert trials_for_half_width(0.2, 0.005) > 6000  # beyond 400: the large-sample formula
    with pytest.raises(ValueError):
        trials_for_half_width(0.0, 0.02)


def test_more_trials_than_a_finished_key_has_adds_the_missing_ones(tmp_path, keyed_files):
    agent = ScriptedDevice("sim", _base(keyed_files))
    store = MeasurementStore(tmp_path / "m.sqlite")
    kinds = dict.fromkeys(keyed_files, "conv")
    qc = QualitySettings(reference_every=100)
    measure_keys(agent, keyed_files, kinds, SETTINGS, 3, store,
                 store.start_run("sim", SETTINGS, "t", "b", []), qc)
    more = measure_keys(agent, keyed_files, kinds, SETTINGS, 5, store,
                        store.start_run("sim", SETTINGS, "t", "b", []), qc)
    assert more.skipped == 0 and more.measurements == 12
    assert store.measurements_frame().groupby("key").size().tolist() == [5] * 6
    again = measure_keys(agent, keyed_files, kinds, SETTINGS, 5, store,
                         store.start_run("sim", SETTINGS, "t", "b", []), qc)
    assert again.skipped == 6 and again.measurements == 0


def test_re_measurement_is_bounded_in_time(tmp_path, keyed_files):
    hopeless = sorted(keyed_files)[0]
    agent = ScriptedDevice("sim", _base(keyed_files), noisy={hopeless: [1.0, 1.5] * 50})
    store = MeasurementStore(tmp_path / "m.sqlite")
    qc = QualitySettings(ci_bound=0.05, max_trials=100, min_remeasure_s=0.0, remeasure_time_factor=0.0,
                         reference_every=100)
    result = measure_keys(agent, keyed_files, dict.fromkeys(keyed_files, "conv"), SETTINGS, 3, store,
                          store.start_run("sim", SETTINGS, "t", "b", []), qc)
    assert result.flagged == 1 and result.measurements == 18  # no time left: flagged, not chased


class QuantizedDevice(ScriptedDevice):
    """A runner that prints times in 10 us steps (the simulated phone's benchmark_model)."""

    def measure_batch(self, files, settings, trial_index):
        out = super().measure_batch(files, settings, trial_index)
        for m in out:
            m.samples_ms = [round(v / 0.01) * 0.01 + 0.01 * (i % 2) for i, v in enumerate(m.samples_ms)]
            m.fill_stats_from_samples()
        return out


def test_a_block_within_a_few_runner_steps_is_flagged_and_the_reference_ignores_single_steps(
        tmp_path, keyed_files):
    base = _base(keyed_files)
    tiny_key = sorted(keyed_files)[0]
    base[tiny_key] = 0.02
    reference = sorted(keyed_files)[-1]
    base[reference] = 0.03  # a reference near the resolution would "drift" 33% on one step
    agent = QuantizedDevice("sim", base, speeds=[1.0, 1.0, 1.0])
    store = MeasurementStore(tmp_path / "m.sqlite")
    qc = QualitySettings(ci_bound=0.05, drift_bound=0.10, reference_every=2)
    result = measure_keys(agent, keyed_files, dict.fromkeys(keyed_files, "conv"), SETTINGS, 3, store,
                          store.start_run("sim", SETTINGS, "t", "b", []), qc)
    flags = dict(store.quality_frame()[["key", "flag"]].values)
    assert result.resolution_ms == pytest.approx(0.01)
    assert flags[tiny_key] == "below-resolution" and result.below_resolution == 2  # reference too
    assert result.drift_events == 0 and result.flagged == 0
