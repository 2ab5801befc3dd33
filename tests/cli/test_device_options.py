"""One definition of the device flags (lutnas/cli/device_options.py) on every command that takes a
device (issues 12 and 16): `--accelerator` on build-table, evaluate and search; `--device
ssh:USER@HOST[:PORT]` with --ssh-key/--ssh-known-hosts/--remote-python and the runner flags on
evaluate, build-table --calibrate-on and search --verify-on, reaching a real sshd."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lutnas.cli import build_parser, main
from lutnas.cli.device_options import agent_options
from lutnas.device_agents.base import DeviceInfo, RunSettings
from lutnas.space import SearchSpace
from lutnas.tables.store import MeasurementStore
from lutnas.tables.table import LatencyTable
from tests.adbd import SimulatedAdbd
from tests.adbd.fixtures import _session_adb_key  # noqa: F401 - a pytest fixture
from tests.sshd import Sshd, sshd_missing
from tests.tables.synthetic import add_trials, device

RUNNER = str(Path(__file__).parents[1] / "adbd" / "benchmark_model")  # exists (checked before any device)
DEVICE_FLAGS = ["--runner", RUNNER, "--runner-kind", "litert", "--runner-arg=--use_gpu=true",
                "--max-temp", "40", "--ssh-key", "/k", "--ssh-known-hosts", "/kh", "--remote-python", "py3",
                "--adb-key", "/a"]
COMMANDS = {
    "evaluate": ["evaluate", "--table", "t.parquet", "--device", "ssh:pi@board"],
    "build-table": ["build-table", "--out", "t.parquet", "--calibrate-on", "ssh:pi@board"],
    "search": ["search", "--table", "t.parquet", "--target-ms", "5", "--out", "o", "--verify-on",
               "ssh:pi@board"],
    "profile-device": ["profile-device", "--space", "tiny", "--device", "ssh:pi@board"],
}
TRANSFER = ["transfer", "--from", "a.parquet", "--device", "ssh:pi@board", "--out", "b.parquet"]


@pytest.mark.parametrize("command", [*COMMANDS, "transfer"])
def test_every_device_command_takes_the_same_device_flags(command: str) -> None:
    # transfer measures blocks under table A's runtime and threads: it has no --accelerator
    argv = [*TRANSFER, *DEVICE_FLAGS] if command == "transfer" else \
        [*COMMANDS[command], *DEVICE_FLAGS, "--accelerator", "gpu"]
    args = build_parser(argv).parse_args(argv)
    options = agent_options(args)
    assert options.remote.runner == Path(RUNNER) and options.remote.runner_kind == "litert"
    assert options.remote.runner_args == ("--use_gpu=true",) and options.remote.max_temp_c == 40.0
    assert (options.ssh.key, options.ssh.known_hosts, options.ssh.remote_python) == \
        (Path("/k"), Path("/kh"), "py3")
    assert options.adb.adb_key == Path("/a")
    assert getattr(args, "accelerator", "gpu") == "gpu"


@pytest.mark.parametrize("flag", ["--runner", "--onnx-runner"])
def test_a_missing_runner_file_is_named_before_any_device_is_reached(flag: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    # nothing listens on port 1: were the device reached first, this would fail to connect (exit 1)
    code = main(["profile-device", "--device", "adb:127.0.0.1:1", flag, str(tmp_path / "bm"),
                 "--space", "tiny", "--store", str(tmp_path / "m.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and f"{flag} {tmp_path / 'bm'} does not exist" in err and "connect" not in err
    assert not (tmp_path / "m.sqlite").exists()


def test_every_command_that_reaches_a_device_takes_adb_key() -> None:
    """A command with the runner flags can reach a phone, so it takes --adb-key too (a new command
    that adds its own device flags instead of add_device_flags fails here)."""
    import argparse

    from lutnas.cli import COMMANDS

    def options_of(command: str) -> dict[str, argparse.Action]:
        parser = build_parser([command])  # only the command named is registered in full
        (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return commands.choices[command]._option_string_actions

    options = {command: options_of(command) for command in COMMANDS}
    reaching = {command for command, flags in options.items() if "--runner" in flags}
    assert {"profile-device", "evaluate", "build-table", "search", "transfer"} <= reaching
    assert sorted(c for c in reaching | {"devices"} if "--adb-key" not in options[c]) == []


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unknown_accelerator_is_refused_by_every_command(command: str,
                                                            capsys: pytest.CaptureFixture) -> None:
    argv = [*COMMANDS[command], "--accelerator", "tpu"]
    with pytest.raises(SystemExit) as refused:
        build_parser(argv).parse_args(argv)
    assert refused.value.code == 2 and "choose from 'cpu', 'gpu', 'nnapi', 'npu'" in capsys.readouterr().err


def _table(path: Path, info: DeviceInfo, settings: RunSettings) -> Path:
    """Every tiny block at 32 px at 0.1 ms, as measured on `info` under `settings`."""
    space = SearchSpace.load("tiny")
    keys = {spec.key: 0.1 for spec in space.unique_blocks([32])}
    return LatencyTable.from_latencies(keys, info, settings, "tiny").save(path)


def _store(path: Path, settings: RunSettings) -> Path:
    """Two trials of every tiny block at 32 px, measured on the synthetic host under `settings`."""
    with MeasurementStore(path) as db:
        db.upsert_device(device())
        run = db.start_run("host-test", settings, "tiny", "block", [])
        for spec in SearchSpace.load("tiny").unique_blocks([32]):
            add_trials(db, run, "host-test", settings, spec.key, [0.1, 0.11], kind=spec.kind)
    return path


@pytest.mark.parametrize("command", ["evaluate", "search"])
def test_an_accelerator_other_than_the_tables_is_refused(command: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    table = _table(tmp_path / "t.parquet", device(), RunSettings(runtime="onnxruntime"))
    argv = {"evaluate": ["evaluate", "--table", str(table), "--store", str(tmp_path / "m.sqlite")],
            "search": ["search", "--table", str(table), "--target-ms", "5", "--out", str(tmp_path / "o"),
                       "--no-export"]}[command]
    assert main([*argv, "--accelerator", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "--accelerator gpu" in err and "holds cpu latencies" in err
    assert "build-table --accelerator gpu" in err


def test_adb_key_reaches_the_phone_from_evaluate_and_calibrate_on(
        _session_adb_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulated phone trusts only the key given by --adb-key; $LUTNAS_ADB_KEY names another
    path. Both commands read the phone's fingerprint with the given key (no "allow USB debugging"
    prompt, no key created at the environment's path) and are then refused only because the table
    was measured on another device."""
    from lutnas.device_agents.adb_keys import KEY_ENV

    key = tmp_path / "mine" / "adbkey"
    key.parent.mkdir()
    for suffix in ("", ".pub"):
        key.with_name(f"adbkey{suffix}").write_bytes(Path(f"{_session_adb_key}{suffix}").read_bytes())
    key.chmod(0o600)
    elsewhere = tmp_path / "env" / "adbkey"
    monkeypatch.setenv(KEY_ENV, str(elsewhere))
    settings = RunSettings(runtime="tflite")
    table = _table(tmp_path / "t.parquet", device(), settings)
    store = _store(tmp_path / "m.sqlite", settings)
    with SimulatedAdbd(tmp_path / "pixel7", "pixel7", trusted_keys=[Path(f"{key}.pub")]) as phone:
        address = f"adb:{phone.address}"
        assert main(["evaluate", "--device", address, "--table", str(table), "--samples", "2",
                     "--resolution", "32", "--store", str(tmp_path / "e.sqlite"), "--adb-key", str(key)]) == 2
        assert "the device given is android:google-pixel-7" in capsys.readouterr().err
        assert main(["build-table", "--store", str(store), "--out", str(tmp_path / "b.parquet"),
                     "--calibrate", "2", "--resolution", "32", "--calibrate-on", address,
                     "--adb-key", str(key)]) == 2
        assert "the device given is android:google-pixel-7" in capsys.readouterr().err
        assert phone.prompts == 0
    assert not elsewhere.exists()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    reason = sshd_missing()
    if reason:
        pytest.skip(reason)
    with Sshd(tmp_path / "sshd") as server:
        yield server


