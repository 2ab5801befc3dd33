# ruff: noqa: F811 - pytest fixtures imported from tests.adbd.fixtures are redefined as arguments
"""The ADB agent against a simulated adbd speaking the real protocol on loopback (no mocks)."""

from __future__ import annotations

import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from lutnas.device_agents.adb import AdbAgent, AdbOptions
from lutnas.device_agents.adb_keys import KEY_ENV, key_path, load_signer
from lutnas.device_agents.base import ModelFile, RunSettings
from lutnas.device_agents.factory import AgentOptions, open_agent
from lutnas.device_agents.policy import CoolDown, RetryPolicy
from lutnas.device_agents.remote import RemoteOptions
from lutnas.errors import BadInputError, DeviceError
from tests.adbd import Faults, SimulatedAdbd, install_runner_double
from tests.adbd.fixtures import _session_adb_key, adb_key, phone, runner, tflite_model  # noqa: F401

FAST = RunSettings(warmup=1, runs=5)


def agent_for(server: SimulatedAdbd, runner: Path | None = None, **options) -> AdbAgent:
    """An agent for `server`; `options` are fields of RemoteOptions or AdbOptions."""
    options.setdefault("command_timeout_s", 20.0)
    adb = {k: options.pop(k) for k in list(options) if k in AdbOptions.__dataclass_fields__}
    agent = open_agent(f"adb:{server.address}",
                       AgentOptions(remote=RemoteOptions(runner=runner, **options), adb=AdbOptions(**adb)))
    agent.transport.retry = RetryPolicy(reconnect_delays_s=(0.05, 0.1, 0.2))
    agent.cooldown = CoolDown(max_temp_c=agent.options.max_temp_c, poll_s=0.01)
    agent.messages = []
    agent.on_message = agent.messages.append
    return agent


def models(tmp_path: Path, source: Path, names: list[str]) -> list[ModelFile]:
    files = []
    for name in names:
        shutil.copy(source, tmp_path / name)
        files.append(ModelFile.from_path(tmp_path / name, key=f"key:{name}"))
    return files


def test_fingerprint_matches_the_profile(phone: SimulatedAdbd):
    with agent_for(phone) as agent:
        info = agent.info()
    assert info.device_id == "android:google-pixel-7:SIMPIXEL7"
    assert (info.kind, info.manufacturer, info.model, info.soc, info.abi) == (
        "android", "Google", "Pixel 7", "GS201", "arm64-v8a")
    assert info.os_version == "14 (SDK 34)" and info.cores == 8
    assert [(c.cores, c.max_khz, c.governor) for c in info.clusters] == [
        ((0, 1, 2, 3), 1803000, "sched_pixel"), ((4, 5), 2348000, "sched_pixel"),
        ((6, 7), 2850000, "sched_pixel")]
    assert info.cpu_model == "4x Cortex-A55 + 2x Cortex-A78 + 2x Cortex-X1"
    assert "BIG" in info.extra["thermal_zones"]
    assert info.to_dict() == type(info).from_dict(info.to_dict()).to_dict()


def test_soc_falls_back_to_board_platform(tmp_path: Path, adb_key: Path):
    with SimulatedAdbd(tmp_path / "a52", "galaxy_a52") as server, agent_for(server) as agent:
        info = agent.info()
        temps, freqs = agent.read_state()
    assert (info.model, info.soc, info.cores) == ("SM-A525F", "atoll", 8)
    assert [c.cores for c in info.clusters] == [(0, 1, 2, 3, 4, 5), (6, 7)]
    assert temps["cpu-1-0-usr"] == 37.2 and temps["battery"] == 30.5
    assert freqs["cpu7"] == 2304000


