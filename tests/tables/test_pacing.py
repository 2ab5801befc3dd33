"""Paced timing in the store and tables: figures in the pace model's unit, fixed by the first paced
run, so a host that runs everything slower in a later session gives the same figures."""

from __future__ import annotations

import pytest

from lutnas.device_agents.base import (
    CpuCluster,
    DeviceInfo,
    Measurement,
    RunnerInfo,
    RunSettings,
    check_cache_state,
)
from lutnas.errors import BadInputError, TableError
from lutnas.tables.store import MeasurementStore, paced_ms
from lutnas.tables.table import build_table

DEVICE = DeviceInfo(device_id="dev-1", kind="host", model="test cpu", cores=2,
                    clusters=(CpuCluster((0, 1), 3000000, 800000, "performance"),),
                    libraries={"onnxruntime": "1.0"})

PACED = RunSettings(runtime="onnxruntime", threads=1, warmup=2, runs=4, pace=True)
UNPACED = RunSettings(runtime="onnxruntime", threads=1, warmup=2, runs=4)
PACE = "ef" * 32


def _paced(key: str, median: float, pace: float | None, trial: int = 0) -> Measurement:
    m = Measurement(key=key, model_sha256="ab" * 32, trial_index=trial,
                    runner=RunnerInfo("onnxruntime", "1.0"), samples_ms=[median] * 3,
                    pace_ms=pace, pace_sha256=PACE if pace is not None else "")
    return m.fill_stats_from_samples()


def _run(store: MeasurementStore, settings: RunSettings, rows: list[tuple[str, float, float | None]]) -> int:
    run = store.start_run(DEVICE.device_id, settings, "tiny", "block", [])
    for trial, (key, median, pace) in enumerate(rows):
        store.add_measurement(run, DEVICE.device_id, settings, "conv", _paced(key, median, pace, trial))
    store.finish_run(run, {})
    return run


def test_paced_figures_cancel_a_host_that_slowed_down_between_sessions(tmp_path):
    with MeasurementStore(tmp_path / "s.sqlite") as store:
        store.upsert_device(DEVICE)
        # first session: the pace model ran at 0.1 ms; the block at 1.0 and, in a slow process, 1.5
        _run(store, PACED, [("conv:a", 1.0, 0.1), ("conv:a", 1.5, 0.15), ("conv:b", 0.5, 0.1)])
        # a later session on a host 40% slower: both the block and the pace model are 40% slower
        _run(store, PACED, [("conv:b", 0.7, 0.14), ("conv:b", 0.5, 0.1)])
        assert store.pace_scales(DEVICE.device_id, PACED) == {PACE: pytest.approx(0.1)}
        medians = store.trial_medians(DEVICE.device_id, PACED)
        assert medians["conv:a"] == pytest.approx([1.0, 1.0])  # the slow process cancels
        assert medians["conv:b"] == pytest.approx([0.5, 0.5, 0.5])  # so does the slower session
        # a table's own unit wins over the store's: whole models measured into another store
        assert store.trial_medians(DEVICE.device_id, PACED, ["conv:a"], scales={PACE: 0.2}) == \
            {"conv:a": pytest.approx([2.0, 2.0])}
        frame = store.measurements_frame()
        assert frame["raw_median_ms"].tolist() == pytest.approx([1.0, 1.5, 0.5, 0.7, 0.5])
        assert frame["median_ms"].tolist() == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.5])
        table = build_table(store)
        assert table.run_settings().pace is True
        assert table.metadata["pace_scales_ms"] == {PACE: pytest.approx(0.1)}
        assert table.latency_ms("conv:b") == pytest.approx(0.5)


def test_an_unpaced_trial_keeps_its_ms_and_unknown_scales_fall_back_to_raw():
    assert paced_ms(2.0, None, None, {PACE: 0.1}) == 2.0
    assert paced_ms(2.0, 0.2, "other", {PACE: 0.1}) == pytest.approx(2.0)
    assert paced_ms(2.0, 0.2, PACE, {PACE: 0.1}) == pytest.approx(1.0)


