"""Store schema 3: the runner's facts beyond timings (statistic, delegation, partitions, peak memory,
runner flags) are columns; a schema-2 store is migrated in place on open, losing nothing."""

from __future__ import annotations

import json
import sqlite3
import zlib

import pandas as pd

from lutnas.device_agents.base import DeviceInfo, Measurement, RunnerInfo, RunSettings
from lutnas.tables.store import RUNNER_FACT_COLUMNS, SCHEMA_VERSION, MeasurementStore

GPU = RunSettings(runtime="tflite", threads=1, accelerator="gpu", warmup=1, runs=3)
DEVICE = DeviceInfo(device_id="phone-1", kind="android", model="sim")
KEY = "conv:hw=8,cin=3,cout=8,k=3,s=1,act=relu"

# The DDL lutnas wrote at schema 2 (verbatim): what a user's existing store holds.
SCHEMA_2_DDL = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, info_json TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL, runtime TEXT NOT NULL, threads INTEGER NOT NULL, core_mask TEXT NOT NULL,
    accelerator TEXT NOT NULL, precision TEXT NOT NULL DEFAULT 'fp32', settings_json TEXT NOT NULL,
    space TEXT NOT NULL, granularity TEXT NOT NULL,
    argv_json TEXT NOT NULL, hostname TEXT NOT NULL, pid INTEGER NOT NULL, lutnas_version TEXT NOT NULL,
    started REAL NOT NULL, finished REAL, summary_json TEXT
);
CREATE TABLE IF NOT EXISTS measurements (
    measurement_id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    device_id TEXT NOT NULL, runtime TEXT NOT NULL, threads INTEGER NOT NULL, core_mask TEXT NOT NULL,
    accelerator TEXT NOT NULL, precision TEXT NOT NULL DEFAULT 'fp32', key TEXT NOT NULL,
    kind TEXT NOT NULL, model_sha256 TEXT NOT NULL,
    runner_name TEXT NOT NULL, runner_version TEXT NOT NULL, runner_sha256 TEXT NOT NULL,
    warmup INTEGER NOT NULL, runs INTEGER NOT NULL, trial_index INTEGER NOT NULL,
    median_ms REAL, mean_ms REAL, std_ms REAL, min_ms REAL, p90_ms REAL,
    samples_f32 BLOB NOT NULL, operator_json TEXT, raw_output_zlib BLOB NOT NULL,
    temps_before_json TEXT NOT NULL, temps_after_json TEXT NOT NULL,
    freqs_before_json TEXT NOT NULL, freqs_after_json TEXT NOT NULL,
    timestamp REAL NOT NULL, status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_by_settings
    ON measurements (device_id, runtime, threads, core_mask, accelerator, precision, key);
CREATE TABLE IF NOT EXISTS quality (
    device_id TEXT NOT NULL, runtime TEXT NOT NULL, threads INTEGER NOT NULL, core_mask TEXT NOT NULL,
    accelerator TEXT NOT NULL, precision TEXT NOT NULL DEFAULT 'fp32', key TEXT NOT NULL,
    flag TEXT NOT NULL, cv REAL, trials INTEGER NOT NULL, median_ms REAL, run_id INTEGER,
    updated REAL NOT NULL,
    PRIMARY KEY (device_id, runtime, threads, core_mask, accelerator, precision, key)
);
CREATE TABLE IF NOT EXISTS reference_checks (
    check_id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL,
    device_id TEXT NOT NULL, runtime TEXT NOT NULL, threads INTEGER NOT NULL, core_mask TEXT NOT NULL,
    accelerator TEXT NOT NULL, precision TEXT NOT NULL DEFAULT 'fp32', key TEXT NOT NULL,
    trial_index INTEGER NOT NULL, median_ms REAL NOT NULL,
    baseline_ms REAL NOT NULL, drift REAL NOT NULL, timestamp REAL NOT NULL
);
"""


def _schema_2_store(path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_2_DDL)
    conn.executemany("INSERT INTO meta VALUES (?, ?)",
                     [("app", "lutnas-measurement-store"), ("schema_version", "2")])
    conn.execute("INSERT INTO devices VALUES (?, ?, 0, 0)", (DEVICE.device_id, json.dumps(DEVICE.to_dict())))
    identity = (DEVICE.device_id, "tflite", 1, "all", "gpu", "fp32")
    conn.execute("INSERT INTO runs (device_id, runtime, threads, core_mask, accelerator, precision, "
                 "settings_json, space, granularity, argv_json, hostname, pid, lutnas_version, started) "
                 "VALUES (?, ?, ?, ?, ?, ?, '{}', 'tiny', 'block', '[]', 'h', 1, '0', 0)", identity)
    for trial, median in enumerate((1.5, 1.7)):
        conn.execute(
            "INSERT INTO measurements (run_id, device_id, runtime, threads, core_mask, accelerator, "
            "precision, key, kind, model_sha256, runner_name, runner_version, runner_sha256, warmup, runs, "
            "trial_index, median_ms, samples_f32, raw_output_zlib, temps_before_json, temps_after_json, "
            "freqs_before_json, freqs_after_json, timestamp, status) VALUES (1, ?, ?, ?, ?, ?, ?, ?, "
            "'conv', 'ab', 'benchmark_model', '1', '', 1, 3, ?, ?, x'', ?, '{}', '{}', '{}', '{}', 0, 'ok')",
            (*identity, KEY, trial, median, zlib.compress(b"# lutnas: statistic=median peak_mem_mb=12\n")))
    conn.execute("INSERT INTO quality VALUES (?, ?, ?, ?, ?, ?, ?, 'settled', 0.01, 2, 1.6, 1, 0)",
                 (*identity, KEY))
    conn.commit()
    conn.close()


def _facts(**fields) -> Measurement:
    return Measurement(key=KEY, model_sha256="cd" * 32, trial_index=5,
                       runner=RunnerInfo("benchmark_model", "2"), median_ms=2.0, **fields)


def test_a_schema_2_store_is_migrated_in_place_and_keeps_its_rows(tmp_path) -> None:
    path = tmp_path / "v2.sqlite"
    _schema_2_store(path)
    with MeasurementStore(path) as store:
        assert SCHEMA_VERSION >= 3  # migrated through every later version too
        meta = dict(store._query("SELECT name, value FROM meta"))
        assert meta["schema_version"] == str(SCHEMA_VERSION)
        frame = store.measurements_frame()
        assert frame["median_ms"].tolist() == [1.5, 1.7] and frame["trial_index"].tolist() == [0, 1]
        for column in RUNNER_FACT_COLUMNS:  # not recorded then: missing, never a made-up value
            assert frame[column].isna().all(), column
        assert store.raw_output(int(frame["measurement_id"].iloc[0])).startswith("# lutnas: statistic=median")
        assert store.finished_keys(DEVICE.device_id, GPU) == {KEY: "settled"}
        assert store.trial_medians(DEVICE.device_id, GPU) == {KEY: [1.5, 1.7]}
        # new rows go next to the migrated ones, with their facts
        run = store.start_run(DEVICE.device_id, GPU, "tiny", "block", [])
        store.add_measurement(run, DEVICE.device_id, GPU, "conv",
                              _facts(statistic="median", delegated_nodes=12, total_nodes=40, partitions=3,
                                     peak_mem_mb=12.5, flags=["partial-delegation"]))
    with MeasurementStore(path) as reopened:  # a second open finds version 3 and leaves it be
        frame = reopened.measurements_frame()
        assert len(frame) == 3 and frame["statistic"].tolist()[:2] == [None, None]
        assert dict(reopened._query("SELECT name, value FROM meta"))["schema_version"] == str(SCHEMA_VERSION)


def test_runner_facts_round_trip_as_columns(tmp_path) -> None:
    store = MeasurementStore(tmp_path / "m.sqlite")
    run = store.start_run(DEVICE.device_id, GPU, "tiny", "block", [])
    store.add_measurement(run, DEVICE.device_id, GPU, "conv",
                          _facts(statistic="average", peak_mem_mb=138.809,
                                 flags=["average-as-median", "opaque-op-profile"]))
    store.add_measurement(run, DEVICE.device_id, GPU, "conv",
                          _facts(statistic="median", delegated_nodes=40, total_nodes=40, partitions=1))
    frame = store.measurements_frame(accelerator="gpu")
    assert frame["statistic"].tolist() == ["average", "median"]
    assert frame["runner_flags"].tolist() == ["average-as-median,opaque-op-profile", ""]
    assert frame["peak_mem_mb"].iloc[0] == 138.809 and pd.isna(frame["peak_mem_mb"].iloc[1])
    assert pd.isna(frame["delegated_nodes"].iloc[0]) and frame["delegated_nodes"].iloc[1] == 40
    assert (frame["total_nodes"].iloc[1], frame["partitions"].iloc[1]) == (40, 1)
    assert store.measurements_frame(accelerator="cpu").empty
    store.close()
