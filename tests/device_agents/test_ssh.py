"""The SSH agent against a real OpenSSH server on loopback (tests/sshd.py): host-key checks, key
authentication, this machine's fingerprint read over SSH, uploads by hash, the runner's
architecture check, and `profile-device --device ssh:...` end to end with lutnas's worker run by
this machine's .venv Python (a fresh process per trial) and with a benchmark_model double."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lutnas.cli import main, profile_device_main
from lutnas.device_agents.base import ModelFile
from lutnas.device_agents.factory import AgentOptions, open_agent
from lutnas.device_agents.policy import RetryPolicy
from lutnas.device_agents.remote import elf_abi
from lutnas.device_agents.ssh import SshAgent, SshOptions, parse_address
from lutnas.errors import BadInputError
from lutnas.tables.store import MeasurementStore
from tests.sshd import Sshd, keygen, sshd_missing

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    reason = sshd_missing()
    if reason:
        pytest.skip(reason)
    with Sshd(tmp_path / "sshd") as server:
        yield server


def agent_for(server: Sshd, tmp_path: Path, **ssh) -> SshAgent:
    ssh.setdefault("key", server.client_key)
    ssh.setdefault("known_hosts", server.known_hosts)
    ssh.setdefault("work_dir", str(tmp_path / "board"))
    agent = open_agent(server.address, AgentOptions(ssh=SshOptions(**ssh)))
    assert isinstance(agent, SshAgent)
    agent.transport.retry = RetryPolicy(reconnect_delays_s=(0.05, 0.1))
    agent.messages = []
    agent.on_message = agent.messages.append
    return agent


def ssh_flags(server: Sshd, known_hosts: Path | None = None, key: Path | None = None) -> list[str]:
    return ["--ssh-key", str(key or server.client_key),
            "--ssh-known-hosts", str(known_hosts or server.known_hosts)]


def test_addresses():
    assert parse_address("ssh:pi@raspberrypi.local") == ("pi", "raspberrypi.local", 22)
    assert parse_address("ssh:root@127.0.0.1:2222") == ("root", "127.0.0.1", 2222)
    assert parse_address("ssh:me@[fe80::1]:2200") == ("me", "fe80::1", 2200)
    for bad in ("ssh:host", "ssh:@host", "ssh:u@h:x", "ssh:u@h:70000"):
        with pytest.raises(BadInputError, match="ssh:USER@HOST"):
            parse_address(bad)


def test_unknown_host_key_is_refused_with_its_fingerprint(sshd: Sshd, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture):
    empty = tmp_path / "known_hosts"
    assert main(["devices", "--device", sshd.address, *ssh_flags(sshd, known_hosts=empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SHA256:" in err and "ssh-ed25519" in err
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in err
    assert not empty.exists()  # never added silently
    changed = tmp_path / "changed_hosts"
    other = Path(f"{keygen(tmp_path / 'other_host')}.pub").read_text().split()
    changed.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    assert main(["devices", "--device", sshd.address, *ssh_flags(sshd, known_hosts=changed)]) == 2
    assert "differs from the one" in capsys.readouterr().err


def test_hashed_known_hosts_and_environment_defaults(sshd: Sshd, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    """`ssh-keyscan -H` writes hashed names; commands without SSH flags (evaluate, build-table
    --calibrate-on, search --verify-on) read the key, known_hosts and Python from the environment."""
    import subprocess

    hashed = tmp_path / "hashed_hosts"
    hashed.write_text(sshd.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert "127.0.0.1" not in hashed.read_text()
    monkeypatch.setenv("LUTNAS_SSH_KEY", str(sshd.client_key))
    monkeypatch.setenv("LUTNAS_SSH_KNOWN_HOSTS", str(hashed))
    monkeypatch.setenv("LUTNAS_REMOTE_PYTHON", sys.executable)
    with open_agent(sshd.address) as agent:
        assert agent.info().libraries["python"] == platform.python_version()


def test_a_key_the_board_does_not_accept_fails_clearly(sshd: Sshd, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture):
    other = keygen(tmp_path / "other")
    assert main(["devices", "--device", sshd.address, *ssh_flags(sshd, key=other)]) == 1
    err = capsys.readouterr().err
    assert f"refused the key {other}" in err and "authorized_keys" in err
    unreadable = tmp_path / "not_a_key"
    unreadable.write_text("hello\n")
    assert main(["devices", "--device", sshd.address, *ssh_flags(sshd, key=unreadable)]) == 2


def test_fingerprint_of_this_machine_over_ssh(sshd: Sshd, tmp_path: Path, capsys: pytest.CaptureFixture):
    with agent_for(sshd, tmp_path, remote_python=sys.executable) as agent:
        info = agent.info()
    machine_id = Path("/etc/machine-id").read_text().strip()[:12] if Path("/etc/machine-id").exists() else ""
    assert info.kind == "linux" and info.device_id.startswith("linux:")
    assert info.device_id.endswith(machine_id)
    assert info.abi == platform.machine() and platform.release() in info.os_version
    assert info.cores == os.cpu_count()
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert info.extra["memory_total_kb"] == int(meminfo["MemTotal"].split()[0])
    assert info.extra["hostname"] == platform.node()
    assert info.libraries["python"] == platform.python_version()
    assert info.libraries["ai-edge-litert"] and info.libraries["onnxruntime"]
    zones = sorted(p.name for p in Path("/sys/class/thermal").glob("thermal_zone*"))
    assert len(info.extra["thermal_zones"]) <= len(zones)
    assert main(["devices", "--device", sshd.address, *ssh_flags(sshd), "--json"]) == 0
    assert info.device_id in capsys.readouterr().out


def test_shell_quotes_and_uploads_by_hash(sshd: Sshd, tmp_path: Path):
    weird = "a b; echo $HOME 'q' \"d\" `x` \\ *"
    with agent_for(sshd, tmp_path) as agent:
        assert agent.shell(f"printf %s {shlex.quote(weird)}") == weird
        source = tmp_path / "my model.tflite"
        source.write_bytes(b"not really a model")
        remote = {0: f"{tmp_path}/board/models/x y.bin"}
        files = [ModelFile.from_path(source, "k")]
        agent.shell(f"mkdir -p {shlex.quote(str(tmp_path / 'board/models'))}")
        agent._push_models(files, remote, None, 0)
        first = os.stat(remote[0]).st_mtime_ns
        time.sleep(0.02)
        agent._push_models(files, remote, None, 0)  # same sha256 on the board: not copied again
        assert os.stat(remote[0]).st_mtime_ns == first
        assert Path(remote[0]).read_bytes() == source.read_bytes()
    assert not Path(remote[0]).exists()  # close() removes what was pushed


def test_a_dry_run_asks_for_missing_files_in_the_boards_work_dir_before_info(sshd: Sshd, tmp_path: Path):
    source = tmp_path / "block.tflite"
    source.write_bytes(b"not really a model")
    files = [ModelFile.from_path(source, "k")]
    with agent_for(sshd, tmp_path) as agent:  # no info() yet: the dry run's first call
        assert agent.pushes_files and agent.missing_files(files) == files
        agent.push_files(files)
        assert agent.missing_files(files) == []
        (pushed,) = (tmp_path / "board" / "models").iterdir()  # the work dir, not /tmp/lutnas
        assert pushed.read_bytes() == source.read_bytes()
        agent.forget_files(files)
        assert agent.missing_files(files) == files and not pushed.exists()


def test_a_runner_for_another_architecture_is_refused_before_upload(sshd: Sshd, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture):
    other = 0x3E if platform.machine() == "aarch64" else 0xB7
    runner = tmp_path / "benchmark_model"
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + other.to_bytes(2, "little") + b"\0" * 44
    runner.write_bytes(header)
    assert elf_abi(header) == ("x86_64" if other == 0x3E else "arm64-v8a")
    code = profile_device_main(["--device", sshd.address, *ssh_flags(sshd), "--runner", str(runner),
                                "--space", "tiny", "--limit", "1", "--trials", "1",
                                "--store", str(tmp_path / "m.sqlite")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"is {platform.machine()} (uname -m)" in err
    assert not (Path.home() / ".cache/lutnas/benchmark_model").exists()


def profile(store: Path, server: Sshd, *devices: str, extra: tuple[str, ...] = ()) -> int:
    argv = [a for d in devices for a in ("--device", d)]
    return profile_device_main([*argv, *ssh_flags(server), "--space", "tiny", "--limit", "2",
                                "--trials", "2", "--warmup", "1", "--runs", "3", "--store", str(store),
                                # host timings are noisy: no QC re-measures here
                                "--cv-bound", "10", "--drift-bound", "10", "--max-remeasure", "0", *extra])


def ok_keys(store: Path) -> dict[str, set[str]]:
    with MeasurementStore(store) as db:
        frame = db.measurements_frame()
    frame = frame[frame["status"] == "ok"]
    return {device: set(group["key"]) for device, group in frame.groupby("device_id")}


@pytest.mark.slow
def test_profile_local_and_ssh_into_one_store_with_the_remote_worker(sshd: Sshd, tmp_path: Path):
    store = tmp_path / "m.sqlite"
    assert profile(store, sshd, "local", sshd.address, extra=("--remote-python", sys.executable)) == 0
    measured = ok_keys(store)
    ssh_ids = [d for d in measured if d.startswith("linux:")]
    assert len(measured) == 2 and len(ssh_ids) == 1 and len(measured[ssh_ids[0]]) >= 2
    with MeasurementStore(store) as db:
        frame = db.measurements_frame(device_id=ssh_ids[0])
    assert set(frame["runner_name"]) == {"ai_edge_litert"}
    assert not (Path.home() / ".cache/lutnas/py").exists()  # the uploaded worker is removed
    before = len(frame)
    assert profile(store, sshd, sshd.address, extra=("--remote-python", sys.executable)) == 0
    with MeasurementStore(store) as db:
        assert len(db.measurements_frame(device_id=ssh_ids[0])) == before  # a rerun measures nothing


@pytest.mark.slow
def test_profile_with_a_benchmark_model_double(sshd: Sshd, tmp_path: Path):
    runner = tmp_path / "benchmark_model"  # a script, so no ELF check: the double under .venv's Python
    runner.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
                      f"{shlex.quote(str(REPO / 'tests/adbd/benchmark_model'))} \"$@\"\n")
    runner.chmod(0o755)
    store = tmp_path / "m.sqlite"
    assert profile(store, sshd, sshd.address, extra=("--runner", str(runner), "--cores", "0")) == 0
    with MeasurementStore(store) as db:
        frame = db.measurements_frame()
    assert set(frame["runner_name"]) == {"benchmark_model"} and (frame["status"] == "ok").sum() >= 2


def after_first_measurement(store: Path, action: Callable[[], None]) -> threading.Event:
    """Run `action` (in a thread) as soon as `store` holds a measurement; the event says it ran."""
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                with MeasurementStore(store) as db:
                    if len(db.measurements_frame()):
                        action()
                        done.set()
                        return
            except Exception:  # noqa: BLE001 - the store may not exist yet
                continue

    threading.Thread(target=watch, daemon=True).start()
    return done


LONGER = ("--remote-python", sys.executable, "--limit", "4", "--trials", "2", "--runs", "20")


@pytest.mark.slow
def test_a_dropped_connection_is_reopened_and_the_run_goes_on(sshd: Sshd, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture):
    store = tmp_path / "m.sqlite"
    dropped = after_first_measurement(store, sshd.drop_sessions)
    code = profile(store, sshd, sshd.address, extra=LONGER)
    err = capsys.readouterr().err
    assert dropped.is_set() and code == 0, err
    assert "reconnect" in err
    (keys,) = ok_keys(store).values()
    assert len(keys) >= 4


@pytest.mark.slow
def test_sshd_killed_mid_run_fails_clearly_and_the_rerun_resumes(sshd: Sshd, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture):
    store = tmp_path / "m.sqlite"
    killed = after_first_measurement(store, sshd.kill)
    code = profile(store, sshd, sshd.address, extra=LONGER)
    err = capsys.readouterr().err
    assert killed.is_set() and code == 1, err
    assert "cannot connect to" in err and "reconnecting" in err
    kept = sum(len(k) for k in ok_keys(store).values())
    sshd.start()
    assert profile(store, sshd, sshd.address, extra=LONGER) == 0
    assert sum(len(k) for k in ok_keys(store).values()) >= max(kept, 4)
