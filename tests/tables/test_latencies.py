"""Making tables: `LatencyTable.from_latencies`, `completed_with`, and the table <-> RunSettings
conversion (`run_settings`, `settings_from`), the one way each is done."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from lutnas.device_agents.base import DeviceInfo, RunSettings
from lutnas.errors import TableError
from lutnas.tables.frame import COLUMNS, UNRATED, make_frame
from lutnas.tables.table import LatencyTable

DEVICE = DeviceInfo("host-y", "host", "test")
KEY_A = "conv:hw=32,cin=3,cout=8,k=3,s=2,act=hswish"
KEY_B = "mbconv:hw=16,cin=8,cout=8,k=3,s=1,e=1,se=0,act=hswish"
KEY_C = "head:hw=2,cin=64,cmid=384,chid=128,ncls=10,act=hswish"
RUN = RunSettings(runtime="onnxruntime", threads=2, cores=(0, 2), warmup=3, runs=7)


def test_from_latencies_fills_every_column_from_medians_alone() -> None:
    table = LatencyTable.from_latencies({KEY_A: 0.2, KEY_B: 0.5}, DEVICE, RUN, "tiny")
    assert table.keys == [KEY_A, KEY_B] and list(table.frame.columns) == list(COLUMNS)
    row = table.frame.loc[KEY_B]
    assert row["median_ms"] == 0.5 and row["kind"] == "mbconv" and row["source"] == "measured"
    assert row["flag"] == UNRATED and row["trials"] == 0 and row["operator_ms"] is None
    assert math.isnan(row["mean_ms"]) and math.isnan(row["cv"])
    assert table.frame["trials"].dtype == "int64" and table.frame["median_ms"].dtype == "float64"
    assert table.correction is None and table.space == "tiny"
    assert table.settings == {"device_id": "host-y", "runtime": "onnxruntime", "threads": 2,
                              "core_mask": "0x5", "accelerator": "cpu", "warmup": 3, "runs": 7}


def test_from_latencies_accepts_rows_series_and_frames_alike() -> None:
    rows = {KEY_A: {"median_ms": 0.2, "std_ms": 0.01, "trials": 5, "flag": "settled",
                    "operator_ms": json.dumps({"CONV_2D": 0.15})},
            KEY_B: {"median_ms": 0.5}}
    settings = {"device_id": "host-y", "runtime": "tflite", "threads": 1, "core_mask": "all",
                "accelerator": "cpu"}
    from_rows = LatencyTable.from_latencies(rows, DEVICE, settings, source="imported:x")
    assert from_rows.frame.loc[KEY_A, "flag"] == "settled" and from_rows.frame.loc[KEY_B, "flag"] == UNRATED
    assert set(from_rows.frame["source"]) == {"imported:x"}
    assert json.loads(from_rows.frame.loc[KEY_A, "operator_ms"]) == {"CONV_2D": 0.15}
    from_frame = LatencyTable.from_latencies(from_rows.frame, DEVICE, settings)
    assert from_frame.frame.equals(from_rows.frame)
    series = pd.Series({KEY_A: 0.2, KEY_B: 0.5})
    assert LatencyTable.from_latencies(series, DEVICE, settings).latency_ms(KEY_B) == 0.5
    with_key_column = from_rows.frame.reset_index()
    assert LatencyTable.from_latencies(with_key_column, DEVICE, settings).frame.equals(from_rows.frame)


@pytest.mark.parametrize(("latencies", "message"), [
    ({KEY_A: {"median_ms": 0.2, "spread_ms": 0.1}}, "not table columns"),
    ({KEY_A: {"mean_ms": 0.2}}, "need a median_ms"),
    ({KEY_A: math.nan}, "no finite median_ms"),
    (pd.Series([0.1, 0.2], index=[KEY_A, KEY_A]), "given twice"),
])
def test_bad_latencies_are_refused_in_one_line(latencies: object, message: str) -> None:
    with pytest.raises(TableError, match=message) as error:
        LatencyTable.from_latencies(latencies, DEVICE, RUN)
    assert "\n" not in str(error.value)


def test_completed_with_fills_only_missing_keys_and_marks_them() -> None:
    measured = LatencyTable.from_latencies({KEY_A: {"median_ms": 0.2, "trials": 5}}, DEVICE, RUN,
                                           "tiny", {"note": "kept", "correction": {"scale": 1.0}})
    predicted = pd.DataFrame({"median_ms": [9.0, 0.4, 0.1], "std_ms": [0.0, 0.05, 0.01]},
                             index=[KEY_A, KEY_B, KEY_C])
    full = measured.completed_with(predicted, source="predicted:learned")
    assert full.keys == [KEY_A, KEY_B, KEY_C]
    assert full.latency_ms(KEY_A) == 0.2 and full.frame.loc[KEY_A, "trials"] == 5  # never replaced
    assert full.frame.loc[KEY_B, "source"] == "predicted:learned" and full.frame.loc[KEY_B, "std_ms"] == 0.05
    assert full.frame.loc[KEY_C, "kind"] == "head" and full.frame.loc[KEY_C, "trials"] == 0
    assert full.frame.loc[KEY_A, "source"] == "measured"
    assert full.settings == measured.settings and full.device == measured.device and full.space == "tiny"
    assert full.metadata == measured.metadata and full.metadata is not measured.metadata
    assert measured.keys == [KEY_A]  # the original is untouched
    same = full.completed_with({KEY_B: 1.0}, source="predicted:other")
    assert same.frame.equals(full.frame)


def test_completed_table_round_trips(tmp_path: Path) -> None:
    table = LatencyTable.from_latencies({KEY_A: 0.2}, DEVICE, RUN).completed_with(
        pd.Series({KEY_B: 0.4}), source="predicted:transfer")
    loaded = LatencyTable.load(table.save(tmp_path / "t.parquet"))
    assert loaded.frame.equals(table.frame)
    assert loaded.run_settings() == table.run_settings()


def test_run_settings_inverts_settings_from() -> None:
    table = LatencyTable.from_latencies({KEY_A: 0.2}, DEVICE, RUN)
    assert table.run_settings() == RUN
    assert LatencyTable.settings_from("host-y", table.run_settings()) == table.settings
    unpinned = LatencyTable.from_latencies({KEY_A: 0.2}, DEVICE, RunSettings(threads=4))
    assert unpinned.run_settings().cores is None and unpinned.settings["core_mask"] == "all"


def test_run_settings_keeps_defaults_for_mixed_counts_and_refuses_imported_tables() -> None:
    mixed = {"device_id": "host-y", "runtime": "tflite", "threads": 1, "core_mask": "0x1",
             "accelerator": "cpu", "warmup": [2, 10], "runs": 20}
    settings = LatencyTable.from_latencies({KEY_A: 0.2}, DEVICE, mixed).run_settings()
    assert settings == RunSettings(runtime="tflite", threads=1, cores=(0,), warmup=10, runs=20)
    imported = dict(mixed, runtime="unknown", threads=None, core_mask="unknown")
    with pytest.raises(TableError, match="no run settings"):
        LatencyTable.from_latencies({KEY_A: 0.2}, DEVICE, imported).run_settings()
    with pytest.raises(TableError, match="core mask 'x7'"):
        LatencyTable.from_latencies({KEY_A: 0.2}, DEVICE, dict(mixed, core_mask="x7")).run_settings()


def test_make_frame_fills_holes_left_by_concatenating_rows_of_two_origins() -> None:
    full = make_frame({KEY_A: {"median_ms": 0.2, "source": "measured", "kind": "conv", "trials": 3}})
    partial = make_frame(pd.Series({KEY_B: 0.4}), source="predicted:x")
    both = make_frame(pd.concat([full, partial.loc[:, ["median_ms"]]]), source="predicted:x")
    assert list(both["source"]) == ["measured", "predicted:x"]
    assert list(both["kind"]) == ["conv", "mbconv"] and list(both["trials"]) == [3, 0]