def test_a_trial_with_per_run_ratios_is_figured_by_them_and_older_rows_by_their_medians(tmp_path):
    assert paced_ms(2.0, 0.2, PACE, {PACE: 0.1}, pace_ratio=8.0) == pytest.approx(0.8)
    assert paced_ms(2.0, 0.2, PACE, {PACE: 0.1}, pace_ratio=float("nan")) == pytest.approx(1.0)
    assert paced_ms(2.0, None, None, {PACE: 0.1}, pace_ratio=8.0) == 2.0  # unpaced: raw ms
    with MeasurementStore(tmp_path / "s.sqlite") as store:
        store.upsert_device(DEVICE)
        run = store.start_run(DEVICE.device_id, PACED, "tiny", "block", [])
        old, new = _paced("conv:a", 1.0, 0.1, 0), _paced("conv:a", 1.0, 0.1, 1)
        new.pace_ratio = 11.0  # the runs, each against its own pace invoke
        for m in (old, new):
            store.add_measurement(run, DEVICE.device_id, PACED, "conv", m)
        store.finish_run(run, {})
        assert store.trial_medians(DEVICE.device_id, PACED)["conv:a"] == pytest.approx([1.0, 1.1])
        frame = store.measurements_frame()
        assert frame["median_ms"].tolist() == pytest.approx([1.0, 1.1])
        assert frame["pace_ratio"].isna().tolist() == [True, False]
        # a table says which keys mix the two statistics; a key with one statistic is not named
        store.add_measurement(run, DEVICE.device_id, PACED, "conv", _paced("conv:b", 1.0, 0.1, 0))
        assert build_table(store).metadata["mixed_pace_statistics"] == ["conv:a"]


def test_a_table_refuses_a_store_that_mixes_paced_and_unpaced_runs(tmp_path):
    with MeasurementStore(tmp_path / "s.sqlite") as store:
        store.upsert_device(DEVICE)
        _run(store, PACED, [("conv:a", 1.0, 0.1)])
        _run(store, UNPACED, [("conv:b", 1.0, None)])
        with pytest.raises(TableError, match="paced and unpaced.*--pace"):
            build_table(store)


def test_an_agent_that_runs_a_benchmark_binary_refuses_to_pace():
    from lutnas.device_agents.local import LocalAgent

    check_cache_state(LocalAgent(), PACED)  # lutnas's own loop paces

    class Binary(LocalAgent):
        can_pace = False

    with pytest.raises(BadInputError, match="cannot interleave a pace model; drop --pace"):
        check_cache_state(Binary(), PACED)
    with pytest.raises(BadInputError, match="pace must be true or false"):
        RunSettings(pace="yes")  # type: ignore[arg-type]


def test_profiling_refuses_to_add_the_other_side_of_pace_to_a_store(tmp_path):
    from lutnas.device_agents.local import host_info
    from lutnas.profiler.run import run_profile

    host = host_info()
    path = tmp_path / "s.sqlite"
    with MeasurementStore(path) as store:
        store.upsert_device(host)
        store.start_run(host.device_id, PACED, "tiny", "block", [])
    with pytest.raises(BadInputError, match="holds paced .* measuring unpaced into it would mix units"):
        run_profile(["local"], "tiny", UNPACED, path, trials=1, limit=1)


def test_whole_models_that_evict_the_pace_model_are_refused_not_fitted(tmp_path):
    """elasticvit at 128 px: the pace model took 0.255 ms after whole subnets, 0.135 after blocks."""
    from lutnas.errors import DeviceError
    from lutnas.profiler.subnets import _check_pace_state

    with MeasurementStore(tmp_path / "s.sqlite") as store:
        store.upsert_device(DEVICE)
        _run(store, PACED, [("conv:a", 1.0, 0.1), ("conv:b", 0.5, 0.1)])
        table = build_table(store)
        run = store.start_run(DEVICE.device_id, PACED, "tiny", "subnet", [])
        for trial, (key, pace) in enumerate([("subnet:ok", 0.104), ("subnet:big", 0.19)]):
            store.add_measurement(run, DEVICE.device_id, PACED, "subnet", _paced(key, 10.0, pace, trial))
        _check_pace_state(store, DEVICE.device_id, PACED, table, ["subnet:ok"])  # within 25%
        fixes = r".* --cache-state cold-llc .* without --pace"
        with pytest.raises(DeviceError, match=r"pace model ran x1\.90 " + fixes):
            _check_pace_state(store, DEVICE.device_id, PACED, table, ["subnet:big"])


def test_the_pace_state_is_not_refused_when_every_cache_is_flushed_before_the_pace(tmp_path):
    """cold-llc: a pace that starts from flushed caches carries no footprint; on 2026-12-02 it ran
    x1.5 after 128 px subnets as after 13 ms of sleep, the same for every subnet."""
    from lutnas.profiler.subnets import _check_pace_state

    cold = RunSettings(runtime="onnxruntime", threads=1, warmup=2, runs=4, pace=True, cache="cold-llc")
    with MeasurementStore(tmp_path / "s.sqlite") as store:
        store.upsert_device(DEVICE)
        _run(store, cold, [("conv:a", 1.0, 0.1), ("conv:b", 0.5, 0.1)])
        table = build_table(store)
        run = store.start_run(DEVICE.device_id, cold, "tiny", "subnet", [])
        store.add_measurement(run, DEVICE.device_id, cold, "subnet", _paced("subnet:big", 10.0, 0.19))
        _check_pace_state(store, DEVICE.device_id, cold, table, ["subnet:big"])  # x1.90, not refused
