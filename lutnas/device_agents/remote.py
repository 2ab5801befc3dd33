"""A device reached through a shell transport, measured with a runner program built for it.

`RemoteAgent` composes a `ShellTransport` (how to reach the device: ADB today, SSH next), a
`Platform` (where files go, how to fingerprint it), the runner records of `runners.py` (arguments
and parser) and the cool-down of `policy.py`. A trial pushes the batch's models (skipped when the
same sha256 is already there), then runs the runner for each under `taskset`, several models per
shell session to save round trips. Each model's section of the session's output carries the
thermal zones and CPU frequencies read just before and after it. Between sessions the agent waits
while the hottest CPU zone is too hot.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lutnas.device_agents import kernel
from lutnas.device_agents.base import (
    DeviceAgent,
    DeviceInfo,
    Measurement,
    ModelFile,
    RunnerInfo,
    RunSettings,
    sha256_of,
)
from lutnas.device_agents.policy import CoolDown, mark_deterministic
from lutnas.device_agents.runner_output import failure_line, first_lines, is_deterministic_failure
from lutnas.device_agents.runners import RUNNER_KINDS, SHELL_RUNNERS, RunnerProgram, shell_runner
from lutnas.device_agents.transport import FileRefusedError, ShellTransport, print_notice
from lutnas.errors import BadInputError, DeviceError, RunnerOutputError

MODELS_PER_SESSION = 4
SHELL_PATHS = 200  # device paths per shell line (~15 KB of command): a plan has thousands


@dataclass(frozen=True)
class Platform:
    """What differs between kinds of shell-reached devices (Android; later a Linux board)."""

    name: str  # in messages: "cannot run on an Android phone"
    noun: str  # "phone"
    work_dir: str  # where lutnas keeps the runner and models on the device
    probe_script: str  # one shell command printing everything the fingerprint needs
    device_info: Callable[[str, str], DeviceInfo]  # (probe output, address) -> DeviceInfo


@dataclass(frozen=True)
class RemoteOptions:
    """Options of any agent that runs runner programs through a shell (ADB, later SSH)."""

    runner: Path | None = None  # host path of the device's benchmark_model, pushed once
    runner_on_device: str | None = None  # a benchmark_model already on the device
    onnx_runner: Path | None = None  # host path of onnxruntime_perf_test for the device
    max_temp_c: float = 45.0  # wait while the hottest CPU zone is hotter
    keep_files: bool = False  # leave pushed files on the device
    runner_kind: str = "benchmark_model"  # the TFLite runner: benchmark_model | litert (CompiledModel)
    runner_args: tuple[str, ...] = ()  # passed through to the runner after lutnas's own arguments

    def __post_init__(self) -> None:
        """BadInputError for an unknown runner kind or a host runner file that is not there:
        checked here, before any device is reached (a connection can take 15 s to fail)."""
        if self.runner_kind not in RUNNER_KINDS:
            raise BadInputError(f"unknown --runner-kind {self.runner_kind!r}; use "
                                f"{' or '.join(RUNNER_KINDS)}")
        for flag, local in (("--runner", self.runner), ("--onnx-runner", self.onnx_runner)):
            if local is not None and not Path(local).is_file():
                raise BadInputError(f"{flag} {local} does not exist: download or build the runner for "
                                    f"the device's ABI (see the README), or give its path")


class RemoteAgent(DeviceAgent):
    """One device behind a shell transport. Not thread-safe: one agent per device and worker.

    Model files go to `<work_dir>/models/<sha256[:12]>-<name>`, pushed only when the device lacks
    that path with that digest, and are removed by `close` unless `keep_files`."""

    pushes_files = True

    def __init__(self, transport: ShellTransport, platform: Platform, options: RemoteOptions | None = None,
                 on_message: Callable[[str], None] | None = None) -> None:
        self.transport = transport
        self.platform = platform
        self.options = options or RemoteOptions()
        self.cooldown = CoolDown(max_temp_c=self.options.max_temp_c)
        self.on_message = on_message or print_notice
        # The transport's notices (reconnecting...) follow whatever on_message is at the time.
        transport.on_message = lambda text: self.on_message(text)
        self.cooldown_waits_s: list[float] = []
        self._info: DeviceInfo | None = None
        self._runners: dict[str, tuple[str, RunnerInfo]] = {}
        self._on_device: dict[str, str] = {}  # device path -> sha256 of what lutnas pushed there

    @property
    def address(self) -> str:
        return self.transport.address

    def shell(self, command: str, timeout_s: float | None = None) -> str:
        return self.transport.shell(command, timeout_s)

    # -- fingerprint -------------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        if self._info is None:
            info = self.platform.device_info(self.shell(self.platform.probe_script), self.address)
            self._info = info  # the runner checks below read it (the ABI)
            programs = [RUNNER_KINDS[self.options.runner_kind]] + [  # --runner's binary listed once
                p for p in SHELL_RUNNERS.values() if p.host_option != "runner"]
            for program in programs:
                if any(self._binary(program)):
                    info.libraries[program.name] = self._runner(program)[1].version
            self._info = info
        return self._info

    def read_state(self) -> tuple[dict[str, float], dict[str, int]]:
        """Temperatures (°C by zone type, plus battery) and current CPU frequencies (kHz)."""
        return kernel.parse_state(self.shell(f"{kernel.STATE_FUNCTION}; lutnas_state").splitlines())

    # -- runner ------------------------------------------------------------------------------------
    def check_settings(self, settings: RunSettings) -> None:
        program = self._program(settings)
        if program is None:
            raise BadInputError(f"runtime {settings.runtime!r} cannot run on {self.platform.name}: "
                                f"use {' or '.join(SHELL_RUNNERS)}")
        if not any(self._binary(program)):
            raise BadInputError(f"a {self.platform.noun} needs {program.needs}: pass {program.flags()}")
        if settings.accelerator not in program.accelerators:
            raise BadInputError(f"{program.name} on {self.platform.name} cannot use the "
                                f"{settings.accelerator}: use --accelerator "
                                f"{' or '.join(program.accelerators)}")
        cores = self.info().cores
        if settings.cores and max(settings.cores) >= cores:
            raise BadInputError(f"core {max(settings.cores)} does not exist on {self.info().model}: "
                                f"it has cores 0..{cores - 1}")

    def _program(self, settings: RunSettings) -> RunnerProgram | None:
        """The runner program for the settings' runtime (--runner-kind for tflite)."""
        return shell_runner(settings.runtime, self.options.runner_kind)

    def _binary(self, program: RunnerProgram) -> tuple[Path | None, str | None]:
        """(host file to push, path already on the device) of `program`, from the options."""
        host = getattr(self.options, program.host_option)
        on_device = getattr(self.options, program.device_option) if program.device_option else None
        return (Path(host).expanduser() if host is not None else None), on_device or None

    def _runner(self, program: RunnerProgram) -> tuple[str, RunnerInfo]:
        """The runner's device path, pushed once and checked (exists, executable)."""
        if program.name in self._runners:
            return self._runners[program.name]
        local, device_path = self._binary(program)
        sha = ""
        if local is not None:
            device_path, sha = self._push_runner(program, local)
        elif not device_path:
            raise BadInputError(f"no {program.name} for the {self.platform.noun}: pass {program.flags()}")
        self._check_runner(program, device_path)
        if not sha:
            sha = self._device_sha256([device_path]).get(device_path, "")
        info = RunnerInfo(name=program.name, version=f"sha256:{sha[:12]}" if sha else "unknown",
                          binary_sha256=sha)
        self._runners[program.name] = (device_path, info)
        return device_path, info

    def _push_runner(self, program: RunnerProgram, local: Path) -> tuple[str, str]:
        if not local.is_file():
            raise BadInputError(f"runner {local} does not exist: download or build {program.name} for "
                                f"the {self.platform.noun}'s ABI (see the README)")
        self._check_abi(program, local)
        sha = sha256_of(local)
        device_path = f"{self.platform.work_dir}/{program.name}"
        if self._device_sha256([device_path]).get(device_path) != sha:
            self.shell(f"mkdir -p {shlex.quote(self.platform.work_dir)}")
            self.transport.push(local, device_path, mode=0o755)
            self._on_device[device_path] = sha
        self.shell(f"chmod 755 {shlex.quote(device_path)}")
        return device_path, sha

    def _check_abi(self, program: RunnerProgram, local: Path) -> None:
        """BadInputError (one line, exit 2) when `local` is an ELF built for an ABI the device lacks.

        Read on the host before pushing: the device would only answer with exit 126. Files that are
        not ELF (a script) are left to the device, and so is a device whose ABIs are unknown."""
        with open(local, "rb") as handle:
            found = elf_abi(handle.read(20))
        device_abis = self._device_abis()
        if found is None or not device_abis or any(_abi_matches(found, abi) for abi in device_abis):
            return
        raise BadInputError(self._abi_mismatch(found, device_abis, program, local))

    def _device_abis(self) -> list[str]:
        """The ABIs a runner may be built for here: Android's ro.product.cpu.abilist, else its abi."""
        info = self.info()
        device_abis = [a for a in str(info.extra.get("abilist", "")).split(",") if a] or [info.abi]
        return [a for a in device_abis if a]

    def _abi_mismatch(self, found: str, device_abis: list[str], program: RunnerProgram, local: Path) -> str:
        """The error line for a runner built for `found`, which none of `device_abis` runs."""
        info = self.info()
        abi = info.abi or device_abis[0]
        return (f"runner {local} is built for {found} but {info.model} runs {abi} (ro.product.cpu.abi; "
                f"abilist {','.join(device_abis)}): use a {abi} build of {program.name}")

    def _check_runner(self, program: RunnerProgram, device_path: str) -> None:
        quoted = shlex.quote(device_path)
        check = self.shell(f"if [ ! -e {quoted} ]; then echo MISSING; elif [ ! -f {quoted} ]; then "
                           f"echo NOTFILE; elif [ ! -x {quoted} ]; then echo NOEXEC; else echo OK; fi")
        status = check.strip().splitlines()[-1] if check.strip() else ""
        if status == "MISSING":
            raise BadInputError(f"runner {device_path} is not on {self.address}: "
                                f"{self.transport.push_hint(program.name, self.platform.work_dir)} "
                                f"or pass --{program.host_option.replace('_', '-')} PATH")
        if status in ("NOTFILE", "NOEXEC"):
            raise BadInputError(f"runner {device_path} on {self.address} is not an executable file: "
                                f"{self.transport.shell_hint(f'chmod 755 {quoted}')} or pass "
                                f"--{program.host_option.replace('_', '-')} PATH")
        if status != "OK":
            raise DeviceError(f"{self.address}: checking runner {device_path} printed {first_lines(check)}")

    def _device_sha256(self, paths: Sequence[str]) -> dict[str, str]:
        """{device path: sha256} of those of `paths` that are files on the device, each path asked
        once, SHELL_PATHS to a shell line."""
        unique = list(dict.fromkeys(paths))
        found = {}
        for start in range(0, len(unique), SHELL_PATHS):
            chunk = unique[start:start + SHELL_PATHS]
            out = self.shell("sha256sum " + " ".join(shlex.quote(p) for p in chunk) + " 2>/dev/null; true")
            asked = set(chunk)
            for line in out.splitlines():
                digest, _, path = line.partition(" ")
                path = path.lstrip(" *")
                if len(digest) == 64 and path in asked:
                    found[path] = digest
        return found

    def _remove(self, paths: Sequence[str]) -> None:
        """`rm -f` `paths` on the device, SHELL_PATHS to a shell line."""
        unique = sorted(set(paths))
        for start in range(0, len(unique), SHELL_PATHS):
            self.shell("rm -f " + " ".join(shlex.quote(p) for p in unique[start:start + SHELL_PATHS]))

    def _remote_paths(self, files: Sequence[ModelFile]) -> dict[int, str]:
        """Where each file goes on the device: named by its sha256, so a changed file is pushed."""
        return {i: f"{self.platform.work_dir}/models/{f.sha256[:12]}-{Path(f.path).name}"
                for i, f in enumerate(files)}

    def missing_files(self, files: Sequence[ModelFile]) -> list[ModelFile]:
        remote = self._remote_paths(files)
        present = self._device_sha256(list(remote.values()))
        return [f for i, f in enumerate(files) if present.get(remote[i]) != f.sha256]

    def push_files(self, files: Sequence[ModelFile]) -> None:
        refused = self._push_missing(files, self._remote_paths(files))
        if refused:
            path, why = next(iter(refused.items()))
            raise DeviceError(f"{self.address} refused {path}: {why}")

    def forget_files(self, files: Sequence[ModelFile]) -> None:
        # Paths stay in _on_device: close() removes them again (rm -f of a missing file is a no-op)
        # and then the folders it made.
        self._remove(list(self._remote_paths(files).values()))

    # -- measuring ---------------------------------------------------------------------------------
    def models_per_session(self, settings: RunSettings) -> int:
        return MODELS_PER_SESSION

    def measure_batch(self, files: Sequence[ModelFile], settings: RunSettings,
                      trial_index: int) -> list[Measurement]:
        self.check_settings(settings)
        program = self._program(settings)
        assert program is not None  # check_settings raised otherwise
        runner_path, runner = self._runner(program)
        remote = self._remote_paths(files)
        results = self._push_models(files, remote, runner, trial_index)
        pending = [i for i in range(len(files)) if i not in results]
        for start in range(0, len(pending), MODELS_PER_SESSION):
            chunk = pending[start:start + MODELS_PER_SESSION]
            note = self._wait_until_cool()
            script, nonce = self._session_script([(i, remote[i]) for i in chunk], runner_path, program,
                                                 settings)
            output = self.shell(script, timeout_s=self.transport.command_timeout_s * len(chunk))
            sections = _split_sessions(output, nonce)
            for index in chunk:
                results[index] = self._measurement(files[index], sections.get(index), program, settings,
                                                   runner, trial_index, note)
        return [results[i] for i in range(len(files))]

    def _push_missing(self, files: Sequence[ModelFile], remote: dict[int, str]) -> dict[str, str]:
        """Push what the device lacks, each device path once (the drift reference is listed
        several times in a batch); {device path: why the device refused it}."""
        present = self._device_sha256(list(remote.values()))
        missing = {remote[i]: f for i, f in enumerate(files) if present.get(remote[i]) != f.sha256}
        if missing:
            self.shell(f"mkdir -p {shlex.quote(self.platform.work_dir + '/models')}")
        refused: dict[str, str] = {}
        for path, file in missing.items():
            try:
                self.transport.push(Path(file.path), path)
                self._on_device[path] = file.sha256
            except FileRefusedError as exc:  # the connection is fine: this file's fault
                refused[path] = str(exc)
        return refused

    def _push_models(self, files: Sequence[ModelFile], remote: dict[int, str], runner: RunnerInfo,
                     trial_index: int) -> dict[int, Measurement]:
        """Push what the device lacks; a file it refuses gets a failed Measurement (returned)."""
        refused = self._push_missing(files, remote)
        return {i: Measurement.failed(f, trial_index, runner, refused[remote[i]])
                for i, f in enumerate(files) if remote[i] in refused}

    def _session_script(self, models: list[tuple[int, str]], runner_path: str, program: RunnerProgram,
                        settings: RunSettings) -> tuple[str, str]:
        nonce = secrets.token_hex(4)
        mark = f"@@lutnas-{nonce}"
        prefix = [] if settings.core_mask == "all" else ["taskset", settings.core_mask]
        lines = [kernel.STATE_FUNCTION]
        for index, path in models:
            command = prefix + [runner_path] + program.args(path, settings) + list(self.options.runner_args)
            lines.append(f"echo '{mark} begin {index}'; lutnas_state; echo '{mark} run {index}'; "
                         f"{' '.join(shlex.quote(part) for part in command)} 2>&1; "
                         f"echo \"{mark} rc {index} $?\"; lutnas_state; echo '{mark} end {index}'")
        return "\n".join(lines), nonce

    def _measurement(self, file: ModelFile, section: dict | None, program: RunnerProgram,
                     settings: RunSettings, runner: RunnerInfo, trial_index: int, note: str) -> Measurement:
        if section is None or section.get("rc") is None:
            text = (section or {}).get("output", "")
            return Measurement.failed(
                file, trial_index, runner,
                f"the runner's output ended before its exit status: {first_lines(text)}",
                raw_output=note + text)
        output = section["output"]
        temps_before, freqs_before = kernel.parse_state(section["before"])
        temps_after, freqs_after = kernel.parse_state(section["after"])
        context = dict(temps_before=temps_before, temps_after=temps_after, freqs_before=freqs_before,
                       freqs_after=freqs_after)
        error = None
        if section["rc"] != 0:
            error = self._exit_error(runner, section["rc"], output)
        else:
            try:
                stats = program.parse(output, settings)
            except RunnerOutputError as exc:
                error = str(exc)
        if error is not None:
            measurement = Measurement.failed(file, trial_index, runner, error, raw_output=note + output)
            for key, value in context.items():
                setattr(measurement, key, value)
            return measurement
        measurement = Measurement(key=file.key, model_sha256=file.sha256, trial_index=trial_index,
                                  runner=runner, **stats, **context)
        measurement.raw_output = note + measurement.notes() + output
        return measurement

    def _exit_error(self, runner: RunnerInfo, rc: int, output: str) -> str:
        """The status of a runner that exited with `rc`: its own error line quoted; a failure that
        will repeat (126/127, missing op, rejected model) marked deterministic; 126/127 name the ABI."""
        line = failure_line(output)
        if rc in (126, 127):
            info = self.info()
            abilist = info.extra.get("abilist") or info.abi
            error = (f"{runner.name} cannot run on {info.model} (exit {rc}): {line!r}; the "
                     f"{self.platform.noun}'s ro.product.cpu.abi is {info.abi or '?'} (abilist "
                     f"{abilist}): use a runner built for it")
        else:
            error = f"{runner.name} exited with status {rc}: {line!r}"
        return mark_deterministic(error) if is_deterministic_failure(output, rc) else error

    def _wait_until_cool(self) -> str:
        """The policy's cool-down wait; a note for the raw output if it waited."""
        waited = self.cooldown.wait(lambda: kernel.hottest_cpu_c(self.read_state()[0]), self.on_message,
                                    self.address)
        if waited is None:
            return ""
        self.cooldown_waits_s.append(waited.seconds)
        return waited.note()

    def close(self) -> None:
        if self._on_device and not self.options.keep_files:
            paths = sorted(self._on_device)
            work_dir = self.platform.work_dir
            try:
                self._remove(paths)
                self.shell(f"rmdir {shlex.quote(work_dir + '/models')} {shlex.quote(work_dir)} "
                           "2>/dev/null; true")
            except DeviceError as exc:
                self.on_message(f"{self.address}: could not remove pushed files: {exc}")
            self._on_device.clear()
        self.transport.close()


