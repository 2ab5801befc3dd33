"""Output for pipes and files: with stdout piped, nothing machine-readable is wrapped or cut, and
`--json` prints one JSON document (issue 20). The commands run as real processes, stdout a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lutnas.cli._common import PIPE_WIDTH, make_console
from lutnas.device_agents.base import RunSettings
from lutnas.space import SearchSpace
from lutnas.tables.store import MeasurementStore
from lutnas.tables.table import LatencyTable
from tests.tables.synthetic import KEY_A, KEY_B, add_trials, device

ROOT = Path(__file__).resolve().parents[2]


def lutnas(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m lutnas ARGS` with stdout and stderr pipes; COLUMNS=40 would wrap if it counted."""
    env = {**os.environ, "COLUMNS": "40", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lutnas", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    """A tiny-space table: every block of the space at 0.01 ms, no correction."""
    space = SearchSpace.load("tiny")
    latencies = {spec.key: 0.01 for spec in space.unique_blocks()}
    table = LatencyTable.from_latencies(latencies, device(), RunSettings(runtime="tflite", threads=1),
                                        space="tiny")
    return table.save(tmp_path_factory.mktemp("table") / "t.parquet")


def test_a_piped_console_never_wraps_or_cuts() -> None:
    console = make_console()
    assert not console.is_terminal and console.width == PIPE_WIDTH


def test_space_blocks_keys_are_whole_and_json_pastes_into_space_block(tmp_path) -> None:
    largest = lutnas("space", "sample", "tiny", "--largest")
    config = tmp_path / "largest.json"
    config.write_text(largest.stdout)
    shown = lutnas("space", "blocks", "tiny", "--config", str(config))
    assert shown.returncode == 0 and "…" not in shown.stdout
    expected = [spec.key for spec in SearchSpace.load("tiny").blocks_of(
        SearchSpace.load("tiny").largest())]
    assert all(key in shown.stdout for key in expected)
    as_json = lutnas("space", "blocks", "tiny", "--config", str(config), "--json")
    data = json.loads(as_json.stdout)
    assert [b["key"] for b in data["blocks"]] == expected and data["total"]["macs"] > 0
    block = lutnas("space", "block", data["blocks"][-1]["key"])
    assert block.returncode == 0, block.stderr


def test_predict_json_and_best_json_config(tmp_path, table_path) -> None:
    best = tmp_path / "best.json"  # search's best.json holds the subnet under "config"
    best.write_text(json.dumps({"config": SearchSpace.load("tiny").smallest().to_dict(), "x": 1}))
    result = lutnas("predict", "--table", str(table_path), "--config", str(best), "--explain", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert data["predictor"] == "lut" and len(data["blocks"]) > 0
    assert data["ms"] == pytest.approx(0.01 * len(data["blocks"]))


def test_runs_and_measurements_json_count_the_same_trials(tmp_path) -> None:
    store_path = tmp_path / "m.sqlite"
    with MeasurementStore(store_path) as store:
        settings = RunSettings(runtime="tflite", threads=1)
        store.upsert_device(device())
        run = store.start_run("host-test", settings, "tiny", "block", ["test"])
        add_trials(store, run, "host-test", settings, KEY_A, [1.0, 1.1])
        add_trials(store, run, "host-test", settings, KEY_B, [0.5, 0.5, 0.6])
    runs = json.loads(lutnas("runs", "--store", str(store_path), "--json").stdout)
    blocks = json.loads(lutnas("measurements", "--store", str(store_path), "--json").stdout)
    assert [r["trial_rows"] for r in runs] == [5]
    assert sorted(b["key"] for b in blocks) == sorted([KEY_A, KEY_B])
    assert sum(b["trials"] for b in blocks) == 5
    table = lutnas("runs", "--store", str(store_path))
    assert "trial rows" in table.stdout and "count blocks" in table.stdout
    shown = lutnas("measurements", "--store", str(store_path))
    assert "2 blocks from 5 ok trial rows" in shown.stdout


def test_measurements_of_an_empty_store_say_to_profile(tmp_path) -> None:
    store_path = tmp_path / "m.sqlite"
    MeasurementStore(store_path).close()
    result = lutnas("measurements", "--store", str(store_path))
    assert result.returncode == 2
    assert "is empty" in result.stderr and "profile-device" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_closed_pipe_is_not_a_traceback(tmp_path) -> None:
    line = subprocess.run(f"{sys.executable} -m lutnas space sample tiny -n 2000 | head -1",
                          shell=True, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert json.loads(line.stdout)["resolution"] > 0
    assert "Traceback" not in line.stderr


def test_profile_device_help_states_every_default_and_the_typed_name() -> None:
    import argparse

    from lutnas.cli import build_parser

    parser = build_parser(["profile-device"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices["profile-device"]._actions:
        unset = action.default in (None, False, argparse.SUPPRESS) or action.default == []
        if action.help in (None, argparse.SUPPRESS) or unset:  # nothing to state
            continue
        assert "default" in action.help, action.option_strings
    script = Path(sys.executable).parent / "profile-device"
    typed = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert typed.stdout.startswith("usage: profile-device ") and "LUTNAS_ADB_KEY" in typed.stdout
    assert lutnas("profile-device", "--help").stdout.startswith("usage: lutnas profile-device ")


def test_table_show_flagged_counts_agree_with_the_quality_line(tmp_path) -> None:
    keys = [spec.key for spec in SearchSpace.load("tiny").unique_blocks()]
    flags = ["never-settled"] * 3 + ["re-measured"] * 2 + ["ok"] * (len(keys) - 5)
    rows = {k: {"median_ms": 0.01, "cv": 0.01, "trials": 5, "flag": f} for k, f in zip(keys, flags)}
    table = LatencyTable.from_latencies(rows, device(), RunSettings(runtime="tflite", threads=1),
                                        space="tiny")
    path = table.save(tmp_path / "flags.parquet")
    shown = lutnas("table", "show", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "never-settled 3" in shown.stdout and "re-measured 2" in shown.stdout
    assert "flagged blocks among those tiny uses: 5 (never-settled 3, re-measured 2)" in shown.stdout


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_tables_and_predictor_files_get_the_umask_mode(tmp_path, table_path, umask, mode) -> None:
    import numpy as np

    from lutnas.predictors.serialize import write_state

    before = os.umask(umask)
    try:
        table = LatencyTable.load(table_path).save(tmp_path / "shared.parquet")
        predictor = write_state("learned", {"n": 1}, {"w": np.zeros(3)},
                                tmp_path / "shared.learned.predictor.npz")
    finally:
        os.umask(before)
    assert table.stat().st_mode & 0o777 == mode
    assert Path(predictor).stat().st_mode & 0o777 == mode
