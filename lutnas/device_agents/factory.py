"""Turn a `--device` address into an agent: `local`, `adb:HOST[:PORT]`, `usb[:SERIAL]`,
`ssh:USER@HOST[:PORT]`.

`AgentOptions` bundles each agent kind's own options (they live with their agent); the address
decides which kind opens and which part of the bundle it reads. A new kind of device adds its
options field here and one entry to `AGENT_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lutnas.device_agents.adb import ADDRESS_FORMS, AdbAgent, AdbOptions
from lutnas.device_agents.base import DeviceAgent
from lutnas.device_agents.local import LocalAgent, LocalOptions
from lutnas.device_agents.remote import RemoteOptions
from lutnas.device_agents.ssh import ADDRESS_FORMS as SSH_FORMS
from lutnas.device_agents.ssh import SshAgent, SshOptions
from lutnas.errors import BadInputError


@dataclass(frozen=True)
class AgentOptions:
    """Options for whichever agent an address opens; each kind reads only its own parts.

    `remote`: runner programs, cool-down and cleanup of any shell-reached device (ADB, SSH);
    `adb`: the ADB connection; `ssh`: the SSH connection and the board's Python; `local`: the
    host's worker process.
    """

    remote: RemoteOptions = field(default_factory=RemoteOptions)
    adb: AdbOptions = field(default_factory=AdbOptions)
    local: LocalOptions = field(default_factory=LocalOptions)
    ssh: SshOptions = field(default_factory=SshOptions)


@dataclass(frozen=True)
class AgentKind:
    """One kind of device address: which addresses it takes and how it opens them."""

    forms: str  # the address forms, for the error on an unknown address
    accepts: Callable[[str], bool]
    open: Callable[[str, AgentOptions], DeviceAgent]


AGENT_KINDS: tuple[AgentKind, ...] = (
    AgentKind("'local'", LocalAgent.accepts, lambda address, o: LocalAgent(o.local)),
    AgentKind(ADDRESS_FORMS, AdbAgent.accepts,
              lambda address, o: AdbAgent.from_address(address, o.adb, o.remote)),
    AgentKind(SSH_FORMS, SshAgent.accepts,
              lambda address, o: SshAgent.from_address(address, o.ssh, o.remote)),
)


def open_agent(address: str, options: AgentOptions | None = None) -> DeviceAgent:
    """The agent for `address` (it connects on first use). BadInputError for an unknown address."""
    options = options or AgentOptions()
    for kind in AGENT_KINDS:
        if kind.accepts(address):
            return kind.open(address, options)
    raise BadInputError(f"unknown device {address!r}: use {' or '.join(k.forms for k in AGENT_KINDS)}")
