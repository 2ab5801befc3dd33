"""The transport contract: how lutnas reaches a device through a shell (ADB, SSH).

A transport runs shell commands and copies files; it knows nothing about runners or models. It
owns its connection and reconnects by the `policy.RetryPolicy` it is given. What it raises says
what happened:
- `policy.DeviceLostError` when the device stopped answering (transient failures kept coming);
- `FileRefusedError` for one file the device refuses (that file fails, the batch goes on);
- another `DeviceError` for a failure of the device that will repeat (a key it rejects);
- `BadInputError` for what the user must fix (a bad address, an unreadable key).
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from lutnas.device_agents.policy import RetryPolicy
from lutnas.errors import DeviceError


def print_notice(text: str) -> None:
    """Default destination of transport and agent notices: one line on stderr."""
    print(text, file=sys.stderr, flush=True)


class ShellTransport(ABC):
    """One device reached through a shell. Used from one thread."""

    def __init__(self, address: str, command_timeout_s: float, retry: RetryPolicy | None = None) -> None:
        self.address = address  # how notices and errors name the device, e.g. "192.168.1.20:5555"
        self.command_timeout_s = command_timeout_s  # the longest one command may take
        self.retry = retry or RetryPolicy()
        self.on_message: Callable[[str], None] = print_notice  # the agent routes these to its own

    @abstractmethod
    def shell(self, command: str, timeout_s: float | None = None) -> str:
        """Run `command` with the device's /bin/sh; stdout and stderr together, decoded."""

    @abstractmethod
    def push(self, local: Path, device_path: str, mode: int = 0o644) -> None:
        """Copy the host file `local` to `device_path` with permission bits `mode`."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection (safe to call twice; a later command reconnects)."""

    def push_hint(self, name: str, device_dir: str) -> str:
        """How a user copies a file there by hand, for error messages."""
        return f"copy {name} to {device_dir}/ on {self.address}"

    def shell_hint(self, command: str) -> str:
        """How a user runs a command there by hand, for error messages."""
        return f"run `{command}` on {self.address}"


class FileRefusedError(DeviceError):
    """The device refused one file (full, read-only, bad path): it would refuse it again, so that
    file's measurement fails and the rest of the batch goes on."""