def test_missing_key_is_created_0600_and_the_prompt_is_announced(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    key = tmp_path / "home" / ".android" / "adbkey"
    monkeypatch.setenv(KEY_ENV, str(key))
    assert key_path() == key and key_path(tmp_path / "x") == tmp_path / "x"
    with SimulatedAdbd(tmp_path / "sb", "pixel7") as server:
        with agent_for(server) as agent:
            agent.info()
            assert any("Allow USB debugging" in m for m in agent.messages)
        assert server.prompts == 1
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        with agent_for(server) as agent:  # the phone now trusts the key: no second prompt
            agent.info()
            assert agent.messages == []
        assert server.prompts == 1


def test_rejected_key_is_one_clear_error(tmp_path: Path, adb_key: Path):
    with SimulatedAdbd(tmp_path / "sb", "pixel7", faults=Faults(reject_key=True)) as server:
        # adb-shell reads a closed socket until the auth timeout
        agent = agent_for(server, command_timeout_s=1.5, auth_timeout_s=1.0)
        with pytest.raises(DeviceError, match="did not accept this computer's ADB key") as info:
            agent.info()
    assert "\n" not in str(info.value) and str(adb_key) in str(info.value)


def test_unreadable_key_is_bad_input(tmp_path: Path):
    key = tmp_path / "adbkey"
    key.write_text("not a key")
    Path(f"{key}.pub").write_text("x")
    with pytest.raises(BadInputError, match="cannot read the ADB key"):
        load_signer(key)


def test_batch_measures_and_quotes_hostile_names(phone, runner, tflite_model, tmp_path):
    files = models(tmp_path, tflite_model, ["a b;touch PWNED.tflite", "$(touch PWNED2).tflite",
                                            "plain.tflite"])
    with agent_for(phone, runner) as agent:
        first = agent.measure_batch(files, RunSettings(warmup=1, runs=5, cores=(6, 7)), trial_index=0)
        pushes = phone.commands.count("sync:")
        second = agent.measure_batch(files, FAST, trial_index=1)
        assert phone.commands.count("sync:") == pushes  # same sha256 on the phone: nothing pushed
    for m, f in zip(first + second, files + files):
        assert m.status == "ok", m.status
        assert m.key == f.key and m.model_sha256 == f.sha256
        assert 0 < m.min_ms <= m.median_ms and m.std_ms is not None and m.samples_ms == []
        assert m.runner.name == "benchmark_model" and len(m.runner.binary_sha256) == 64
        assert m.temps_before["BIG"] == 38.2 and m.freqs_after["cpu6"] == 2850000
        assert "Inference timings in us" in m.raw_output
    assert [m.trial_index for m in second] == [1, 1, 1]
    assert not list(phone.sandbox.rglob("PWNED*"))
    assert any("taskset 0xc0 " in c for c in phone.commands)
    # close() removed what was pushed.
    assert not (phone.device_tmp / "lutnas").exists()


def test_op_profiling_fills_operator_ms(phone, runner, tflite_model, tmp_path):
    files = models(tmp_path, tflite_model, ["m.tflite"])
    with agent_for(phone, runner, keep_files=True) as agent:
        (m,) = agent.measure_batch(files, RunSettings(warmup=1, runs=3, op_profiling=True), 0)
    assert m.ok and m.operator_ms and "CONV_2D" in m.operator_ms
    assert (phone.device_tmp / "lutnas" / "benchmark_model").exists()  # --keep-files


def test_runner_missing_or_not_executable(phone, tflite_model, tmp_path):
    files = models(tmp_path, tflite_model, ["m.tflite"])
    with agent_for(phone, runner_on_device="/data/local/tmp/nope/benchmark_model") as agent:
        with pytest.raises(BadInputError, match="is not on"):
            agent.measure_batch(files, FAST, 0)
    install_runner_double(phone)
    (phone.device_tmp / "benchmark_model").chmod(0o644)
    with agent_for(phone, runner_on_device="/data/local/tmp/benchmark_model") as agent:
        with pytest.raises(BadInputError, match="not an executable file"):
            agent.measure_batch(files, FAST, 0)
    (phone.device_tmp / "benchmark_model").chmod(0o755)
    with agent_for(phone, runner_on_device="/data/local/tmp/benchmark_model") as agent:
        (m,) = agent.measure_batch(files, FAST, 0)
        assert m.ok and m.runner.binary_sha256
    # A local runner that is not there is named before anything connects (RemoteOptions).
    with pytest.raises(BadInputError, match="does not exist"):
        agent_for(phone, runner=tmp_path / "missing")
    with agent_for(phone) as agent:
        with pytest.raises(BadInputError, match="--runner PATH"):
            agent.measure_batch(files, FAST, 0)


def test_settings_the_phone_cannot_honour(phone, runner):
    with agent_for(phone, runner) as agent:
        with pytest.raises(BadInputError, match="cannot run on an Android phone"):
            agent.check_settings(RunSettings(runtime="torch"))
        with pytest.raises(BadInputError, match="core 8 does not exist"):
            agent.check_settings(RunSettings(cores=(8,)))
        with pytest.raises(BadInputError, match="onnx-runner"):
            agent.check_settings(RunSettings(runtime="onnxruntime"))


@pytest.mark.parametrize("fault", ["garble", "truncate", "crash"])
def test_bad_runner_output_fails_that_model_only(phone, runner, tflite_model, tmp_path, fault):
    files = models(tmp_path, tflite_model, ["a.tflite", "b.tflite", "c.tflite"])
    phone.faults.runner_fault, phone.faults.runner_fault_count = fault, 1
    with agent_for(phone, runner) as agent:
        results = agent.measure_batch(files, FAST, 0)
    assert not results[0].ok and results[1].ok and results[2].ok
    assert "\n" not in results[0].status
    expected = {"garble": "no timings", "truncate": "exited with status 1", "crash": "exited with status"}
    assert expected[fault] in results[0].status


def test_missing_model_file_on_phone_is_a_per_model_error(phone, runner, tflite_model, tmp_path):
    files = models(tmp_path, tflite_model, ["a.tflite", "b.tflite"])
    with agent_for(phone, runner, keep_files=True) as agent:
        agent.measure_batch(files, FAST, 0)
        next((phone.device_tmp / "lutnas" / "models").glob("*a.tflite")).unlink()
        agent._device_sha256 = lambda paths: {p: f.sha256 for p, f in zip(paths, files)}  # stale view
        results = agent.measure_batch(files, FAST, 1)
    assert "exited with status 1" in results[0].status and results[1].ok


def test_hot_phone_is_waited_for_and_recorded(phone, runner, tflite_model, tmp_path):
    files = models(tmp_path, tflite_model, ["a.tflite"])
    phone.faults.hot_reads, phone.faults.hot_c = 3, 71.5
    with agent_for(phone, runner, max_temp_c=45) as agent:
        (m,) = agent.measure_batch(files, FAST, 0)
        assert len(agent.cooldown_waits_s) == 1
        assert any("71.5 °C is above 45" in msg for msg in agent.messages)
    assert m.ok and "cool from 71.5 °C" in m.raw_output
    assert m.temps_before["BIG"] == 38.2  # measured only once it cooled down


def test_dropped_connection_reconnects_and_the_batch_completes(phone, runner, tflite_model, tmp_path):
    files = models(tmp_path, tflite_model, [f"m{i}.tflite" for i in range(5)])
    # adb-shell notices a closed TCP socket only when its read times out, like a phone off Wi-Fi.
    with agent_for(phone, runner, command_timeout_s=3.0) as agent:
        agent.info()
        phone.faults.drop_after_commands = len(phone.commands) + 4  # mid-way through the pushes
        results = agent.measure_batch(files, FAST, 0)
        assert any("reconnect" in m for m in agent.messages)
    assert all(m.ok for m in results)


def test_unplugged_phone_is_a_device_error(phone, runner, tflite_model, tmp_path):
    files = models(tmp_path, tflite_model, ["a.tflite"])
    agent = agent_for(phone, runner, command_timeout_s=2.0)
    agent.info()
    phone.faults.drop_after_commands, phone.faults.offline_after_drop = len(phone.commands), True
    with pytest.raises(DeviceError, match="cannot connect to 127.0.0.1") as info:
        agent.measure_batch(files, FAST, 0)
    assert "\n" not in str(info.value)
    agent.close()


def test_slow_answers_within_the_timeout_work_beyond_it_fail_clearly(phone, runner, tflite_model,
                                                                      tmp_path):
    files = models(tmp_path, tflite_model, ["a.tflite"])
    phone.faults.slow_s = 0.1
    with agent_for(phone, runner) as agent:
        assert agent.measure_batch(files, FAST, 0)[0].ok
    phone.faults.slow_s = 1.5
    agent = agent_for(phone, runner, command_timeout_s=0.5)
    with pytest.raises(DeviceError, match="failed 3 times.*timeout 0.5 s"):
        agent.info()
    phone.faults.slow_s = 0
    agent.close()


def test_two_phones_in_parallel(tmp_path, adb_key, runner, tflite_model):
    files = models(tmp_path, tflite_model, ["a.tflite", "b.tflite"])
    results: dict[str, list] = {}
    with SimulatedAdbd(tmp_path / "p7", "pixel7") as p7, SimulatedAdbd(tmp_path / "a52", "galaxy_a52") as a52:
        def work(server: SimulatedAdbd) -> None:
            with agent_for(server, runner) as agent:
                results[agent.info().device_id] = agent.measure_batch(files, FAST, 0)

        threads = [threading.Thread(target=work, args=(s,)) for s in (p7, a52)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert set(results) == {"android:google-pixel-7:SIMPIXEL7", "android:samsung-sm-a525f:SIMA52"}
    assert all(m.ok for ms in results.values() for m in ms)


def test_bad_addresses():
    for address in ("adb:", "adb:host:port", "adb::5555"):
        with pytest.raises(BadInputError, match="adb:HOST"):
            AdbAgent.from_address(address, AdbOptions())
    assert AdbAgent.from_address("adb:10.0.0.2", AdbOptions()).address == "10.0.0.2:5555"


def test_cli_devices_prints_the_fingerprint(phone, capsys):
    from lutnas.cli import main

    assert main(["devices", "--device", f"adb:{phone.address}"]) == 0
    out = capsys.readouterr().out
    assert "android:google-pixel-7:SIMPIXEL7" in out and "GS201" in out and "2850 MHz" in out
    assert main(["devices", "--device", f"adb:{phone.address}", "--json"]) == 0
    assert '"model": "Pixel 7"' in capsys.readouterr().out
    assert main(["devices", "--device", "adb:host:port"]) == 2
