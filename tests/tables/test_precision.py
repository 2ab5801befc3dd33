"""Precision (fp32 | fp16 | int8) is part of a measurement's identity: stored, filtered, never mixed."""

from __future__ import annotations

import json
import re
import sqlite3
import zlib

import pytest

from lutnas.device_agents.base import DeviceInfo, Measurement, RunnerInfo, RunSettings
from lutnas.errors import BadInputError, TableError
from lutnas.tables.diff import carry_over, diff_tables
from lutnas.tables.store import _SCHEMA, SCHEMA_VERSION, MeasurementStore
from lutnas.tables.table import LatencyTable, build_table

FP32 = RunSettings(runtime="tflite", threads=1, cores=(0,), warmup=1, runs=3)
INT8 = RunSettings(runtime="tflite", threads=1, cores=(0,), warmup=1, runs=3, precision="int8")
DEVICE = DeviceInfo(device_id="host-p", kind="host", model="test cpu", cores=2)
KEYS = ("conv:hw=8,cin=3,cout=8,k=3,s=1,act=relu", "conv:hw=8,cin=8,cout=8,k=3,s=1,act=relu")


def _measurement(key: str, ms: float, trial: int) -> Measurement:
    m = Measurement(key=key, model_sha256="ab" * 32, trial_index=trial,
                    runner=RunnerInfo("ai_edge_litert", "2.3.0"), samples_ms=[ms, ms * 1.01, ms * 0.99])
    return m.fill_stats_from_samples()


def _store_with_both(path) -> MeasurementStore:
    """One device, two keys, three trials each at fp32 (1 ms, 2 ms) and at int8 (a third of that)."""
    store = MeasurementStore(path)
    store.upsert_device(DEVICE)
    for settings, scale in ((FP32, 1.0), (INT8, 1 / 3)):
        run = store.start_run(DEVICE.device_id, settings, "tiny", "block", ["profile-device"])
        for trial in range(3):
            for i, key in enumerate(KEYS):
                store.add_measurement(run, DEVICE.device_id, settings, "conv",
                                      _measurement(key, (i + 1) * scale, trial))
        for key in KEYS:
            store.set_quality(DEVICE.device_id, settings, key, "settled", 0.01, 3)
    return store


def test_run_settings_validate_precision_once() -> None:
    assert RunSettings().precision == "fp32" and INT8.to_dict()["precision"] == "int8"
    with pytest.raises(BadInputError, match="--precision fp32 or fp16 or int8"):
        RunSettings(precision="int4")


def test_store_keeps_precisions_apart(tmp_path) -> None:
    store = _store_with_both(tmp_path / "m.sqlite")
    fp32, int8 = (store.trial_medians(DEVICE.device_id, s) for s in (FP32, INT8))
    assert [len(v) for v in fp32.values()] == [3, 3] and [len(v) for v in int8.values()] == [3, 3]
    assert int8[KEYS[1]][0] == pytest.approx(fp32[KEYS[1]][0] / 3)
    assert store.attempts(DEVICE.device_id, INT8) == {KEYS[0]: 3, KEYS[1]: 3}
    assert len(store.finished_keys(DEVICE.device_id, INT8)) == 2  # quality rows of both coexist
    assert set(store.quality_frame(precision="int8")["precision"]) == {"int8"}
    assert set(store.measurements_frame()["precision"]) == {"fp32", "int8"}
    assert list(store.runs_frame()["precision"]) == ["fp32", "int8"]


def test_build_table_refuses_mixed_precisions_and_filters_by_one(tmp_path) -> None:
    store = _store_with_both(tmp_path / "m.sqlite")
    with pytest.raises(TableError, match="--precision fp32 or int8"):
        build_table(store)
    fp32 = build_table(store, precision="fp32")
    int8 = build_table(store, precision="int8")
    # an fp32 table's settings stay as before precision existed; an int8 one names it
    assert "precision" not in fp32.settings and fp32.precision == "fp32"
    assert int8.settings["precision"] == "int8" and int8.precision == "int8"
    assert int8.run_settings() == INT8 and fp32.run_settings() == FP32
    assert "precision=int8" in int8.describe_settings()
    assert int8.frame.loc[KEYS[1], "median_ms"] == pytest.approx(2 / 3)
    assert (int8.frame["flag"] == "settled").all()
    path = int8.save(tmp_path / "int8.parquet")
    assert LatencyTable.load(path).precision == "int8"


