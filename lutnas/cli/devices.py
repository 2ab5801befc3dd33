"""`lutnas devices --device ADDRESS ...`: print each device's fingerprint (DeviceInfo) and its state."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from rich.table import Table

from lutnas.cli._common import console
from lutnas.cli.device_options import DEVICE_FORMS, adb_options, add_adb_flags, add_ssh_flags, ssh_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("devices",
                                   help=f"fingerprint devices ({DEVICE_FORMS})")
    parser.add_argument("--device", action="append", required=True,
                        help="device address; repeat for several")
    add_adb_flags(parser)
    add_ssh_flags(parser)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per device command")
    parser.add_argument("--json", action="store_true", help="print DeviceInfo as JSON")
    parser.set_defaults(handler=show_devices)


def show_devices(args: argparse.Namespace) -> int:
    """`devices`: each device's fingerprint and current temperatures, as a table or JSON."""
    from lutnas.device_agents.factory import AgentOptions, open_agent

    options = AgentOptions(adb=replace(adb_options(args), command_timeout_s=args.timeout),
                           ssh=replace(ssh_options(args), command_timeout_s=args.timeout))
    found = []
    for address in args.device:
        with open_agent(address, options) as agent:
            info = agent.info()
            state = agent.read_state()
        found.append((address, info, state))
    if args.json:
        print(json.dumps([info.to_dict() | {"temps_c": state[0]} for _, info, state in found], indent=2))
        return 0
    for address, info, (temps, _freqs) in found:
        table = Table(title=f"{address}: {info.device_id}", show_header=False)
        rows = [("model", f"{info.manufacturer} {info.model}".strip()), ("SoC", info.soc),
                ("ABI", info.abi), ("OS", f"{info.os_name} {info.os_version}".strip()),
                ("CPU", info.cpu_model), ("cores", str(info.cores))]
        for cluster in info.clusters:
            mhz = f"{cluster.max_khz / 1000:.0f} MHz" if cluster.max_khz else "?"
            cores = ",".join(map(str, cluster.cores))
            rows.append((f"cores {cores}", f"max {mhz}, governor {cluster.governor}"))
        if temps:
            rows.append(("temperatures", ", ".join(f"{k} {v:.1f} °C" for k, v in temps.items())))
        for name, version in info.libraries.items():
            rows.append((name, version))
        for key, value in rows:
            table.add_row(key, value)
        console.print(table)
    return 0