def _ssh_flags(server: Sshd) -> list[str]:
    return ["--ssh-key", str(server.client_key), "--ssh-known-hosts", str(server.known_hosts),
            "--remote-python", sys.executable]


@pytest.mark.slow
def test_evaluate_and_calibrate_on_reach_the_board_with_the_ssh_flags(sshd: Sshd, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch):
    """The board is reached (its fingerprint read with the given key, known_hosts and Python) and
    refused only because the table was measured on another device, before anything is exported."""
    for name in ("LUTNAS_SSH_KEY", "LUTNAS_SSH_KNOWN_HOSTS", "LUTNAS_REMOTE_PYTHON"):
        monkeypatch.delenv(name, raising=False)
    settings = RunSettings(runtime="onnxruntime")
    table = _table(tmp_path / "t.parquet", device(), settings)
    evaluate = ["evaluate", "--device", sshd.address, "--table", str(table), "--samples", "2",
                "--resolution", "32", "--store", str(tmp_path / "e.sqlite")]
    assert main([*evaluate, *_ssh_flags(sshd)]) == 2
    err = capsys.readouterr().err
    assert "measured on host-test, but the device given is linux:" in err
    store = _store(tmp_path / "m.sqlite", settings)
    build = ["build-table", "--store", str(store), "--out", str(tmp_path / "b.parquet"), "--calibrate",
             "2", "--resolution", "32", "--calibrate-on", sshd.address]
    assert main([*build, *_ssh_flags(sshd)]) == 2
    assert "the device given is linux:" in capsys.readouterr().err
    # without the flags (and no environment) the board's host key is unknown: refused, not trusted
    assert main(evaluate) != 0
    assert "known_hosts" in capsys.readouterr().err


@pytest.mark.slow
def test_search_verify_on_a_board_over_ssh(sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The winner is measured on the board (lutnas's worker run there by --remote-python) with the
    table's settings; the table is from another device, so the comparison is marked as crossing."""
    for name in ("LUTNAS_SSH_KEY", "LUTNAS_SSH_KNOWN_HOSTS", "LUTNAS_REMOTE_PYTHON"):
        monkeypatch.delenv(name, raising=False)
    table = _table(tmp_path / "t.parquet", device(), RunSettings(runtime="onnxruntime"))
    out = tmp_path / "search"
    assert main(["search", "--table", str(table), "--target-ms", "1.5", "--window-ms", "0.4",
                 "--out", str(out), "--seed", "1", "--population", "16", "--generations", "2",
                 "--verify-on", sshd.address, "--verify-trials", "1", "--accelerator", "cpu",
                 *_ssh_flags(sshd)]) == 0
    check = json.loads((out / "best.json").read_text())["verification"]
    assert check["device"].startswith("linux:") and check["same_device"] is False
    assert check["runtime"] == "onnxruntime" and check["measured_ms"] > 0
