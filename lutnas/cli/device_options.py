"""The device flags every command that takes a device shares, defined once.

`profile-device`, `devices`, `evaluate`, `build-table --calibrate-on` and `search --verify-on` all
reach a device by address (`local`, `adb:HOST[:PORT]`, `usb[:SERIAL]`, `ssh:USER@HOST[:PORT]`), and
all need the same runner, cool-down, ADB-key and SSH options to do it: `add_device_flags` adds them as one
argument group and `agent_options` turns them into the `AgentOptions` that `open_agent` reads.
`--accelerator` is `add_accelerator_flag`. Light at import: the agents (asyncssh, adb-shell) are
imported when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lutnas.device_agents.base import ACCELERATORS
from lutnas.device_agents.runners import RUNNER_KINDS
from lutnas.errors import BadInputError

if TYPE_CHECKING:  # the factory imports every agent kind (asyncssh, adb-shell)
    from lutnas.device_agents.factory import AgentOptions

DEVICE_FORMS = "local, adb:HOST[:PORT], usb[:SERIAL] or ssh:USER@HOST[:PORT]"


def add_accelerator_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, help_text: str,
                         default: str | None = None) -> None:
    """`--accelerator cpu|gpu|nnapi|npu` (the values RunSettings accepts); `help_text` says what
    the command does with it."""
    parser.add_argument("--accelerator", default=default, choices=ACCELERATORS, help=help_text)


def check_table_accelerator(accelerator: str | None, table: Any, path: Path | str) -> None:
    """BadInputError when `--accelerator` names another accelerator than the table was measured
    on: a table's subnets and winners are measured under the table's own settings."""
    held = str(table.settings.get("accelerator") or "cpu")
    if accelerator is not None and accelerator != held:
        raise BadInputError(f"--accelerator {accelerator}: {path} holds {held} latencies; build a "
                            f"table with build-table --accelerator {accelerator}")


def add_device_flags(parser: argparse.ArgumentParser, title: str = "device options") -> None:
    """The runner, cool-down and SSH flags of any command that measures on a device, as one group."""
    group = parser.add_argument_group(title, f"reaching the device ({DEVICE_FORMS}) and running "
                                             f"models on it")
    group.add_argument("--runner", type=Path,
                       help="host path of the benchmark_model (or, with --runtime executorch, the "
                            "executor_runner) built for the device (phone or board)")
    group.add_argument("--runner-on-device", help="a benchmark_model (or executor_runner) already on the "
                                                  "device (phone or board)")
    group.add_argument("--onnx-runner", type=Path,
                       help="host path of onnxruntime_perf_test for the device (phone or board)")
    group.add_argument("--runner-kind", default="benchmark_model", choices=tuple(RUNNER_KINDS),
                       help="TFLite runner on a phone or board: benchmark_model (classic) or litert "
                            "(LiteRT's CompiledModel benchmark; default benchmark_model)")
    group.add_argument("--runner-arg", action="append", default=[], metavar="ARG",
                       help="pass ARG to the runner (repeat), e.g. --runner-arg=--dispatch_library_path=DIR "
                            "or --runner-arg=--report_peak_memory_footprint=true")
    group.add_argument("--max-temp", type=float, default=45.0,
                       help="wait while the device is hotter, in C (default 45)")
    group.add_argument("--keep-files", action="store_true", help="leave pushed files on the device")
    add_adb_flags(group)
    add_ssh_flags(group)


def add_adb_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The ADB flag (`--device adb:HOST[:PORT]` or `usb[:SERIAL]`); `devices` takes it too."""
    parser.add_argument("--adb-key", type=Path, metavar="PATH",
                        help="ADB private key (default $LUTNAS_ADB_KEY, else ~/.android/adbkey; "
                             "created when missing)")


def add_ssh_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The SSH flags (`--device ssh:USER@HOST[:PORT]`); `devices` takes them without the runner's."""
    parser.add_argument("--ssh-key", type=Path, metavar="PATH",
                        help="SSH private key (default: your ssh-agent and ~/.ssh/id_*; never a password)")
    parser.add_argument("--ssh-known-hosts", type=Path, metavar="PATH",
                        help="known_hosts file that must hold the board's host key (default "
                             "~/.ssh/known_hosts)")
    parser.add_argument("--remote-python", metavar="PATH",
                        help="the board's Python with ai-edge-litert/onnxruntime: run lutnas's worker "
                             "there, a fresh process per trial (instead of --runner)")


def ssh_options(args: argparse.Namespace) -> Any:
    """SshOptions from the SSH flags (a flag left out keeps its environment/default value)."""
    from lutnas.device_agents.ssh import SshOptions

    return SshOptions(key=args.ssh_key, known_hosts=args.ssh_known_hosts, remote_python=args.remote_python)


def adb_options(args: argparse.Namespace) -> Any:
    """AdbOptions from `--adb-key` (left out: $LUTNAS_ADB_KEY, else ~/.android/adbkey)."""
    from lutnas.device_agents.adb import AdbOptions

    return AdbOptions(adb_key=args.adb_key)


def agent_options(args: argparse.Namespace) -> AgentOptions:
    """The AgentOptions of `add_device_flags`'s flags (RemoteOptions checks --runner-kind)."""
    from lutnas.device_agents.factory import AgentOptions
    from lutnas.device_agents.remote import RemoteOptions

    return AgentOptions(remote=RemoteOptions(runner=args.runner, runner_on_device=args.runner_on_device,
                                             onnx_runner=args.onnx_runner, max_temp_c=args.max_temp,
                                             keep_files=args.keep_files, runner_kind=args.runner_kind,
                                             runner_args=tuple(args.runner_arg)),
                        adb=adb_options(args), ssh=ssh_options(args))
