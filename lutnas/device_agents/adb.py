"""Measure model files on an Android phone over ADB (adb-shell: TCP or USB, no adb server needed).

A trial pushes the batch's models (skipped when the same sha256 is already on the phone), then runs
the user's `benchmark_model` (or `onnxruntime_perf_test`) for each under `taskset`, several models
per shell session to save round trips. Each model's section of the session's output carries the
thermal zones and CPU frequencies read just before and after it. Between sessions the agent waits
while the hottest CPU zone is above `max_temp_c`.

benchmark_model prints statistics, not samples: `samples_ms` stays empty, `median_ms` is the
runner's median when it prints percentiles and its average otherwise, `p90_ms` stays None (it prints
p5/p95 at most); everything else it printed is kept in `raw_output`.
"""

from __future__ import annotations

import secrets
import shlex
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from lutnas.device_agents import adb_fingerprint as fp
from lutnas.device_agents.adb_keys import key_path, load_signer
from lutnas.device_agents.base import (
    DeviceAgent,
    DeviceInfo,
    Measurement,
    ModelFile,
    RunnerInfo,
    RunSettings,
    sha256_of,
)
from lutnas.device_agents.factory import DEFAULT_ADB_PORT, AgentOptions
from lutnas.device_agents.runner_output import (
    first_lines,
    parse_benchmark_model,
    parse_onnxruntime_perf_test,
)
from lutnas.errors import BadInputError, DeviceError, RunnerOutputError

DEVICE_DIR = "/data/local/tmp/lutnas"
MODELS_PER_SESSION = 4
T = TypeVar("T")


