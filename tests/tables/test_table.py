"""Building latency tables from a real MeasurementStore filled with synthetic measurements.

Synthetic numbers are fine here: what is tested is the table math (median of trial medians, spread
over trials, quality flags, operator breakdowns) and the refusal to mix settings.
"""

from __future__ import annotations

import json
import statistics
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from lutnas.device_agents.base import RunSettings
from lutnas.errors import SpaceFileError, TableError
from lutnas.space import SearchSpace
from lutnas.tables.store import MeasurementStore
from lutnas.tables.table import UNRATED, LatencyTable, aggregate, build_table
from tests.tables.synthetic import KEY_A, KEY_B, add_trials, device


@pytest.fixture()
def store(tmp_path: Path) -> MeasurementStore:
    with MeasurementStore(tmp_path / "m.sqlite") as s:
        yield s


def test_table_statistics_are_taken_over_trials(store: MeasurementStore) -> None:
    settings = RunSettings(runtime="tflite", threads=1, cores=(0,), warmup=3, runs=5)
    store.upsert_device(device())
    run = store.start_run("host-test", settings, "tiny", "block", ["test"])
    a_medians = [1.0, 1.2, 0.9, 1.1, 3.0]  # one slow process
    add_trials(store, run, "host-test", settings, KEY_A, a_medians,
               operator_ms=[{"CONV_2D": 0.6 + i / 100, "HARD_SWISH": 0.2} for i in range(5)])
    # Every trial carries a breakdown here: the store (ea17df7) turns a NULL breakdown next to a
    # present one into NaN and fails to read it; the None case is tested on `aggregate` below.
    add_trials(store, run, "host-test", settings, KEY_B, [0.5, 0.52], operator_ms=[{"ADD": 0.1}] * 2)
    store.set_quality("host-test", settings, KEY_A, "re-measured", 0.5, 5)
    table = build_table(store, device_id="host-test")
    row = table.frame.loc[KEY_A]
    assert row["median_ms"] == pytest.approx(statistics.median(a_medians))
    assert row["mean_ms"] == pytest.approx(statistics.fmean(a_medians))
    assert row["std_ms"] == pytest.approx(statistics.stdev(a_medians))
    assert row["cv"] == pytest.approx(statistics.stdev(a_medians) / statistics.fmean(a_medians))
    assert row["p90_ms"] == pytest.approx(float(np.percentile(a_medians, 90)))
    assert row["min_ms"] == pytest.approx(0.9 * 0.98)
    assert row["trials"] == 5
    assert row["flag"] == "re-measured"
    assert row["kind"] == "conv" and row["source"] == "measured"
    assert json.loads(row["operator_ms"]) == pytest.approx({"CONV_2D": 0.62, "HARD_SWISH": 0.2})
    assert table.frame.loc[KEY_B, "flag"] == UNRATED
    assert table.latency_ms(KEY_B) == pytest.approx(0.51)
    assert table.settings["core_mask"] == "0x1" and table.settings["warmup"] == 3
    assert table.device == device() and table.space == "tiny"


def test_keys_without_operator_breakdown_get_none() -> None:
    import pandas as pd

    frame = pd.DataFrame({"key": [KEY_A, KEY_A, KEY_B], "kind": ["conv", "conv", "mbconv"],
                          "median_ms": [1.0, 2.0, 0.5], "min_ms": [0.9, 1.8, 0.4],
                          "operator_ms": [{"CONV_2D": 0.5}, None, None]})
    rows = aggregate(frame)
    assert json.loads(rows.loc[KEY_A, "operator_ms"]) == {"CONV_2D": 0.5}
    assert rows.loc[KEY_B, "operator_ms"] is None
    assert rows.loc[KEY_B, "std_ms"] == 0.0 and rows.loc[KEY_B, "trials"] == 1
    assert rows.loc[KEY_A, "median_ms"] == 1.5 and rows.loc[KEY_A, "flag"] == UNRATED


def test_subnet_measurements_stay_out_of_the_table(store: MeasurementStore) -> None:
    settings = RunSettings()
    store.upsert_device(device())
    run = store.start_run("host-test", settings, "tiny", "block", [])
    add_trials(store, run, "host-test", settings, KEY_A, [1.0, 1.1])
    add_trials(store, run, "host-test", settings, "subnet:tiny:r32:abc", [5.0], kind="subnet")
    table = build_table(store)
    assert table.keys == [KEY_A]


