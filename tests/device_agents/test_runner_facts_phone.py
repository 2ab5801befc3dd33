# ruff: noqa: F811 - pytest fixtures imported from tests.adbd.fixtures are redefined as arguments
"""What the runner says beyond timings reaches the store as columns (schema 3) and the user's
commands, through `profile-device` against the simulated phone: peak memory and the statistic of a
field output (`android-cpu-4threads-tail.txt`), delegation of a GPU run, `lutnas measurements`,
`build-table --accelerator` and `table show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lutnas.cli import main
from lutnas.tables.table import LatencyTable
from tests.adbd import SimulatedAdbd
from tests.adbd.fixtures import _session_adb_key, adb_key, phone, runner  # noqa: F401
from tests.device_agents.test_phone_failures import frame_of, profile, replay_runner

pytestmark = pytest.mark.slow

# A GPU run that delegated 12 of 40 nodes in 3 partitions (the lines benchmark_model prints).
PARTIAL_GPU = ("INFO: Created TensorFlow Lite delegate for GPU.\n"
               "INFO: Replacing 12 out of 40 node(s) with delegate (TfLiteGpuDelegateV2) node, "
               "yielding 3 partitions for the whole graph.\n"
               "INFO: count=10 first=1000 curr=1000 min=900 max=1100 avg=1000 std=10 p5=900 median=990 "
               "p95=1100\n")


def test_peak_memory_and_the_average_statistic_are_columns_and_shown(phone: SimulatedAdbd, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture):
    store = tmp_path / "m.sqlite"
    replay = replay_runner(tmp_path, "../android-cpu-4threads-tail.txt", 0)
    assert profile(store, phone.address, replay) == 0
    ok = frame_of(store)
    ok = ok[ok["status"] == "ok"]
    assert len(ok) >= 4 and (ok["peak_mem_mb"].round(3) == 138.809).all()
    assert set(ok["statistic"]) == {"average"}  # the tail prints no median: flagged, never hidden
    assert all("average-as-median" in flags for flags in ok["runner_flags"])
    assert ok["total_nodes"].isna().all()  # a CPU run delegates nothing
    capsys.readouterr()
    assert main(["measurements", "--store", str(store), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {round(r["peak_mem_mb"], 3) for r in rows} == {138.809}
    assert {r["statistic"] for r in rows} == {"average"}
    out = tmp_path / "t.parquet"
    assert main(["build-table", "--store", str(store), "--out", str(out), "--accelerator", "cpu"]) == 0
    assert (LatencyTable.load(out).frame["peak_mem_mb"].round(3) == 138.809).all()
    capsys.readouterr()
    assert main(["table", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "peak MB" in shown and "138.8" in shown


def test_a_partial_gpu_delegation_is_stored_with_its_share(phone: SimulatedAdbd, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture):
    (tmp_path / "partial-gpu.txt").write_text(PARTIAL_GPU)
    store = tmp_path / "m.sqlite"
    replay = replay_runner(tmp_path, str(tmp_path / "partial-gpu.txt"), 0)
    assert profile(store, phone.address, replay, "--accelerator", "gpu") == 0
    ok = frame_of(store)
    ok = ok[ok["status"] == "ok"]
    assert len(ok) >= 4 and (ok["accelerator"] == "gpu").all()
    assert (ok["delegated_nodes"] == 12).all() and (ok["total_nodes"] == 40).all()
    assert (ok["partitions"] == 3).all() and (ok["statistic"] == "median").all()
    assert all("partial-delegation" in flags for flags in ok["runner_flags"])
    capsys.readouterr()
    assert main(["measurements", "--store", str(store)]) == 0
    assert "12/40 (30%)" in capsys.readouterr().out
