"""Linux boards over SSH (asyncssh): `--device ssh:USER@HOST[:PORT]`.

`SshTransport` is the connection: key authentication only (the `--ssh-key` file, else the user's
ssh-agent and ~/.ssh/id_* keys; never a password), the host key checked against known_hosts and
never accepted silently, commands run by the board's /bin/sh with their text quoted, files copied
over SFTP, reconnecting by the retry policy when the board drops off. asyncssh is asynchronous:
each transport owns a private event loop and runs it only inside its own calls, so the agent stays
as synchronous (and single-threaded) as the ADB one.

`SshAgent` is a `RemoteAgent` on the Linux platform (`linux.py`): a `benchmark_model` built for the
board (`--runner`, its ELF machine checked against `uname -m` before upload, by
`RemoteAgent._check_abi` with the board's `_device_abis`), or lutnas's own
worker (`local_worker.py`, uploaded with the two modules it imports) run by the board's Python
(`--remote-python`) in a fresh process per trial, like the host's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lutnas.device_agents.base import DeviceInfo, Measurement, ModelFile, RunnerInfo, RunSettings
from lutnas.device_agents.linux import LINUX
from lutnas.device_agents.policy import (
    DeviceLostError,
    Reconnecting,
    RetryPolicy,
    TransientError,
    retry_transient,
)
from lutnas.device_agents.remote import RemoteAgent, RemoteOptions
from lutnas.device_agents.runner_output import first_lines
from lutnas.device_agents.runners import LOCAL_WORKER, RunnerProgram, WorkerProgram
from lutnas.device_agents.transport import FileRefusedError, ShellTransport
from lutnas.errors import BadInputError, DeviceError
from lutnas.fileio import sha256_of

DEFAULT_SSH_PORT = 22
ADDRESS_FORMS = "'ssh:USER@HOST[:PORT]'"
KEY_ENV, KNOWN_HOSTS_ENV, PYTHON_ENV = "LUTNAS_SSH_KEY", "LUTNAS_SSH_KNOWN_HOSTS", "LUTNAS_REMOTE_PYTHON"

# What the remote worker needs of lutnas (local_worker imports runtimes, which imports errors).
WORKER_MODULES = ("errors.py", "device_agents/local_worker.py", "device_agents/runtimes.py")


@dataclass(frozen=True)
class SshOptions:
    """How to reach a board over SSH (the runner's options are `RemoteOptions`)."""

    key: Path | None = None  # private key; default $LUTNAS_SSH_KEY, else ssh-agent + ~/.ssh/id_*
    known_hosts: Path | None = None  # default $LUTNAS_SSH_KNOWN_HOSTS, else ~/.ssh/known_hosts
    remote_python: str | None = None  # the board's Python for lutnas's worker; default $LUTNAS_REMOTE_PYTHON
    work_dir: str | None = None  # where files go on the board (default ~/.cache/lutnas there)
    command_timeout_s: float = 300.0  # the longest one command or upload may take
    connect_timeout_s: float = 20.0

    def key_path(self) -> Path | None:
        value = self.key or os.environ.get(KEY_ENV)
        return Path(value).expanduser() if value else None

    def known_hosts_path(self) -> Path:
        value = self.known_hosts or os.environ.get(KNOWN_HOSTS_ENV)
        return Path(value).expanduser() if value else Path.home() / ".ssh" / "known_hosts"

    def python(self) -> str | None:
        return self.remote_python or os.environ.get(PYTHON_ENV) or None


def parse_address(address: str) -> tuple[str, str, int]:
    """`ssh:USER@HOST[:PORT]` -> (user, host, port); BadInputError naming the form otherwise."""
    user, at, rest = address.removeprefix("ssh:").rpartition("@")
    host, _, port_text = rest.partition(":")
    if rest.startswith("["):  # [IPv6]:PORT
        host, _, port_text = rest[1:].partition("]")
        port_text = port_text.removeprefix(":")
    port_text = port_text or str(DEFAULT_SSH_PORT)
    if not at or not user or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadInputError(f"bad device address {address!r}: use ssh:USER@HOST[:PORT], e.g. "
                            f"ssh:pi@192.168.1.30 or ssh:root@127.0.0.1:2222")
    return user, host, int(port_text)


class SshTransport(ShellTransport):
    """The SSH connection to one board; reopened (with back-off) when it drops. One thread."""

    def __init__(self, user: str, host: str, port: int = DEFAULT_SSH_PORT, options: SshOptions | None = None,
                 retry: RetryPolicy | None = None) -> None:
        self.options = options or SshOptions()
        super().__init__(f"{user}@{host}:{port}", self.options.command_timeout_s, retry)
        self.user, self.host, self.port = user, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None
        self._sftp: Any = None
        self.lost = False  # the last connection attempts all failed (close() then skips cleanup)

    # -- connection ------------------------------------------------------------------------------
    def _run(self, coroutine: Any, timeout_s: float | None) -> Any:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(asyncio.wait_for(coroutine, timeout_s))

    def _client_keys(self) -> tuple[Any, Any]:
        """(client_keys, agent_path) for asyncssh: only --ssh-key when given, else its defaults."""
        import asyncssh

        path = self.options.key_path()
        if path is None:
            return (), ()  # asyncssh's defaults: the ssh-agent, then ~/.ssh/id_* (unencrypted)
        try:
            return [asyncssh.read_private_key(str(path))], None
        except (OSError, asyncssh.KeyImportError) as exc:
            raise BadInputError(f"cannot use the SSH key {path} ({exc}): pass --ssh-key with an "
                                "unencrypted private key, or load it into ssh-agent and omit "
                                "--ssh-key") from exc

    def _known_hosts(self) -> Any:
        import asyncssh

        path = self.options.known_hosts_path()
        try:
            return asyncssh.read_known_hosts(str(path)) if path.exists() else asyncssh.import_known_hosts("")
        except (OSError, ValueError) as exc:
            raise BadInputError(f"cannot read known hosts file {path} ({exc}): fix it or pass "
                                "--ssh-known-hosts FILE") from exc

    def _connect(self) -> None:
        keys, agent_path = self._client_keys()
        known_hosts = self._known_hosts()
        try:
            self._conn, attempt = retry_transient(lambda a: self._connect_once(keys, agent_path, known_hosts),
                                                  self.retry.reconnect_delays_s)
        except TransientError as exc:
            self.lost = True
            raise DeviceLostError(
                f"cannot connect to {self.address} after {self.retry.connect_attempts} attempts ({exc}): "
                "check the board is on, sshd runs there and the address and port are right") from exc
        self.lost = False
        if attempt:
            self.on_message(f"{self.address}: reconnected")

    def _connect_once(self, keys: Any, agent_path: Any, known_hosts: Any) -> tuple[Any, bool]:
        import asyncssh

        reconnect = self._loop is not None
        try:
            conn = self._run(asyncssh.connect(
                self.host, self.port, username=self.user, known_hosts=known_hosts, client_keys=keys,
                agent_path=agent_path, config=None, preferred_auth="publickey", password=None,
                kbdint_auth=False, password_auth=False, gss_auth=False, host_based_auth=False,
                connect_timeout=self.options.connect_timeout_s, keepalive_interval=15,
                keepalive_count_max=3), self.options.connect_timeout_s + 5)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise self._host_key_error(known_hosts) from exc
        except asyncssh.PermissionDenied as exc:
            key = self.options.key_path()
            which = f"the key {key}" if key else "the keys of your ssh-agent and ~/.ssh/id_*"
            raise DeviceError(
                f"{self.address} refused {which}: add its public key to ~{self.user}/.ssh/"
                f"authorized_keys on the board (ssh-copy-id -p {self.port} {self.user}@{self.host}) "
                "or pass --ssh-key with a key it accepts") from exc
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        return conn, reconnect

    def _host_key_error(self, known_hosts: Any) -> BadInputError:
        """The one-line error for a host key known_hosts does not trust, with its fingerprint."""
        import asyncssh

        file = self.options.known_hosts_path()
        target = self.host if self.port == DEFAULT_SSH_PORT else f"[{self.host}]:{self.port}"
        try:
            key = self._run(asyncssh.get_server_host_key(self.host, self.port),
                            self.options.connect_timeout_s)
            shown = f"its host key {key.get_algorithm()} {key.get_fingerprint('sha256')}"
        except (TimeoutError, OSError, asyncssh.Error):
            shown = "its host key"
        trusted, _, _, _, _, _, _ = known_hosts.match(self.host, "", self.port)
        if trusted:
            return BadInputError(
                f"{self.address}: {shown} differs from the one {file} holds for {target} (reinstalled "
                "board, or someone in between): if the board was reinstalled, run "
                f"`ssh-keygen -f {file} -R '{target}'` and add the new key as for a new board")
        port = "" if self.port == DEFAULT_SSH_PORT else f" -p {self.port}"
        return BadInputError(
            f"{self.address}: {shown} is not in {file}, so lutnas does not trust it: compare it with "
            "`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the board, then add it with "
            f"`ssh-keyscan{port} {self.host} >> {file}` (or pass --ssh-known-hosts FILE) and rerun")

    def _drop(self) -> None:
        """Forget a connection that failed (it is reopened by the next call)."""
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.abort()

    def _call(self, what: str, action: Callable[[Any], Any], timeout_s: float) -> Any:
        """`await action(conn)`; a dropped or stuck connection is reopened and the action retried."""
        calls = Reconnecting(self.address, lambda: self._conn is not None, self._connect, self._drop,
                             (TimeoutError, OSError, *_disconnects()), lambda text: self.on_message(text))
        return calls.call(what, lambda: self._run(action(self._conn), timeout_s), self.retry.command_attempts,
                          f"(timeout {timeout_s:g} s); the board stopped answering")

    # -- ShellTransport ----------------------------------------------------------------------------
    def shell(self, command: str, timeout_s: float | None = None) -> str:
        """Run `command` with the board's /bin/sh (whatever the user's login shell is)."""
        import asyncssh

        async def run(conn: Any) -> str:
            result = await conn.run(f"/bin/sh -c {shlex.quote(command)}", stderr=asyncssh.STDOUT,
                                    encoding="utf-8", errors="replace", check=False)
            if result.exit_status is None and result.exit_signal is None:
                raise asyncssh.ConnectionLost("the connection closed before the command ended")
            return result.stdout or ""

        return self._call("shell command", run, timeout_s or self.command_timeout_s)

    def push(self, local: Path, device_path: str, mode: int = 0o644) -> None:
        """Copy `local` over SFTP (to a temporary name, renamed when complete)."""
        import asyncssh

        async def run(conn: Any) -> None:
            if self._sftp is None:
                self._sftp = await conn.start_sftp_client()
            partial = f"{device_path}.part"
            try:
                await self._sftp.put(str(local), partial)
                await self._sftp.chmod(partial, mode)
                await self._sftp.posix_rename(partial, device_path)
            except asyncssh.SFTPError as exc:
                raise FileRefusedError(f"{self.address}: copying {local.name} to {device_path} failed: "
                                       f"{exc.reason}") from exc

        self._call(f"upload of {local.name}", run, self.command_timeout_s)

    def stream(self, command: str, stdin: bytes, idle_timeout_s: float) -> Iterator[str]:
        """Start `command` (by /bin/sh), feed it `stdin`, yield its stdout line by line as printed.

        Not retried: a dropped connection raises TransientError once the lines already read are
        yielded (the caller decides what to run again); the process is closed when the caller
        stops reading. DeviceError after `idle_timeout_s` without a line.
        """
        import asyncssh

        if self._conn is None:
            self._connect()
        try:
            process = self._run(self._conn.create_process(f"/bin/sh -c {shlex.quote(command)}",
                                                          encoding=None, stderr=asyncssh.DEVNULL),
                                self.command_timeout_s)
            process.stdin.write(stdin)
            process.stdin.write_eof()
        except (TimeoutError, OSError, *_disconnects()) as exc:
            self._drop()
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        try:
            while True:
                try:
                    line = self._run(process.stdout.readline(), idle_timeout_s)
                except TimeoutError:
                    raise DeviceError(f"{self.address}: the worker printed nothing for "
                                      f"{idle_timeout_s:.0f} s (hung runtime?); rerun to resume") from None
                except (OSError, asyncssh.DisconnectError) as exc:
                    self._drop()
                    raise TransientError(f"{type(exc).__name__}: {exc}") from exc
                if not line:
                    break
                yield line.decode("utf-8", "replace")
            self._run(process.wait_closed(), 30)
            if process.exit_status is None and process.exit_signal is None:
                self._drop()
                raise TransientError("the connection closed while the worker ran")
        finally:
            process.close()

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn, self._sftp = self._conn, None, None
            conn.close()
            try:
                self._run(conn.wait_closed(), 5)
            except Exception:  # noqa: BLE001 - closing a dead connection may fail any way it likes
                pass
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()
        self._loop = None

    def __del__(self) -> None:
        # A caller that never closes the agent (an error before its `with`) must not leave an
        # event loop for the garbage collector, which then warns from inside asyncio.
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            try:
                if self._conn is not None:
                    self._conn.abort()
                loop.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown may have torn anything down
                pass

    def push_hint(self, name: str, device_dir: str) -> str:
        return f"copy it (scp -P {self.port} {name} {self.user}@{self.host}:{device_dir}/)"

    def shell_hint(self, command: str) -> str:
        return f"run `ssh -p {self.port} {self.user}@{self.host} {shlex.quote(command)}`"


def _disconnects() -> tuple[type[Exception], ...]:
    """asyncssh's exceptions for a connection that dropped or a channel it could not open."""
    import asyncssh

    return asyncssh.DisconnectError, asyncssh.ChannelOpenError


class SshAgent(RemoteAgent):
    """One Linux board over SSH. Not thread-safe: one agent per board and worker."""

    transport: SshTransport

    def __init__(self, transport: SshTransport, remote: RemoteOptions | None = None,
                 worker: WorkerProgram = LOCAL_WORKER) -> None:
        super().__init__(transport, LINUX, remote)
        self.ssh = transport.options
        self.worker = worker
        self._worker_checked: dict[str, bool] = {}
        self._work_dir_set = False

    @staticmethod
    def accepts(address: str) -> bool:
        return address.startswith("ssh:")

    @classmethod
    def from_address(cls, address: str, options: SshOptions | None = None,
                     remote: RemoteOptions | None = None) -> "SshAgent":
        """`ssh:USER@HOST[:PORT]` -> an agent (it connects on first use)."""
        user, host, port = parse_address(address)
        return cls(SshTransport(user, host, port, options), remote)

    # -- fingerprint -------------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        if self._info is None:
            self._set_work_dir()
            info = super().info()
            python = self.ssh.python()
            if python:
                info.libraries.update(self._worker_libraries(python))
        return super().info()

    def _remote_paths(self, files: Sequence[ModelFile]) -> dict[int, str]:
        self._set_work_dir()  # missing_files may come before info() (a dry run's first call)
        return super()._remote_paths(files)

    def _set_work_dir(self) -> None:
        """~/.cache/lutnas on the board (a home is private; /tmp is shared with other users);
        asked once (a board without a usable $HOME keeps LINUX.work_dir)."""
        if not self._work_dir_set:
            work_dir = self.ssh.work_dir
            if not work_dir:
                home = self.shell('printf "%s" "$HOME"').strip()
                work_dir = f"{home}/.cache/lutnas" if home.startswith("/") else LINUX.work_dir
            self.platform = replace(self.platform, work_dir=work_dir)
            self._work_dir_set = True  # after the shell answered: a dropped one asks again

    def _worker_libraries(self, python: str) -> dict[str, str]:
        script = ("import importlib.metadata as m, platform\n"
                  "print('python', platform.python_version())\n"
                  "for d in ('ai-edge-litert', 'tflite-runtime', 'onnxruntime', 'torch', 'numpy'):\n"
                  "    try: print(d, m.version(d))\n"
                  "    except m.PackageNotFoundError: pass\n")
        out = self.shell(f"{shlex.quote(python)} -c {shlex.quote(script)} 2>&1")
        found = dict(line.split(" ", 1) for line in out.splitlines() if line.count(" ") == 1)
        if "python" not in found:
            raise BadInputError(f"--remote-python {python} does not run on {self.address}: "
                                f"{first_lines(out)}; pass the path of a Python 3 there")
        return found

    # -- runner ------------------------------------------------------------------------------------
    def _uses_worker(self, settings: RunSettings) -> bool:
        """lutnas's worker runs the trial: no runner binary for the runtime, and a remote Python."""
        program = self._program(settings)
        return bool(self.ssh.python()) and (program is None or not any(self._binary(program)))

    def models_per_session(self, settings: RunSettings) -> int:
        return 0 if self._uses_worker(settings) else super().models_per_session(settings)

    def check_settings(self, settings: RunSettings) -> None:
        if not self._uses_worker(settings):
            program = self._program(settings)
            if program is not None and not any(self._binary(program)):
                raise BadInputError(f"a board needs {program.needs} or a Python with the runtime: "
                                    f"pass {program.flags()} or --remote-python PYTHON")
            super().check_settings(settings)
            return
        if settings.accelerator != "cpu":
            raise BadInputError(f"lutnas's worker on {self.address} runs on the CPU only: use "
                                "--accelerator cpu, or a benchmark_model built with the delegate (--runner)")
        cores = self.info().cores
        if settings.cores and max(settings.cores) >= cores:
            raise BadInputError(f"core {max(settings.cores)} does not exist on {self.info().model}: "
                                f"it has cores 0..{cores - 1}")
        if settings.runtime not in self._worker_checked:
            modules = self.worker.runtime_modules.get(settings.runtime, ())
            probe = ("import importlib.util as u, sys; "
                     f"sys.exit(0 if any(u.find_spec(m) for m in {modules!r}) else 3)")
            python = shlex.quote(str(self.ssh.python()))
            out = self.shell(f"{python} -c {shlex.quote(probe)} 2>&1; echo rc=$?")
            self._worker_checked[settings.runtime] = out.strip().endswith("rc=0")
        if not self._worker_checked[settings.runtime]:
            raise BadInputError(f"runtime {settings.runtime!r} is not installed for {self.ssh.python()} on "
                                f"{self.address} (none of {', '.join(modules)} imports): pip install "
                                "it there, or pass --runner with a benchmark_model for the board")

    def _device_abis(self) -> list[str]:
        """The board's `uname -m` (it has no Android ABI list); empty when unknown."""
        return [self.info().abi] if self.info().abi else []

    def _abi_mismatch(self, found: str, device_abis: list[str], program: RunnerProgram, local: Path) -> str:
        board = device_abis[0]
        return (f"runner {local} is built for {found} but {self.address} is {board} (uname -m): pass "
                f"--runner with a {program.name} built for {board}")

    # -- measuring with lutnas's worker -------------------------------------------------------------
    def measure_batch(self, files: Sequence[ModelFile], settings: RunSettings,
                      trial_index: int) -> list[Measurement]:
        if not self._uses_worker(settings):
            return super().measure_batch(files, settings, trial_index)
        return list(self.measure_stream(files, settings, trial_index))

    def measure_stream(self, files: Sequence[ModelFile], settings: RunSettings,
                       trial_index: int, pace: ModelFile | None = None) -> Iterator[Measurement]:
        """One fresh worker process on the board per trial, each file yielded as it is measured.

        A worker that dies costs the file it was on (a new worker takes the rest); a dropped
        connection re-runs what is left after reconnecting, up to the retry policy's attempts.
        BadInputError for `pace`: the board's worker is not given a pace model (`can_pace` False).
        """
        if pace is not None:
            raise BadInputError("the SSH agent cannot pace its runs yet; drop --pace")
        if not self._uses_worker(settings):
            yield from super().measure_batch(files, settings, trial_index)
            return
        self.check_settings(settings)
        package = self._push_worker()
        runner = RunnerInfo(self.worker.name, "?")
        remote = self._remote_paths(files)
        refused = self._push_models(files, remote, runner, trial_index)
        pending = [i for i in range(len(files))]
        drops = 0
        while pending:
            while pending and pending[0] in refused:
                yield refused[pending.pop(0)]
            todo = [i for i in pending if i not in refused]
            if not todo:
                continue
            note = self._wait_until_cool()
            try:
                for index, measurement in self._one_worker(files, remote, todo, package, settings,
                                                           trial_index):
                    while pending[0] != index:  # refused files before this one
                        yield refused[pending.pop(0)]
                    pending.pop(0)
                    measurement.raw_output = note + measurement.raw_output
                    yield measurement
            except TransientError as exc:
                drops += 1
                if drops >= self.transport.retry.command_attempts:
                    raise DeviceLostError(f"{self.address}: the worker's connection dropped {drops} times, "
                                          f"last with {exc}; the board stopped answering") from exc
                self.on_message(f"{self.address}: worker connection lost ({exc}); reconnecting")

    def _one_worker(self, files: Sequence[ModelFile], remote: dict[int, str], todo: list[int],
                    package: str, settings: RunSettings,
                    trial_index: int) -> Iterator[tuple[int, Measurement]]:
        """Run one worker over `todo`; if it dies early, the file it was on gets the error."""
        on_board = [ModelFile(Path(remote[i]), files[i].key, files[i].sha256) for i in todo]
        stderr = f"{self.platform.work_dir}/worker.err"
        pin = "" if settings.core_mask == "all" else f"taskset {settings.core_mask} "
        argv = self.worker.args(str(self.ssh.python()))
        command = (f"PYTHONPATH={shlex.quote(package)} PYTHONUNBUFFERED=1 {pin}"
                   f"{' '.join(shlex.quote(a) for a in argv)} 2>{shlex.quote(stderr)}; echo \"@@rc $?\"")
        done = 0
        code = ""
        for line in self.transport.stream(command, self.worker.request(on_board, settings),
                                          self.transport.command_timeout_s):
            if line.startswith("@@rc "):
                code = line.split()[1]
                continue
            if done < len(todo) and line.strip():
                record = json.loads(line)
                yield todo[done], self.worker.parse_line(record, files[todo[done]], trial_index,
                                                         settings.runtime)
                done += 1
        if done < len(todo):
            tail = self.shell(f"tail -n 3 {shlex.quote(stderr)} 2>/dev/null; true")
            yield todo[done], Measurement.failed(
                files[todo[done]], trial_index, RunnerInfo(settings.runtime, "?"),
                f"error: worker died (exit code {code or '?'}) on this file: "
                f"{' | '.join(tail.strip().splitlines())[:400]}")

    def _push_worker(self) -> str:
        """Upload the worker and the lutnas modules it imports (skipped when unchanged); its PYTHONPATH."""
        root = Path(__file__).resolve().parents[1]  # the lutnas package
        package = f"{self.platform.work_dir}/py"
        wanted = {f"{package}/lutnas/{name}": root / name for name in WORKER_MODULES}
        present = self._device_sha256(list(wanted))
        missing = {path: local for path, local in wanted.items() if present.get(path) != sha256_of(local)}
        if missing:
            dirs = sorted({f"{package}/lutnas", f"{package}/lutnas/device_agents"})
            self.shell("mkdir -p " + " ".join(shlex.quote(d) for d in dirs) + "; "
                       + "; ".join(f": > {shlex.quote(d + '/__init__.py')}" for d in dirs))
            for path, local in missing.items():
                self.transport.push(local, path)
        for path, local in wanted.items():
            self._on_device[path] = sha256_of(local)  # close() removes the whole package folder
        self._on_device.setdefault(f"{self.platform.work_dir}/worker.err", "")
        return package

    def close(self) -> None:
        """Remove the uploaded worker package with the rest of what lutnas pushed."""
        if self.transport.lost:  # each cleanup command would wait out the reconnect back-off again
            if self._on_device and not self.options.keep_files:  # nothing to say when nothing was pushed
                self.on_message(f"{self.address}: unreachable, so lutnas's files stay in "
                                f"{self.platform.work_dir}; remove them when it is back")
            self._on_device.clear()
        package = f"{self.platform.work_dir}/py"
        if not self.options.keep_files and any(p.startswith(package + "/") for p in self._on_device):
            try:
                self.shell(f"rm -rf {shlex.quote(package)}")
                self._on_device = {path: sha for path, sha in self._on_device.items()
                                   if not path.startswith(package + "/")}
            except DeviceError as exc:
                self.on_message(f"{self.address}: could not remove {package}: {exc}")
        super().close()