class AdbAgent(DeviceAgent):
    """One phone. Not thread-safe: a device farm opens one agent per phone and worker."""

    auth_timeout_s = 60.0  # how long the user has to tap "Allow" on the phone
    reconnect_delays_s: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    cool_poll_s = 5.0
    cool_max_wait_s = 900.0

    def __init__(self, address: str, make_device: Callable[[], object], options: AgentOptions,
                 on_message: Callable[[str], None] | None = None):
        self.address = address
        self.options = options
        self._make_device = make_device
        self._device = None
        self._key = key_path(options.adb_key)
        self._signer = None
        self._info: DeviceInfo | None = None
        self._runners: dict[str, tuple[str, RunnerInfo]] = {}
        self._on_device: dict[str, str] = {}  # device path -> sha256 of what lutnas pushed there
        self.on_message = on_message or (lambda text: print(text, file=sys.stderr, flush=True))
        self.cooldown_waits_s: list[float] = []

    @classmethod
    def from_address(cls, address: str, options: AgentOptions) -> "AdbAgent":
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

        if address.startswith("adb:"):
            rest = address[4:]
            host, _, port_text = rest.partition(":")
            port_text = port_text or str(DEFAULT_ADB_PORT)
            if not host or not port_text.isdigit():
                raise BadInputError(f"bad device address {address!r}: use adb:HOST[:PORT], e.g. "
                                    f"adb:192.168.1.20:{DEFAULT_ADB_PORT}")
            port = int(port_text)
            timeout = options.command_timeout_s
            return cls(f"{host}:{port}",
                       lambda: AdbDevice(ClosedAwareTcpTransport(host, port),
                                         default_transport_timeout_s=timeout), options)
        serial = address[4:] if address.startswith("usb:") else None

        def make_usb():
            try:
                from adb_shell.adb_device import AdbDeviceUsb
            except ImportError as exc:  # pragma: no cover - depends on the host
                raise DeviceError("USB needs libusb: install the Debian package libusb-1.0-0 "
                                  "(apt-get install adb brings it) and adb-shell[usb]") from exc
            return AdbDeviceUsb(serial=serial, default_transport_timeout_s=options.command_timeout_s)

        return cls(f"usb:{serial or 'first'}", make_usb, options)

    # -- connection ------------------------------------------------------------------------------
    def _connect(self) -> None:
        from adb_shell import exceptions as adb_exc

        if self._signer is None:
            self._signer = load_signer(self._key)
        last: Exception | None = None
        for attempt, delay in enumerate((0.0, *self.reconnect_delays_s)):
            time.sleep(delay)
            prompted = []

            def on_prompt(_device: object, prompted: list = prompted) -> None:
                prompted.append(True)
                self.on_message(f"{self.address}: waiting up to {self.auth_timeout_s:.0f} s for you to "
                                f"tap 'Allow' on the phone's 'Allow USB debugging?' prompt "
                                f"(key {self._key}.pub)")

            try:
                device = self._make_device()
                device.connect(rsa_keys=[self._signer], auth_timeout_s=self.auth_timeout_s,
                               read_timeout_s=self.options.command_timeout_s, auth_callback=on_prompt)
            except adb_exc.UsbDeviceNotFoundError as exc:
                raise DeviceError(f"no Android device on USB ({self.address}): plug it in, enable USB "
                                  "debugging, or use adb:HOST[:PORT]") from exc
            except Exception as exc:  # noqa: BLE001 - adb-shell raises many types; sorted below
                text = f"{type(exc).__name__}: {exc}"
                if prompted:
                    raise DeviceError(
                        f"{self.address} did not accept this computer's ADB key {self._key}.pub ({text}): "
                        "unlock the phone, tap 'Allow' on 'Allow USB debugging?' (tick 'Always allow') "
                        "and rerun; if you tapped Deny, revoke USB debugging authorizations in "
                        "Developer options first") from exc
                if "busy" in text.lower() or "LIBUSB_ERROR_ACCESS" in text:
                    raise DeviceError(f"{self.address}: the USB device is held by another program, "
                                      "usually the host adb server: run `adb kill-server` and retry") from exc
                last = exc
                continue
            self._device = device
            if attempt:
                self.on_message(f"{self.address}: reconnected after {attempt} attempt(s)")
            return
        raise DeviceError(f"cannot connect to {self.address} after {1 + len(self.reconnect_delays_s)} "
                          f"attempts ({type(last).__name__}: {last}): check the phone is on, USB debugging "
                          "(or `adb tcpip 5555` / wireless debugging) is enabled and the address is right")

    def _close_device(self) -> None:
        if self._device is not None:
            try:
                self._device.close()
            except Exception:  # noqa: BLE001 - closing a dead transport may fail any way it likes
                pass
            self._device = None

    def _call(self, what: str, action: Callable[[object], T], retries: int = 2) -> T:
        """Run `action(device)`; a dropped or stuck connection is reopened (with back-off) and retried."""
        from adb_shell import exceptions as adb_exc

        transient = (OSError, socket.timeout, adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException,
                     adb_exc.AdbConnectionError, adb_exc.InvalidResponseError, adb_exc.InvalidCommandError,
                     adb_exc.InvalidChecksumError, adb_exc.UsbReadFailedError, adb_exc.UsbWriteFailedError,
                     ConnectionError)
        for attempt in range(retries + 1):
            if self._device is None:
                self._connect()
            try:
                return action(self._device)
            except transient as exc:
                self._close_device()
                if attempt == retries:
                    raise DeviceError(f"{self.address}: {what} failed {retries + 1} times, last with "
                                      f"{type(exc).__name__}: {exc} (timeout "
                                      f"{self.options.command_timeout_s:g} s a command); the device "
                                      "stopped answering") from exc
                self.on_message(f"{self.address}: {what}: {type(exc).__name__}: {exc}; reconnecting")
        raise AssertionError("unreachable")

    def shell(self, command: str, timeout_s: float | None = None) -> str:
        timeout = timeout_s or self.options.command_timeout_s

        def run(device) -> str:
            raw = device.shell(command, read_timeout_s=timeout, timeout_s=timeout,
                               transport_timeout_s=timeout, decode=False)
            return raw.decode("utf-8", "replace")

        return self._call("shell command", run)

    def push(self, local: Path, device_path: str, mode: int = 0o644) -> None:
        import stat as stat_mod

        from adb_shell.exceptions import PushFailedError

        def run(device) -> None:
            try:
                device.push(str(local), device_path, st_mode=stat_mod.S_IFREG | mode,
                            read_timeout_s=self.options.command_timeout_s)
            except PushFailedError as exc:
                raise DeviceError(f"{self.address}: pushing {local.name} to {device_path} failed: "
                                  f"{_text(exc)}") from exc

        self._call(f"push of {local.name}", run)

    # -- fingerprint -------------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        if self._info is None:
            info = fp.device_info(self.shell(fp.PROBE_SCRIPT), self.address)
            if self.options.runner is not None or self.options.runner_on_device:
                _, runner = self._runner("tflite")
                info.libraries["benchmark_model"] = runner.version
            self._info = info
        return self._info

    def read_state(self) -> tuple[dict[str, float], dict[str, int]]:
        """Temperatures (°C by zone type, plus battery) and current CPU frequencies (kHz)."""
        return fp.parse_state(self.shell(f"{fp.STATE_FUNCTION}; lutnas_state").splitlines())

    # -- runner ------------------------------------------------------------------------------------
    def check_settings(self, settings: RunSettings) -> None:
        if settings.runtime == "tflite":
            if self.options.runner is None and not self.options.runner_on_device:
                raise BadInputError("a phone needs TFLite's benchmark_model built for it: pass --runner PATH "
                                    "(e.g. the android_aarch64 nightly) or --runner-on-device PATH")
        elif settings.runtime == "onnxruntime":
            if self.options.onnx_runner is None:
                raise BadInputError("ONNX on a phone needs onnxruntime_perf_test built for Android: "
                                    "pass --onnx-runner PATH")
            if settings.accelerator == "gpu":
                raise BadInputError("onnxruntime_perf_test on Android has no GPU provider here: use "
                                    "--accelerator cpu or nnapi")
        else:
            raise BadInputError(f"runtime {settings.runtime!r} cannot run on an Android phone: "
                                "use tflite or onnxruntime")
        cores = self.info().cores
        if settings.cores and max(settings.cores) >= cores:
            raise BadInputError(f"core {max(settings.cores)} does not exist on {self.info().model}: "
                                f"it has cores 0..{cores - 1}")
        if settings.threads < 1:
            raise BadInputError(f"threads must be at least 1, got {settings.threads}")

    def _runner(self, runtime: str) -> tuple[str, RunnerInfo]:
        """The runner's device path, pushed once and checked (exists, executable)."""
        if runtime in self._runners:
            return self._runners[runtime]
        name = "benchmark_model" if runtime == "tflite" else "onnxruntime_perf_test"
        local = self.options.runner if runtime == "tflite" else self.options.onnx_runner
        on_device = self.options.runner_on_device if runtime == "tflite" else None
        if local is not None:
            local = Path(local).expanduser()
            if not local.is_file():
                raise BadInputError(f"runner {local} does not exist: download or build {name} for the "
                                    "phone's ABI (see the README, 'Profile your phone')")
            sha = sha256_of(local)
            device_path = f"{DEVICE_DIR}/{name}"
            if self._device_sha256([device_path]).get(device_path) != sha:
                self.shell(f"mkdir -p {shlex.quote(DEVICE_DIR)}")
                self.push(local, device_path, mode=0o755)
                self._on_device[device_path] = sha
            self.shell(f"chmod 755 {shlex.quote(device_path)}")
        elif on_device:
            device_path = on_device
            sha = ""
        else:
            raise BadInputError(f"no {name} for the phone: pass --runner PATH or --runner-on-device PATH")
        quoted = shlex.quote(device_path)
        check = self.shell(f"if [ ! -e {quoted} ]; then echo MISSING; elif [ ! -f {quoted} ]; then "
                           f"echo NOTFILE; elif [ ! -x {quoted} ]; then echo NOEXEC; else echo OK; fi")
        status = check.strip().splitlines()[-1] if check.strip() else ""
        if status == "MISSING":
            raise BadInputError(f"runner {device_path} is not on {self.address}: push it "
                                f"(adb push {name} {DEVICE_DIR}/) or pass --runner PATH")
        if status in ("NOTFILE", "NOEXEC"):
            raise BadInputError(f"runner {device_path} on {self.address} is not an executable file: "
                                f"run `adb shell chmod 755 {quoted}` or pass --runner PATH")
        if status != "OK":
            raise DeviceError(f"{self.address}: checking runner {device_path} printed "
                              f"{first_lines(check)}")
        if not sha:
            sha = self._device_sha256([device_path]).get(device_path, "")
        info = RunnerInfo(name=name, version=f"sha256:{sha[:12]}" if sha else "unknown", binary_sha256=sha)
        self._runners[runtime] = (device_path, info)
        return device_path, info

    def _device_sha256(self, paths: Sequence[str]) -> dict[str, str]:
        if not paths:
            return {}
        out = self.shell("sha256sum " + " ".join(shlex.quote(p) for p in paths) + " 2>/dev/null; true")
        found = {}
        for line in out.splitlines():
            digest, _, path = line.partition(" ")
            path = path.lstrip(" *")
            if len(digest) == 64 and path in paths:
                found[path] = digest
        return found

    # -- measuring ---------------------------------------------------------------------------------
    def measure_batch(self, files: Sequence[ModelFile], settings: RunSettings,
                      trial_index: int) -> list[Measurement]:
        self.check_settings(settings)
        runner_path, runner = self._runner(settings.runtime)
        results: dict[int, Measurement] = {}
        remote = {i: f"{DEVICE_DIR}/models/{f.sha256[:12]}-{Path(f.path).name}" for i, f in enumerate(files)}
        present = self._device_sha256(list(remote.values()))
        if len(present) < len(remote) or any(present.get(remote[i]) != f.sha256 for i, f in enumerate(files)):
            self.shell(f"mkdir -p {shlex.quote(DEVICE_DIR + '/models')}")
        for index, file in enumerate(files):
            if present.get(remote[index]) == file.sha256:
                continue
            try:
                self.push(Path(file.path), remote[index])
                self._on_device[remote[index]] = file.sha256
            except DeviceError as exc:
                if self._device is None:
                    raise  # the connection is gone: not this file's fault
                results[index] = Measurement.failed(file, trial_index, runner, str(exc))
        pending = [i for i in range(len(files)) if i not in results]
        for start in range(0, len(pending), MODELS_PER_SESSION):
            chunk = pending[start:start + MODELS_PER_SESSION]
            note = self._wait_until_cool()
            script, nonce = self._session_script([(i, remote[i]) for i in chunk], runner_path, settings)
            output = self.shell(script, timeout_s=self.options.command_timeout_s * len(chunk))
            sections = _split_sessions(output, nonce)
            for index in chunk:
                results[index] = self._measurement(files[index], sections.get(index), settings, runner,
                                                   trial_index, note)
        return [results[i] for i in range(len(files))]

    def _session_script(self, models: list[tuple[int, str]], runner_path: str,
                        settings: RunSettings) -> tuple[str, str]:
        nonce = secrets.token_hex(4)
        mark = f"@@lutnas-{nonce}"
        prefix = [] if settings.core_mask == "all" else ["taskset", settings.core_mask]
        lines = [fp.STATE_FUNCTION]
        for index, path in models:
            command = prefix + [runner_path] + self._runner_args(path, settings)
            lines.append(f"echo '{mark} begin {index}'; lutnas_state; echo '{mark} run {index}'; "
                         f"{' '.join(shlex.quote(part) for part in command)} 2>&1; "
                         f"echo \"{mark} rc {index} $?\"; lutnas_state; echo '{mark} end {index}'")
        return "\n".join(lines), nonce

    def _runner_args(self, model_path: str, settings: RunSettings) -> list[str]:
        if settings.runtime == "onnxruntime":
            args = ["-m", "times", "-r", str(settings.runs), "-x", str(settings.threads),
                    "-e", "nnapi" if settings.accelerator == "nnapi" else "cpu", model_path]
            return args
        args = [f"--graph={model_path}", f"--num_threads={settings.threads}",
                f"--warmup_runs={settings.warmup}", f"--num_runs={settings.runs}"]
        if settings.accelerator == "gpu":
            args.append("--use_gpu=true")
        elif settings.accelerator == "nnapi":
            args.append("--use_nnapi=true")
        if settings.op_profiling:
            args.append("--enable_op_profiling=true")
        return args

    def _measurement(self, file: ModelFile, section: dict | None, settings: RunSettings,
                     runner: RunnerInfo, trial_index: int, note: str) -> Measurement:
        if section is None or section.get("rc") is None:
            text = (section or {}).get("output", "")
            return Measurement.failed(
                file, trial_index, runner,
                f"the runner's output ended before its exit status: {first_lines(text)}",
                raw_output=note + text)
        output = section["output"]
        temps_before, freqs_before = fp.parse_state(section["before"])
        temps_after, freqs_after = fp.parse_state(section["after"])
        context = dict(temps_before=temps_before, temps_after=temps_after, freqs_before=freqs_before,
                       freqs_after=freqs_after)
        if section["rc"] != 0:
            measurement = Measurement.failed(file, trial_index, runner,
                                             f"{runner.name} exited with status {section['rc']}: "
                                             f"{first_lines(output, 4)}", raw_output=note + output)
            for key, value in context.items():
                setattr(measurement, key, value)
            return measurement
        try:
            stats = _stats(output, settings)
        except RunnerOutputError as exc:
            measurement = Measurement.failed(file, trial_index, runner, str(exc), raw_output=note + output)
            for key, value in context.items():
                setattr(measurement, key, value)
            return measurement
        return Measurement(key=file.key, model_sha256=file.sha256, trial_index=trial_index, runner=runner,
                           raw_output=note + output, **stats, **context)

    def _wait_until_cool(self) -> str:
        """Wait while the hottest CPU zone is above max_temp_c; a note for the raw output if it waited."""
        started = time.monotonic()
        first: float | None = None
        while True:
            temps, _ = self.read_state()
            hottest = fp.hottest_cpu_c(temps)
            if hottest is None or hottest <= self.options.max_temp_c:
                break
            first = hottest if first is None else first
            waited = time.monotonic() - started
            if waited >= self.cool_max_wait_s:
                self.on_message(f"{self.address}: still {hottest:.1f} °C after {waited:.0f} s; "
                                "measuring anyway")
                break
            if waited == 0 or int(waited) % 60 == 0:
                self.on_message(f"{self.address}: {hottest:.1f} °C is above {self.options.max_temp_c:g} °C; "
                                "waiting for the phone to cool")
            time.sleep(self.cool_poll_s)
        if first is None:
            return ""
        waited = time.monotonic() - started
        self.cooldown_waits_s.append(waited)
        return (f"# lutnas: waited {waited:.1f} s for the hottest CPU zone to cool from {first:.1f} °C "
                f"to {self.options.max_temp_c:g} °C\n")

    def close(self) -> None:
        if self._on_device and not self.options.keep_files:
            paths = sorted(self._on_device)
            try:
                for start in range(0, len(paths), 200):
                    self.shell("rm -f " + " ".join(shlex.quote(p) for p in paths[start:start + 200]))
                self.shell(f"rmdir {shlex.quote(DEVICE_DIR + '/models')} {shlex.quote(DEVICE_DIR)} "
                           "2>/dev/null; true")
            except DeviceError as exc:
                self.on_message(f"{self.address}: could not remove pushed files: {exc}")
            self._on_device.clear()
        self._close_device()


def _stats(output: str, settings: RunSettings) -> dict:
    if settings.runtime == "onnxruntime":
        perf = parse_onnxruntime_perf_test(output)
        median = perf.percentiles_us.get("p50", perf.avg_us)
        return dict(median_ms=_ms(median), mean_ms=_ms(perf.avg_us), min_ms=_ms(perf.min_us),
                    p90_ms=_ms(perf.percentiles_us.get("p90")))
    parsed = parse_benchmark_model(output)
    values = parsed.stats.values_us if parsed.stats else {}
    avg = values.get("avg", parsed.inference_avg_us)
    return dict(median_ms=_ms(values.get("median", avg)), mean_ms=_ms(avg), std_ms=_ms(values.get("std")),
                min_ms=_ms(values.get("min")),
                operator_ms=parsed.node_type_ms() if settings.op_profiling else None)


def _ms(value_us: float | None) -> float | None:
    return None if value_us is None else value_us / 1000.0


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


def _text(exc: Exception) -> str:
    value = exc.args[0] if exc.args else exc
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