def test_mixed_settings_are_refused_naming_the_filters(store: MeasurementStore) -> None:
    one = RunSettings(runtime="tflite", threads=1)
    store.upsert_device(device())
    store.upsert_device(device("phone"))
    for dev, settings in [("host-test", one), ("host-test", RunSettings(runtime="onnxruntime")),
                          ("host-test", RunSettings(threads=2)), ("phone", one)]:
        run = store.start_run(dev, settings, "tiny", "block", [])
        add_trials(store, run, dev, settings, KEY_A, [1.0, 1.1])
    with pytest.raises(TableError) as error:
        build_table(store)
    message = str(error.value)
    assert "--device host-test or phone" in message
    assert "--runtime onnxruntime or tflite" in message and "--threads 1 or 2" in message
    with pytest.raises(TableError, match="--runtime onnxruntime or tflite; --threads 1 or 2"):
        build_table(store, device_id="host-test")
    table = build_table(store, device_id="host-test", runtime="tflite", threads=1)
    assert table.settings["runtime"] == "tflite" and table.frame.loc[KEY_A, "trials"] == 2
    with pytest.raises(TableError, match="no successful measurements"):
        build_table(store, device_id="host-test", runtime="torch")


def test_coverage_counts_the_spaces_unique_blocks(store: MeasurementStore,
                                                  tiny_space: SearchSpace) -> None:
    settings = RunSettings()
    store.upsert_device(device())
    run = store.start_run("host-test", settings, "tiny", "block", [])
    blocks = tiny_space.unique_blocks([32])
    for spec in blocks[:10]:
        add_trials(store, run, "host-test", settings, spec.key, [0.1, 0.11])
    table = build_table(store)
    coverage = table.coverage(tiny_space)
    assert coverage["present"] == 10
    assert coverage["total"] == len(tiny_space.unique_blocks())
    assert len(coverage["missing"]) == coverage["total"] - 10
    assert table.coverage(tiny_space, [32])["share"] == pytest.approx(10 / len(blocks))


def test_table_round_trip_keeps_rows_and_metadata(store: MeasurementStore, tmp_path: Path) -> None:
    settings = RunSettings(cores=(0, 1))
    store.upsert_device(device())
    run = store.start_run("host-test", settings, "tiny", "block", [])
    add_trials(store, run, "host-test", settings, KEY_A, [1.0, 1.1, 1.05],
               operator_ms=[{"CONV_2D": 0.5}] * 3)
    add_trials(store, run, "host-test", settings, KEY_B, [0.5], operator_ms=[{"ADD": 0.1}])
    table = build_table(store)
    table.set_correction({"scale": 1.02, "intercept": 0.03, "n": 5})
    path = table.save(tmp_path / "tables" / "t.parquet")
    loaded = LatencyTable.load(path)
    assert loaded.frame.equals(table.frame)
    assert loaded.device == table.device and loaded.settings == table.settings
    assert loaded.space == "tiny" and loaded.correction == {"scale": 1.02, "intercept": 0.03, "n": 5}
    assert loaded.metadata["schema_version"] == 1 and loaded.metadata["lutnas_version"]
    assert loaded.settings["core_mask"] == "0x3"


def test_space_yaml_is_kept_when_the_space_came_from_a_file(store: MeasurementStore,
                                                            tmp_path: Path) -> None:
    text = resources.files("lutnas.space.builtin").joinpath("tiny.yaml").read_text().replace(
        "name: tiny", "name: mytiny")
    space_file = tmp_path / "mytiny.yaml"
    space_file.write_text(text)
    settings = RunSettings()
    store.upsert_device(device())
    run = store.start_run("host-test", settings, str(space_file), "block", [])
    add_trials(store, run, "host-test", settings, KEY_A, [1.0])
    table = build_table(store)
    assert table.space == "mytiny" and table.metadata["space_yaml"] == text
    path = table.save(tmp_path / "t.parquet")
    space_file.unlink()  # the table stands on its own
    assert LatencyTable.load(path).load_space().name == "mytiny"


def test_a_table_whose_embedded_space_no_longer_reads_points_to_space(store: MeasurementStore,
                                                                      tmp_path: Path) -> None:
    # Tables written before space files were read strictly may embed a key now refused: the
    # error names the key and the way on (--space), not a bare parse failure.
    settings = RunSettings()
    store.upsert_device(device())
    run = store.start_run("host-test", settings, "tiny", "block", [])
    add_trials(store, run, "host-test", settings, KEY_A, [1.0])
    table = build_table(store)
    text = resources.files("lutnas.space.builtin").joinpath("tiny.yaml").read_text()
    table.metadata["space_yaml"] = text + "\nlegacy_option: 3\n"
    table.metadata.pop("space_digest", None)
    loaded = LatencyTable.load(table.save(tmp_path / "old.parquet"))
    with pytest.raises(SpaceFileError, match=r"legacy_option.*give --space with the space's YAML") as err:
        loaded.load_space()
    assert "\n" not in str(err.value)
