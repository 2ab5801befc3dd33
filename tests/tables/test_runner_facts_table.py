"""Runner facts in tables (issue 12): peak memory aggregated per key (`peak_mem_mb`, a column only
when some key has it), `build-table --accelerator` selecting that accelerator's measurements and
quality flags, `table show` printing peak memory and `lutnas measurements` the statistic,
delegation share and peak memory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lutnas.cli import main
from lutnas.device_agents.base import Measurement, RunSettings
from lutnas.errors import TableError
from lutnas.tables.store import MeasurementStore
from lutnas.tables.table import LatencyTable, build_table
from tests.tables.synthetic import KEY_A, KEY_B, RUNNER, device

CPU = RunSettings(runtime="tflite", threads=1)
GPU = RunSettings(runtime="tflite", threads=1, accelerator="gpu")


def _add(store: MeasurementStore, run: int, settings: RunSettings, key: str, median: float,
         trial: int, **facts) -> None:
    m = Measurement(key=key, model_sha256="0" * 64, trial_index=trial, runner=RUNNER,
                    median_ms=median, statistic="median", **facts)
    store.add_measurement(run, "host-test", settings, key.partition(":")[0], m)


def _store(path: Path) -> Path:
    """KEY_A and KEY_B on the CPU (no memory printed) and on the GPU (peak memory, delegation)."""
    with MeasurementStore(path) as store:
        store.upsert_device(device())
        cpu = store.start_run("host-test", CPU, "tiny", "block", [])
        gpu = store.start_run("host-test", GPU, "tiny", "block", [])
        for trial in range(3):
            _add(store, cpu, CPU, KEY_A, 1.0 + trial / 10, trial)
            _add(store, cpu, CPU, KEY_B, 2.0, trial)
            _add(store, gpu, GPU, KEY_A, 0.5, trial, peak_mem_mb=10.0 + trial,
                 delegated_nodes=4, total_nodes=4, partitions=1)
            _add(store, gpu, GPU, KEY_B, 0.7, trial, delegated_nodes=12, total_nodes=40, partitions=3,
                 flags=["partial-delegation"])
        store.set_quality("host-test", CPU, KEY_A, "never-settled", 0.2, 3)
        store.set_quality("host-test", GPU, KEY_A, "settled", 0.01, 3)
    return path


def test_build_table_by_accelerator_aggregates_peak_memory(tmp_path) -> None:
    with MeasurementStore(_store(tmp_path / "m.sqlite")) as store:
        with pytest.raises(TableError, match="--accelerator cpu or gpu"):
            build_table(store)
        gpu = build_table(store, accelerator="gpu")
        cpu = build_table(store, accelerator="cpu")
    assert gpu.settings["accelerator"] == "gpu" and gpu.frame.loc[KEY_A, "median_ms"] == 0.5
    assert gpu.frame.loc[KEY_A, "peak_mem_mb"] == 11.0  # median over the trials that printed it
    assert math.isnan(gpu.frame.loc[KEY_B, "peak_mem_mb"])
    assert gpu.frame.loc[KEY_A, "flag"] == "settled"  # the GPU's verdict, not the CPU's
    assert cpu.frame.loc[KEY_A, "flag"] == "never-settled"
    assert "peak_mem_mb" not in cpu.frame.columns  # no runner printed it: no column
    saved = LatencyTable.load(gpu.save(tmp_path / "gpu.parquet"))
    assert saved.frame.loc[KEY_A, "peak_mem_mb"] == 11.0
    completed = saved.completed_with({"conv:hw=8,cin=3,cout=8,k=3,s=1,act=relu": 0.1}, "predicted:x")
    assert completed.frame.loc[KEY_A, "peak_mem_mb"] == 11.0 and len(completed) == 3
    assert "peak_mem_mb" not in LatencyTable.load(cpu.save(tmp_path / "cpu.parquet")).frame.columns


def test_build_table_accelerator_flag_and_table_show_peak_memory(tmp_path, capsys) -> None:
    store, out = _store(tmp_path / "m.sqlite"), tmp_path / "t.parquet"
    assert main(["build-table", "--store", str(store), "--out", str(out), "--accelerator", "gpu"]) == 0
    assert "accelerator=gpu" in capsys.readouterr().out
    assert main(["table", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "peak MB" in shown and "11.0" in shown and "peak memory" in shown
    with pytest.raises(SystemExit) as refused:
        main(["build-table", "--store", str(store), "--out", str(out), "--accelerator", "tpu"])
    assert refused.value.code == 2 and "invalid choice: 'tpu'" in capsys.readouterr().err


def test_measurements_show_statistic_delegation_and_peak_memory(tmp_path, capsys) -> None:
    store = _store(tmp_path / "m.sqlite")
    assert main(["measurements", "--store", str(store), "--json"]) == 0
    rows = {(r["accelerator"], r["key"]): r for r in json.loads(capsys.readouterr().out)}
    assert len(rows) == 4  # the same key on two accelerators is two blocks, never merged
    gpu_b = rows[("gpu", KEY_B)]
    assert (gpu_b["delegated_nodes"], gpu_b["total_nodes"], gpu_b["delegation_share"]) == (12, 40, 0.3)
    assert gpu_b["runner_flags"] == ["partial-delegation"] and gpu_b["statistic"] == "median"
    assert rows[("gpu", KEY_A)]["peak_mem_mb"] == 11.0 and rows[("cpu", KEY_A)]["peak_mem_mb"] is None
    assert rows[("cpu", KEY_A)]["flag"] == "never-settled" and rows[("gpu", KEY_A)]["flag"] == "settled"
    assert main(["measurements", "--store", str(store)]) == 0
    shown = capsys.readouterr().out
    assert "12/40 (30%)" in shown and "peak MB" in shown and "statistic" in shown
    assert main(["measurements", "--store", str(store), "--accelerator", "cpu", "--json"]) == 0
    assert {r["accelerator"] for r in json.loads(capsys.readouterr().out)} == {"cpu"}
