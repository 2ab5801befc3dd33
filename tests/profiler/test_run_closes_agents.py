# ruff: noqa: F811 - pytest fixtures imported from tests.adbd.fixtures are redefined as arguments
"""`run_profile` closes every agent it opened when anything before the loop refuses: a setting a
device cannot honour, the same device twice, an unknown address after a good one. Checked on the
simulated phone's side: its ADB connection is released, not left open until garbage collection."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lutnas.device_agents.base import RunSettings
from lutnas.device_agents.factory import AgentOptions
from lutnas.device_agents.local import LocalAgent
from lutnas.device_agents.remote import RemoteOptions
from lutnas.errors import BadInputError
from lutnas.profiler.run import run_profile
from tests.adbd import SimulatedAdbd
from tests.adbd.fixtures import _session_adb_key, adb_key, phone, runner  # noqa: F401


def _connections(phone: SimulatedAdbd, wait_s: float = 5.0) -> int:
    """The phone's open ADB connections once the client had `wait_s` to close them."""
    deadline = time.monotonic() + wait_s
    while phone._sockets and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(phone._sockets)


def _refused(devices: list, settings: RunSettings, runner: Path, store: Path, match: str) -> None:
    options = AgentOptions(remote=RemoteOptions(runner=runner))
    with pytest.raises(BadInputError, match=match):
        run_profile(devices, "tiny", settings, store, agent_options=options, trials=1)
    assert not store.exists()  # refused before the store was created


def test_a_setting_the_phone_cannot_honour_releases_its_connection(phone: SimulatedAdbd, runner: Path,
                                                                   tmp_path: Path):
    _refused([f"adb:{phone.address}"], RunSettings(cores=(99,)), runner, tmp_path / "m.sqlite",
             "core 99 does not exist")
    assert phone.commands  # the agent did connect (it read the phone's cores) ...
    assert _connections(phone) == 0  # ... and let go


def test_a_refusal_on_the_second_device_closes_the_first(phone: SimulatedAdbd, runner: Path,
                                                         tmp_path: Path):
    # the phone's benchmark_model takes the GPU; the host's worker refuses it
    _refused([f"adb:{phone.address}", "local"], RunSettings(accelerator="gpu"), runner,
             tmp_path / "m.sqlite", "CPU only")
    assert phone.commands and _connections(phone) == 0


def test_the_same_phone_twice_closes_both_connections(phone: SimulatedAdbd, runner: Path, tmp_path: Path):
    options = AgentOptions(remote=RemoteOptions(runner=runner))
    address = f"adb:{phone.address}"
    with pytest.raises(BadInputError, match="given twice"):
        run_profile([address, address], "tiny", RunSettings(), tmp_path / "m.sqlite",
                    agent_options=options, trials=1)
    assert _connections(phone) == 0


class _CountingAgent(LocalAgent):
    closed = 0

    def close(self) -> None:
        _CountingAgent.closed += 1
        super().close()


def test_an_unknown_address_after_an_open_agent_closes_it(tmp_path: Path):
    with pytest.raises(BadInputError, match="unknown device 'nowhere'"):
        run_profile([_CountingAgent(), "nowhere"], "tiny", RunSettings(), tmp_path / "m.sqlite")
    assert _CountingAgent.closed == 1
