"""Android phones over ADB (adb-shell: TCP or USB, no adb server needed).

`AdbTransport` is the connection: the host's ADB key and the phone's "Allow USB debugging?"
prompt, reconnecting by the retry policy when the phone drops off, shell commands and pushes.
`AdbAgent` is a `RemoteAgent` (runner programs, pushes by hash, cool-down) over that transport on
the Android platform. `AdbOptions` are the connection's options; the runner's are `RemoteOptions`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lutnas.device_agents.adb_keys import key_path, load_signer
from lutnas.device_agents.android import ANDROID
from lutnas.device_agents.policy import (
    DeviceLostError,
    Reconnecting,
    RetryPolicy,
    TransientError,
    retry_transient,
)
from lutnas.device_agents.remote import RemoteAgent, RemoteOptions
from lutnas.device_agents.transport import FileRefusedError, ShellTransport
from lutnas.errors import BadInputError, DeviceError, LutnasError

DEFAULT_ADB_PORT = 5555
ADDRESS_FORMS = f"'adb:HOST[:PORT]' (TCP, port {DEFAULT_ADB_PORT} by default) or 'usb[:SERIAL]'"
T = TypeVar("T")


@dataclass(frozen=True)
class AdbOptions:
    """How to connect to a phone over ADB."""

    adb_key: Path | None = None  # default $LUTNAS_ADB_KEY, else ~/.android/adbkey
    command_timeout_s: float = 300.0  # the longest one shell command or push may take
    auth_timeout_s: float = 60.0  # how long the user has to tap "Allow" on the phone


class AdbTransport(ShellTransport):
    """The ADB connection to one phone; reopened (with back-off) when it drops."""

    def __init__(self, address: str, make_device: Callable[[], Any], options: AdbOptions | None = None,
                 retry: RetryPolicy | None = None) -> None:
        self.options = options or AdbOptions()
        super().__init__(address, self.options.command_timeout_s, retry)
        self._make_device = make_device
        self._device: Any = None
        self._key = key_path(self.options.adb_key)
        self._signer: Any = None

    # -- connection ------------------------------------------------------------------------------
    def _connect(self) -> None:
        if self._signer is None:
            self._signer = load_signer(self._key)
        try:
            self._device, attempt = retry_transient(self._connect_once, self.retry.reconnect_delays_s)
        except TransientError as exc:
            raise DeviceLostError(
                f"cannot connect to {self.address} after {self.retry.connect_attempts} attempts ({exc}): "
                "check the phone is on, USB debugging is enabled (for TCP: `adb tcpip 5555` once over "
                "USB) and the address is right") from exc
        if attempt:
            self.on_message(f"{self.address}: reconnected after {attempt} attempt(s)")

    def _connect_once(self, attempt: int) -> tuple[Any, int]:
        """One connection attempt; an error that will repeat is raised as it is, others as transient."""
        from adb_shell import exceptions as adb_exc

        prompted = []

        def on_prompt(_device: object) -> None:
            prompted.append(True)
            self.on_message(f"{self.address}: waiting up to {self.options.auth_timeout_s:.0f} s for you to "
                            f"tap 'Allow' on the phone's 'Allow USB debugging?' prompt (key {self._key}.pub)")

        try:
            device = self._make_device()
            device.connect(rsa_keys=[self._signer], auth_timeout_s=self.options.auth_timeout_s,
                           read_timeout_s=self.command_timeout_s, auth_callback=on_prompt)
        except LutnasError:
            raise
        except adb_exc.UsbDeviceNotFoundError as exc:
            raise DeviceError(f"no Android device on USB ({self.address}): plug it in, enable USB "
                              "debugging, or use adb:HOST[:PORT]") from exc
        except Exception as exc:  # noqa: BLE001 - adb-shell raises many types; sorted below
            text = f"{type(exc).__name__}: {exc}"
            if "'STLS'" in text:  # Android 11+ wireless debugging: TLS, which adb-shell does not speak
                raise DeviceError(f"{self.address} answered with STLS: TLS pairing is not supported; "
                                  "use adb tcpip 5555 once over USB") from exc
            if prompted:
                raise DeviceError(
                    f"{self.address} did not accept this computer's ADB key {self._key}.pub ({text}): "
                    "unlock the phone, tap 'Allow' on 'Allow USB debugging?' (tick 'Always allow') "
                    "and rerun; if you tapped Deny, revoke USB debugging authorizations in "
                    "Developer options first") from exc
            if "busy" in text.lower() or "LIBUSB_ERROR_ACCESS" in text:
                raise DeviceError(f"{self.address}: the USB device is held by another program, "
                                  "usually the host adb server: run `adb kill-server` and retry") from exc
            raise TransientError(text) from exc
        return device, attempt

    def _close_device(self) -> None:
        if self._device is not None:
            try:
                self._device.close()
            except Exception:  # noqa: BLE001 - closing a dead transport may fail any way it likes
                pass
            self._device = None

    def _call(self, what: str, action: Callable[[Any], T]) -> T:
        """Run `action(device)`; a dropped or stuck connection is reopened and the action retried."""
        from adb_shell import exceptions as adb_exc

        transient = (OSError, socket.timeout, adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException,
                     adb_exc.AdbConnectionError, adb_exc.InvalidResponseError, adb_exc.InvalidCommandError,
                     adb_exc.InvalidChecksumError, adb_exc.UsbReadFailedError, adb_exc.UsbWriteFailedError,
                     ConnectionError)
        calls = Reconnecting(self.address, lambda: self._device is not None, self._connect,
                             self._close_device, transient, lambda text: self.on_message(text))
        return calls.call(what, lambda: action(self._device), self.retry.command_attempts,
                          f"(timeout {self.command_timeout_s:g} s a command); the device stopped answering")

    # -- ShellTransport ----------------------------------------------------------------------------
    def shell(self, command: str, timeout_s: float | None = None) -> str:
        timeout = timeout_s or self.command_timeout_s

        def run(device: Any) -> str:
            raw = device.shell(command, read_timeout_s=timeout, timeout_s=timeout,
                               transport_timeout_s=timeout, decode=False)
            return raw.decode("utf-8", "replace")

        return self._call("shell command", run)

    def push(self, local: Path, device_path: str, mode: int = 0o644) -> None:
        import stat as stat_mod

        from adb_shell.exceptions import PushFailedError

        def run(device: Any) -> None:
            try:
                device.push(str(local), device_path, st_mode=stat_mod.S_IFREG | mode,
                            read_timeout_s=self.command_timeout_s)
            except PushFailedError as exc:
                raise FileRefusedError(f"{self.address}: pushing {local.name} to {device_path} failed: "
                                       f"{_text(exc)}") from exc

        self._call(f"push of {local.name}", run)

    def close(self) -> None:
        self._close_device()

    def push_hint(self, name: str, device_dir: str) -> str:
        return f"push it (adb push {name} {device_dir}/)"

    def shell_hint(self, command: str) -> str:
        return f"run `adb shell {command}`"


class AdbAgent(RemoteAgent):
    """One phone over ADB. Not thread-safe: a device farm opens one agent per phone and worker."""

    @staticmethod
    def accepts(address: str) -> bool:
        return address.startswith("adb:") or address == "usb" or address.startswith("usb:")

    @classmethod
    def from_address(cls, address: str, options: AdbOptions | None = None,
                     remote: RemoteOptions | None = None) -> "AdbAgent":
        """`adb:HOST[:PORT]` or `usb[:SERIAL]` -> an agent (it connects on first use)."""
        options = options or AdbOptions()
        return cls(_transport(address, options), ANDROID, remote)


def _transport(address: str, options: AdbOptions) -> AdbTransport:
    if address.startswith("adb:"):
        host, _, port_text = address[4:].partition(":")
        port_text = port_text or str(DEFAULT_ADB_PORT)
        if not host or not port_text.isdigit():
            raise BadInputError(f"bad device address {address!r}: use adb:HOST[:PORT], e.g. "
                                f"adb:192.168.1.20:{DEFAULT_ADB_PORT}")
        port = int(port_text)
        return AdbTransport(f"{host}:{port}", lambda: _tcp_device(host, port, options.command_timeout_s),
                            options)
    serial = address[4:] if address.startswith("usb:") else None

    def make_usb() -> Any:
        try:
            from adb_shell.adb_device import AdbDeviceUsb
        except ImportError as exc:  # pragma: no cover - depends on the host
            raise DeviceError("USB needs libusb: install the Debian package libusb-1.0-0 "
                              "(apt-get install adb brings it) and adb-shell[usb]") from exc
        return AdbDeviceUsb(serial=serial, default_transport_timeout_s=options.command_timeout_s)

    return AdbTransport(f"usb:{serial or 'first'}", make_usb, options)


def _tcp_device(host: str, port: int, timeout_s: float) -> Any:
    from adb_shell.adb_device import AdbDevice
    from adb_shell.transport.tcp_transport import TcpTransport

    class ClosedAwareTcpTransport(TcpTransport):
        """adb-shell reads a closed socket (recv -> b"") until its timeout; fail at once instead,
        so a dropped connection is reopened in milliseconds, not after command_timeout_s."""

        def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data and numbytes:
                raise ConnectionResetError(f"{self._host}:{self._port} closed the connection")
            return data

    return AdbDevice(ClosedAwareTcpTransport(host, port), default_transport_timeout_s=timeout_s)


def _text(exc: Exception) -> str:
    value = exc.args[0] if exc.args else exc
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
