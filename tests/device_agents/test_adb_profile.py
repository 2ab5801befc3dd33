# ruff: noqa: F811 - pytest fixtures imported from tests.adbd.fixtures are redefined as arguments
"""End to end: `profile-device --device adb:127.0.0.1:PORT --runner tests/adbd/benchmark_model` against
simulated phones fills the store with their measurements; faults stop or slow a run but lose nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from lutnas.cli import profile_device_main
from lutnas.tables.store import MeasurementStore
from tests.adbd import SimulatedAdbd
from tests.adbd.fixtures import _session_adb_key, adb_key, phone, runner  # noqa: F401

pytestmark = pytest.mark.slow
LIMIT = 2


def profile(store: Path, *devices: str, extra: tuple[str, ...] = ()) -> int:
    argv = [a for d in devices for a in ("--device", f"adb:{d}")]
    return profile_device_main([*argv, "--runner", "tests/adbd/benchmark_model", "--space", "tiny",
                                "--limit", str(LIMIT), "--trials", "2", "--warmup", "1", "--runs", "3",
                                "--store", str(store),
                                # host timings of the runner double are noisy: no QC re-measures here
                                "--cv-bound", "10", "--drift-bound", "10", "--max-remeasure", "0", *extra])


def keys_measured(store: Path, device_id: str) -> set[str]:
    with MeasurementStore(store) as db:
        frame = db.measurements_frame(device_id=device_id)
    return set(frame[frame["status"] == "ok"]["key"])


def test_profile_device_fills_the_store_and_survives_faults(phone: SimulatedAdbd, tmp_path: Path):
    store = tmp_path / "m.sqlite"
    phone.faults.drop_after_commands = 12  # one dropped connection: reconnect and go on
    phone.faults.runner_fault, phone.faults.runner_fault_count = "garble", 1  # one model's output
    phone.faults.hot_reads = 1  # one hot reading: wait, then measure
    phone.faults.slow_s = 0.02
    assert profile(store, phone.address) == 0
    with MeasurementStore(store) as db:
        (info,) = db.devices()
        frame = db.measurements_frame(device_id=info.device_id)
    assert info.device_id == "android:google-pixel-7:SIMPIXEL7" and info.soc == "GS201"
    assert info.libraries["benchmark_model"].startswith("sha256:")
    assert len(set(frame["key"])) >= LIMIT and (frame["runner_name"] == "benchmark_model").all()
    assert not (phone.sandbox / ".sim" / "runner_fault").exists()  # the garbled run happened
    assert len(keys_measured(store, info.device_id)) >= LIMIT
    assert not (phone.device_tmp / "lutnas").exists()  # pushed files removed at the end
    before = len(frame)
    assert profile(store, phone.address) == 0  # a rerun measures nothing new
    with MeasurementStore(store) as db:
        assert len(db.measurements_frame(device_id=info.device_id)) == before


def test_unplugged_phone_fails_clearly_and_the_rerun_resumes(phone: SimulatedAdbd, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture):
    store = tmp_path / "m.sqlite"
    # a full run here opens 17 services (LIMIT 2, 2 trials): drop well inside it
    phone.faults.drop_after_commands, phone.faults.offline_after_drop = 10, True
    assert profile(store, phone.address) == 1
    err = capsys.readouterr().err
    assert "cannot connect to 127.0.0.1" in err
    device_id = "android:google-pixel-7:SIMPIXEL7"
    with MeasurementStore(store) as db:
        kept = len(db.measurements_frame(device_id=device_id))
    phone.set_online(True)
    assert profile(store, phone.address) == 0
    with MeasurementStore(store) as db:
        frame = db.measurements_frame(device_id=device_id)
    assert len(frame) >= kept  # nothing measured before the fault was lost
    assert len(keys_measured(store, device_id)) >= LIMIT


def test_two_phones_in_parallel(tmp_path: Path, adb_key: Path):
    store = tmp_path / "m.sqlite"
    with SimulatedAdbd(tmp_path / "p7", "pixel7") as p7, SimulatedAdbd(tmp_path / "a52", "galaxy_a52") as a52:
        assert profile(store, p7.address, a52.address) == 0
    with MeasurementStore(store) as db:
        ids = {info.device_id for info in db.devices()}
    assert ids == {"android:google-pixel-7:SIMPIXEL7", "android:samsung-sm-a525f:SIMA52"}
    for device_id in ids:
        assert len(keys_measured(store, device_id)) >= LIMIT
