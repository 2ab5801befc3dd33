# ruff: noqa: F811 - pytest fixtures imported from tests.adbd.fixtures are redefined as arguments
"""What a phone user meets (issue 12), through `profile-device` against the simulated adbd: runner
outputs of the field replayed by a runner double, a runner for another ABI, a delegate that is not
applied, BCL thermal zones, cluster names for --cores, and Android 11+ wireless debugging (STLS)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lutnas.cli import profile_device_main
from lutnas.device_agents.base import RunSettings
from lutnas.device_agents.policy import DETERMINISTIC_MARK
from lutnas.device_agents.remote import elf_abi
from lutnas.errors import BadInputError, DeviceError
from lutnas.tables.store import MeasurementStore
from tests.adbd import SimulatedAdbd
from tests.adbd.fixtures import _session_adb_key, adb_key, phone, runner, tflite_model  # noqa: F401
from tests.device_agents.test_adb import agent_for, models

pytestmark = pytest.mark.slow
FIELD = Path(__file__).parent / "data" / "field"
A52_BCL = "galaxy_a52_bcl"
PIXEL7 = "android:google-pixel-7:SIMPIXEL7"


def replay_runner(tmp_path: Path, name: str, status: int) -> Path:
    """A runner double that prints the field file `name` and exits with `status`, whatever it is asked."""
    text = (FIELD / name).read_text()
    path = tmp_path / f"replay-{Path(name).stem}"
    path.write_text(f"#!/bin/sh\ncat <<'LUTNAS_REPLAY_EOF'\n{text}LUTNAS_REPLAY_EOF\nexit {status}\n")
    path.chmod(0o755)
    return path


def profile(store: Path, address: str, runner: Path | str, *extra: str) -> int:
    return profile_device_main(["--device", f"adb:{address}", "--runner", str(runner), "--space", "tiny",
                                "--limit", "2", "--trials", "2", "--warmup", "1", "--runs", "3",
                                "--store", str(store), "--cv-bound", "10", "--drift-bound", "10",
                                "--max-remeasure", "0", *extra])


def frame_of(store: Path, device_id: str = PIXEL7):
    with MeasurementStore(store) as db:
        return db.measurements_frame(device_id=device_id, ok_only=False)


def test_missing_op_is_quoted_not_retried_and_exits_1(phone: SimulatedAdbd, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture):
    store = tmp_path / "m.sqlite"
    assert profile(store, phone.address, replay_runner(tmp_path, "missing-builtin-op.txt", 1)) == 1
    frame = frame_of(store)
    assert frame["key"].value_counts().max() == 1  # deterministic: one trial per key, no retries
    status = frame["status"].iloc[0]
    assert "Didn't find op for builtin opcode 'MUL' version '5'" in status and DETERMINISTIC_MARK in status
    out = capsys.readouterr().out
    assert "2 key(s) failed" in out and "Didn't find op for builtin opcode" in out


def test_runner_for_another_abi_names_the_phone_abi_once(phone: SimulatedAdbd, tmp_path: Path):
    store = tmp_path / "m.sqlite"
    wrong = tmp_path / "benchmark_model"
    shutil.copy(FIELD / "runner-wrong-abi.sh", wrong)
    assert profile(store, phone.address, wrong) == 1
    frame = frame_of(store)
    assert frame["key"].value_counts().max() == 1
    status = frame["status"].iloc[0]
    assert "exit 126" in status and "not executable: 64-bit ELF file" in status
    assert "ro.product.cpu.abi is arm64-v8a" in status and "\n" not in status


def test_elf_for_another_abi_is_refused_before_pushing(phone: SimulatedAdbd, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture):
    x86 = tmp_path / "benchmark_model"
    x86.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + (62).to_bytes(2, "little") + bytes(40))
    assert elf_abi(x86.read_bytes()[:20]) == "x86_64"
    assert profile(tmp_path / "m.sqlite", phone.address, x86) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "built for x86_64" in err[0] and "arm64-v8a" in err[0]
    assert not (phone.device_tmp / "lutnas" / "benchmark_model").exists()
    arm32 = tmp_path / "arm32"
    arm32.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(11) + (40).to_bytes(2, "little") + bytes(40))
    with agent_for(phone) as agent:  # a 32-bit ARM runner is in the Pixel 7's abilist
        agent._check_abi(agent._program(RunSettings()), arm32)
        with pytest.raises(BadInputError, match="abilist"):
            agent._check_abi(agent._program(RunSettings()), x86)


def test_gpu_delegate_not_applied_fails_naming_the_line(phone: SimulatedAdbd, tmp_path: Path):
    store = tmp_path / "m.sqlite"
    replay = replay_runner(tmp_path, "gpu-delegate-not-applied.txt", 0)
    assert profile(store, phone.address, replay, "--accelerator", "gpu") == 1
    frame = frame_of(store)
    assert frame["key"].value_counts().max() == 1 and not (frame["status"] == "ok").any()
    assert "Though GPU delegate is explicitly applied" in frame["status"].iloc[0]


def test_info_prefixed_output_stores_the_runner_median(phone: SimulatedAdbd, tmp_path: Path):
    store = tmp_path / "m.sqlite"
    assert profile(store, phone.address, replay_runner(tmp_path, "info-prefixed.txt", 0)) == 0
    frame = frame_of(store)
    ok = frame[frame["status"] == "ok"]
    assert len(ok) >= 4
    assert (ok["median_ms"].round(6) == 0.205).all() and (ok["std_ms"].round(6) == 0.038).all()
    assert (ok["min_ms"].round(6) == 0.188).all()


def test_litert_compiled_model_runner_kind(phone: SimulatedAdbd, tmp_path: Path):
    store = tmp_path / "m.sqlite"
    replay = replay_runner(tmp_path, "litert-compiled-model.txt", 0)
    assert profile(store, phone.address, replay, "--runner-kind", "litert",
                   "--runner-arg=--dispatch_library_path=/vendor/lib64") == 0
    ok = frame_of(store)
    assert (ok["runner_name"] == "benchmark_litert_model").all()
    assert (ok["median_ms"].round(4) == 7.43).all()
    assert any("dispatch_library_path=/vendor/lib64" in c for c in phone.commands)


def test_bcl_zones_are_not_read_as_temperatures(tmp_path: Path, adb_key: Path, runner: Path,
                                                tflite_model: Path):
    with SimulatedAdbd(tmp_path / "a52", A52_BCL) as a52:
        with agent_for(a52, runner, max_temp_c=45) as agent:
            info = agent.info()
            (measurement,) = agent.measure_batch(models(tmp_path, tflite_model, ["a.tflite"]),
                                                 RunSettings(warmup=1, runs=3), 0)
            assert agent.cooldown_waits_s == []  # the 87 of `soc` is a battery percent
    assert measurement.ok
    assert info.extra["thermal_zones_watched"] == ["cpu-0-0-usr", "cpu-1-0-usr"]
    skipped = info.extra["thermal_zones_skipped"]
    assert {"soc", "pm7250b-vbat-lvl0", "pm7250b-ibat-lvl0"} <= set(skipped)
    assert "BCL" in skipped["soc"] and info.extra["abilist"].startswith("arm64-v8a")


def test_cores_by_cluster_name_and_a_list_spanning_clusters(tmp_path: Path, adb_key: Path, runner: Path,
                                                           capsys: pytest.CaptureFixture):
    store = tmp_path / "m.sqlite"
    with SimulatedAdbd(tmp_path / "a52", A52_BCL) as a52:
        assert profile(store, a52.address, runner, "--cores", "big") == 0
        assert "spans" not in capsys.readouterr().err
        assert profile(store, a52.address, runner, "--cores", "4-7", "--limit", "1") == 0
        err = capsys.readouterr().err
        assert profile(store, a52.address, runner, "--cores", "prime") == 2
    assert err.count("warning") == 1 and "spans the clusters 0-5 (1805 MHz) and 6-7 (2304 MHz)" in err
    masks = set(frame_of(store, "android:samsung-sm-a525f:SIMA52SOC")["core_mask"])
    assert masks == {"0xc0", "0xf0"}


def test_wireless_debugging_tls_gets_one_line(phone: SimulatedAdbd, tmp_path: Path,
                                              capsys: pytest.CaptureFixture):
    phone.faults.tls_only = True
    with agent_for(phone) as agent:
        with pytest.raises(DeviceError, match="TLS pairing is not supported; use adb tcpip 5555 once "
                                              "over USB"):
            agent.info()
    assert profile(tmp_path / "m.sqlite", phone.address, "tests/adbd/benchmark_model") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TLS pairing is not supported" in err[0]
