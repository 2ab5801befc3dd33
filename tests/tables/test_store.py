"""The SQLite measurement store: round trips, refusals that never modify a file, concurrent writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from lutnas.device_agents.base import CpuCluster, DeviceInfo, Measurement, RunnerInfo, RunSettings
from lutnas.errors import StoreError
from lutnas.tables.store import FRAME_COLUMNS, QUALITY_COLUMNS, MeasurementStore

SETTINGS = RunSettings(runtime="onnxruntime", threads=1, cores=(0,), warmup=2, runs=4)
DEVICE = DeviceInfo(device_id="dev-1", kind="host", model="test cpu", cores=2,
                    clusters=(CpuCluster((0, 1), 3000000, 800000, "performance"),),
                    libraries={"onnxruntime": "1.0"})


def _measurement(key: str, samples: list[float], trial: int = 0, status: str = "ok") -> Measurement:
    m = Measurement(key=key, model_sha256="ab" * 32, trial_index=trial,
                    runner=RunnerInfo("onnxruntime", "1.0", "cd" * 32), samples_ms=samples,
                    operator_ms={"Conv": 0.5}, raw_output="runner said: hello " * 20, status=status)
    return m.fill_stats_from_samples()


def _filled_store(path):
    store = MeasurementStore(path)
    store.upsert_device(DEVICE)
    run = store.start_run("dev-1", SETTINGS, "tiny", "block", ["--space", "tiny"])
    for i in range(20):
        store.add_measurement(run, "dev-1", SETTINGS, "conv", _measurement(f"conv:k={i}", [1.0, 2.0, 3.0]))
    store.close()
    return path


def test_measurements_round_trip_with_samples_operators_and_raw_output(tmp_path):
    store = MeasurementStore(tmp_path / "m.sqlite")
    store.upsert_device(DEVICE)
    assert store.device_info("dev-1") == DEVICE and store.devices() == [DEVICE]
    run = store.start_run("dev-1", SETTINGS, "tiny", "block", ["a"])
    m = _measurement("conv:hw=8", [0.25, 0.5, 0.125, 1.0], trial=2)
    row = store.add_measurement(run, "dev-1", SETTINGS, "conv", m)
    store.add_measurement(run, "dev-1", SETTINGS, "conv", _measurement("conv:hw=8", [], status="error: x"))
    frame = store.measurements_frame(device_id="dev-1")
    assert list(frame.columns) == FRAME_COLUMNS and len(frame) == 1
    got = frame.iloc[0]
    assert got.samples_ms == [0.25, 0.5, 0.125, 1.0] and got.operator_ms == {"Conv": 0.5}
    assert got.median_ms == m.median_ms and got.trial_index == 2 and got.core_mask == "0x1"
    assert got.runner_sha256 == "cd" * 32 and got.measurement_id == row
    assert store.raw_output(row) == m.raw_output
    assert len(store.measurements_frame(ok_only=False)) == 2
    assert store.measurements_frame(kinds=["attn"]).empty
    assert len(store.measurements_frame(keys=["conv:hw=8"], runtime="onnxruntime", threads=1)) == 1
    store.finish_run(run, {"measured": 1})
    runs = store.runs_frame()
    assert runs.iloc[0].summary == {"measured": 1} and runs.iloc[0].measurements == 2


def test_quality_upserts_and_rejects_unknown_flags(tmp_path):
    store = MeasurementStore(tmp_path / "m.sqlite")
    store.set_quality("dev-1", SETTINGS, "conv:a", "re-measured", 0.07, 10)
    store.set_quality("dev-1", SETTINGS, "conv:a", "never-settled", 0.09, 15)
    frame = store.quality_frame(device_id="dev-1")
    assert list(frame.columns) == QUALITY_COLUMNS
    assert frame[["flag", "trials"]].values.tolist() == [["never-settled", 15]]
    assert store.finished_keys("dev-1", SETTINGS) == {"conv:a": "never-settled"}
    assert store.finished_keys("dev-1", RunSettings(runtime="onnxruntime", threads=2, cores=(0,))) == {}
    with pytest.raises(StoreError, match="flag"):
        store.set_quality("dev-1", SETTINGS, "conv:a", "fine", 0.0, 1)


def _snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _refused(path, match):
    before = _snapshot(path.parent)
    with pytest.raises(StoreError, match=match) as info:
        MeasurementStore(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert _snapshot(path.parent) == before  # not a byte changed, no -wal/-shm left behind


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n" * 50)
    _refused(path, "not an SQLite file")


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (name TEXT, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('app', 'someone else')")
    conn.commit()
    conn.close()
    _refused(path, "not a lutnas measurement store")


def test_a_corrupt_store_is_refused_untouched(tmp_path):
    path = _filled_store(tmp_path / "m.sqlite")
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    data[4096:len(data) - 100] = b"\xa5" * (len(data) - 4196)  # every page after the first is garbage
    path.write_bytes(bytes(data))
    _refused(path, "corrupt")


def test_a_store_of_a_newer_schema_is_refused_untouched(tmp_path):
    path = _filled_store(tmp_path / "m.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    _refused(path, "newer")


def test_a_store_in_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        MeasurementStore(tmp_path / "no" / "such" / "m.sqlite")
    assert not (tmp_path / "no").exists()


WRITER = textwrap.dedent("""
    import sys
    from lutnas.device_agents.base import Measurement, RunnerInfo, RunSettings
    from lutnas.tables.store import MeasurementStore
    path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    settings = RunSettings(runtime="onnxruntime")
    store = MeasurementStore(path)
    run = store.start_run("dev-" + name, settings, "tiny", "block", [])
    for i in range(count):
        m = Measurement(key=f"conv:{name}:{i}", model_sha256="0", trial_index=0,
                        runner=RunnerInfo("x", "1"), samples_ms=[float(i), 1.0]).fill_stats_from_samples()
        store.add_measurement(run, "dev-" + name, settings, "conv", m)
        store.set_quality("dev-" + name, settings, f"conv:{name}:{i}", "settled", 0.0, 1)
    store.finish_run(run, {"measured": count})
""")


def test_two_processes_writing_one_store_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"
    count = 150
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(count)])
               for name in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    store = MeasurementStore(path)
    frame = store.measurements_frame()
    assert len(frame) == 2 * count and frame["measurement_id"].is_unique
    for name in ("a", "b"):
        keys = set(frame[frame.device_id == f"dev-{name}"]["key"])
        assert keys == {f"conv:{name}:{i}" for i in range(count)}
    assert len(store.quality_frame()) == 2 * count
    assert store.runs_frame()["finished"].notna().all()


def test_trials_with_and_without_operator_breakdown_read_back(tmp_path):
    store = MeasurementStore(tmp_path / "m.sqlite")
    store.upsert_device(DEVICE)
    run = store.start_run("dev-1", SETTINGS, "tiny", "block", ["a"])
    with_ops = _measurement("conv:hw=8", [1.0, 2.0], trial=0)
    without_ops = _measurement("conv:hw=8", [1.5, 2.5], trial=1)
    without_ops.operator_ms = None
    store.add_measurement(run, "dev-1", SETTINGS, "conv", with_ops)
    store.add_measurement(run, "dev-1", SETTINGS, "conv", without_ops)
    frame = store.measurements_frame(device_id="dev-1").sort_values("trial_index")
    assert list(frame.operator_ms) == [{"Conv": 0.5}, None]