def _split_sessions(output: str, nonce: str) -> dict[int, dict]:
    """Cut one shell session's output into each model's before-state, runner output, rc, after-state."""
    mark = f"@@lutnas-{nonce} "
    sections: dict[int, dict] = {}
    current: dict | None = None
    part = "before"
    for line in output.splitlines():
        if line.startswith(mark):
            fields = line[len(mark):].split()
            if len(fields) >= 2 and fields[1].isdigit():
                index = int(fields[1])
                if fields[0] == "begin":
                    current = sections.setdefault(index, {"before": [], "out": [], "after": [], "rc": None})
                    part = "before"
                elif fields[0] == "run":
                    part = "out"
                elif fields[0] == "rc" and current is not None:
                    ok = len(fields) > 2 and fields[2].lstrip("-").isdigit()
                    current["rc"] = int(fields[2]) if ok else -1
                    part = "after"
                elif fields[0] == "end":
                    current = None
                continue
        if current is not None:
            current[part].append(line)
    for section in sections.values():
        section["output"] = "\n".join(section.pop("out")) + "\n"
    return sections


# ELF e_machine -> the Android ABI name of binaries built for it.
_ELF_MACHINES = {3: "x86", 40: "armeabi-v7a", 62: "x86_64", 183: "arm64-v8a", 243: "riscv64"}
_ABI_ALIASES = {"arm64-v8a": ("arm64-v8a", "aarch64", "arm64"),
                "armeabi-v7a": ("armeabi-v7a", "armeabi", "armv7l", "armv8l", "arm"),
                "x86": ("x86", "i686", "i386"), "x86_64": ("x86_64", "amd64"),
                "riscv64": ("riscv64",)}


def elf_abi(header: bytes) -> str | None:
    """The ABI of an ELF file from its first 20 bytes ("arm64-v8a", ...); None when not ELF.

    An ELF of a machine lutnas does not name comes back as "ELF machine N"."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    byteorder = "little" if header[5] == 1 else "big"
    machine = int.from_bytes(header[18:20], byteorder)
    return _ELF_MACHINES.get(machine, f"ELF machine {machine}")


def _abi_matches(runner_abi: str, device_abi: str) -> bool:
    return device_abi.lower() in _ABI_ALIASES.get(runner_abi, (runner_abi,))