def test_diff_compares_fp32_with_int8_of_one_device(tmp_path) -> None:
    store = _store_with_both(tmp_path / "m.sqlite")
    fp32, int8 = build_table(store, precision="fp32"), build_table(store, precision="int8")
    result = diff_tables(fp32, int8)
    assert len(result.per_key) == 2 and result.per_kind.loc["conv", "ratio_of_sums"] == pytest.approx(1 / 3)
    assert carry_over(fp32, int8).settings_changed == ["precision"]


def _v1_store(path) -> None:
    """A store as lutnas wrote it before precision (schema 1), with one measurement and its flag."""
    schema = re.sub(r"precision TEXT NOT NULL DEFAULT 'fp32',\s*", "", _SCHEMA).replace(", precision", "")
    schema = re.sub(r",\s*statistic TEXT.*?runner_flags TEXT", "", schema, flags=re.S)  # schema 3's
    conn = sqlite3.connect(path)
    conn.executescript(schema)
    conn.executemany("INSERT INTO meta VALUES (?, ?)",
                     [("app", "lutnas-measurement-store"), ("schema_version", "1")])
    conn.execute("INSERT INTO devices VALUES (?, ?, 0, 0)", (DEVICE.device_id, json.dumps(DEVICE.to_dict())))
    identity = (DEVICE.device_id, "tflite", 1, "0x1", "cpu")
    conn.execute("INSERT INTO runs (device_id, runtime, threads, core_mask, accelerator, settings_json, "
                 "space, granularity, argv_json, hostname, pid, lutnas_version, started) VALUES "
                 "(?, ?, ?, ?, ?, '{}', 'tiny', 'block', '[]', 'h', 1, '0', 0)", identity)
    conn.execute("INSERT INTO measurements (run_id, device_id, runtime, threads, core_mask, accelerator, "
                 "key, kind, model_sha256, runner_name, runner_version, runner_sha256, warmup, runs, "
                 "trial_index, median_ms, samples_f32, raw_output_zlib, temps_before_json, temps_after_json, "
                 "freqs_before_json, freqs_after_json, timestamp, status) VALUES (1, ?, ?, ?, ?, ?, ?, "
                 "'conv', 'ab', 'r', '1', '', 1, 3, 0, 1.5, x'', ?, '{}', '{}', '{}', '{}', 0, 'ok')",
                 (*identity, KEYS[0], zlib.compress(b"")))
    conn.execute("INSERT INTO quality VALUES (?, ?, ?, ?, ?, ?, 'settled', 0.01, 1, 1.5, 1, 0)",
                 (*identity, KEYS[0]))
    conn.commit()
    conn.close()


def test_a_version_1_store_is_migrated_with_its_rows_as_fp32(tmp_path) -> None:
    path = tmp_path / "old.sqlite"
    _v1_store(path)
    store = MeasurementStore(path)
    assert SCHEMA_VERSION >= 2  # migrated through every version to the current one
    assert store.trial_medians(DEVICE.device_id, FP32) == {KEYS[0]: [1.5]}
    assert store.finished_keys(DEVICE.device_id, FP32) == {KEYS[0]: "settled"}
    assert store.trial_medians(DEVICE.device_id, INT8) == {}
    store.set_quality(DEVICE.device_id, INT8, KEYS[0], "settled", 0.02, 3)  # new key includes precision
    assert len(store.quality_frame()) == 2
    store.close()
    reopened = MeasurementStore(path)  # a second open finds the current version and leaves it be
    meta = dict(reopened._query("SELECT name, value FROM meta"))
    assert meta["schema_version"] == str(SCHEMA_VERSION) and build_table(reopened).precision == "fp32"
