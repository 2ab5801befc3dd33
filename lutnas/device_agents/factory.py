"""Turn a `--device` address into an agent: `local`, `adb:HOST[:PORT]`, `usb[:SERIAL]`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lutnas.device_agents.base import DeviceAgent
from lutnas.errors import BadInputError

DEFAULT_ADB_PORT = 5555


@dataclass(frozen=True)
class AgentOptions:
    """Options a device agent may need; each agent reads the ones that concern it."""

    runner: Path | None = None  # host path of the phone's benchmark_model, pushed once
    runner_on_device: str | None = None  # a runner already on the phone
    onnx_runner: Path | None = None  # host path of onnxruntime_perf_test for the phone
    max_temp_c: float = 45.0
    keep_files: bool = False
    adb_key: Path | None = None  # default ~/.android/adbkey
    command_timeout_s: float = 300.0


def open_agent(address: str, options: AgentOptions | None = None) -> DeviceAgent:
    options = options or AgentOptions()
    if address == "local":
        from lutnas.device_agents.local import LocalAgent

        return LocalAgent()
    if address.startswith("adb:") or address == "usb" or address.startswith("usb:"):
        from lutnas.device_agents.adb import AdbAgent

        return AdbAgent.from_address(address, options)
    raise BadInputError(
        f"unknown device {address!r}: use 'local', 'adb:HOST[:PORT]' (TCP, port {DEFAULT_ADB_PORT} "
        f"by default) or 'usb[:SERIAL]'"
    )
