# ruff: noqa: F811 - pytest fixtures imported from tests.adbd.fixtures are redefined as arguments
"""End to end (issue 15): `profile-device --runtime executorch --runner tests/adbd/executor_runner`
against the simulated phone: .pte files pushed, timed by the executor_runner double (ExecuTorch's
log format), parsed and stored; a runner that prints only its total gives flagged averages."""

from __future__ import annotations

from pathlib import Path

import pytest

from lutnas.cli import profile_device_main
from lutnas.tables.store import MeasurementStore
from tests.adbd import SimulatedAdbd
from tests.adbd.fixtures import _session_adb_key, adb_key, phone  # noqa: F401

pytestmark = pytest.mark.slow
RUNNER = "tests/adbd/executor_runner"


def profile(store: Path, address: str, *extra: str) -> int:
    return profile_device_main(["--device", f"adb:{address}", "--runtime", "executorch", "--runner", RUNNER,
                                "--space", "tiny", "--limit", "2", "--trials", "2", "--warmup", "1",
                                "--runs", "3", "--store", str(store), "--cv-bound", "10",
                                "--drift-bound", "10", "--max-remeasure", "0", *extra])


def frame_of(store: Path):
    with MeasurementStore(store) as db:
        (info,) = db.devices()
        return db.measurements_frame(device_id=info.device_id)


def test_executorch_on_the_simulated_phone(phone: SimulatedAdbd, tmp_path: Path):
    store = tmp_path / "m.sqlite"
    assert profile(store, phone.address) == 0
    frame = frame_of(store)
    ok = frame[frame["status"] == "ok"]
    assert len(set(ok["key"])) >= 2 and (frame["runner_name"] == "executor_runner").all()
    assert (ok["statistic"] == "median-of-samples").all() and (ok["median_ms"] > 0).all()
    assert not (phone.device_tmp / "lutnas").exists()  # pushed files removed at the end


def test_a_totals_only_runner_gives_flagged_averages(phone: SimulatedAdbd, tmp_path: Path):
    (phone.sandbox / ".sim").mkdir(exist_ok=True)
    (phone.sandbox / ".sim" / "executor_runner_totals_only").write_text("")
    store = tmp_path / "m.sqlite"
    assert profile(store, phone.address) == 0
    ok = frame_of(store).query("status == 'ok'")
    assert len(ok) and (ok["statistic"] == "average").all()


def test_int8_executorch_is_refused_before_anything_runs(phone: SimulatedAdbd, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture):
    assert profile(tmp_path / "m.sqlite", phone.address, "--precision", "int8") == 2
    assert "--precision int8 is exported for --runtime tflite only, not executorch" in capsys.readouterr().err
