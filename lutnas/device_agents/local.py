"""The host CPU as a device: lutnas's own runner (`local_worker`) in a fresh local process per trial.

The agent composes the local-process transport (`LocalProcess`: start a child, feed it the
request, read one line per file, kill it if it hangs) with the worker's runner record
(`runners.LOCAL_WORKER`: its command, request and line parser). A worker that dies (a segfaulting
runtime, the OOM killer) costs the file it was on: that file gets an error Measurement and a new
worker takes the rest of the batch; the failure is not retried, since it would repeat.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from typing import IO, Any

from lutnas.device_agents.base import (
    CACHE_STATES,
    CpuCluster,
    DeviceAgent,
    DeviceInfo,
    Measurement,
    ModelFile,
    RunnerInfo,
    RunSettings,
)
from lutnas.device_agents.runners import LOCAL_WORKER, WorkerProgram
from lutnas.device_agents.runtimes import runtime_versions
from lutnas.errors import BadInputError, DeviceError


@dataclass(frozen=True)
class LocalOptions:
    """Options of the local agent."""

    python: str | None = None  # the interpreter that runs the worker (default: this one)
    idle_timeout_s: float = 600.0  # no line from the worker for this long = a hung runtime


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _clusters(cores: int) -> tuple[CpuCluster, ...]:
    """Cores grouped by (max, min frequency, governor) where cpufreq is readable, else one group."""
    groups: dict[tuple[int | None, int | None, str | None], list[int]] = {}
    for core in range(cores):
        base = f"/sys/devices/system/cpu/cpu{core}/cpufreq"
        max_khz, min_khz = _read(f"{base}/cpuinfo_max_freq"), _read(f"{base}/cpuinfo_min_freq")
        key = (int(max_khz) if max_khz else None, int(min_khz) if min_khz else None,
               _read(f"{base}/scaling_governor"))
        groups.setdefault(key, []).append(core)
    return tuple(CpuCluster(tuple(c), mx, mn, gov) for (mx, mn, gov), c in groups.items())


def host_info() -> DeviceInfo:
    """Fingerprint of this machine; the id stays the same across reboots and library upgrades."""
    cpu = _cpu_model()
    machine_id = _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id") or ""
    hostname = socket.gethostname()
    digest = hashlib.sha256(f"{hostname}\n{cpu}\n{machine_id}".encode()).hexdigest()[:12]
    cores = os.cpu_count() or 1
    libraries = runtime_versions() | {"python": platform.python_version()}
    return DeviceInfo(
        device_id=f"host-{digest}", kind="host", model=cpu, manufacturer="", soc="",
        abi=platform.machine(), os_name=platform.system(), os_version=platform.release(),
        cpu_model=cpu, cores=cores, clusters=_clusters(cores), libraries=libraries,
        extra={"hostname": hostname, "allowed_cores": sorted(os.sched_getaffinity(0)),
               "libc": " ".join(platform.libc_ver())},
    )


class LocalProcess:
    """The local transport: one child process, a request on its stdin, its stdout read by line.

    A context manager: leaving it kills the child if it still runs.
    """

    def __init__(self, argv: Sequence[str], request: bytes, idle_timeout_s: float) -> None:
        self.argv = list(argv)
        self.request = request
        self.idle_timeout_s = idle_timeout_s
        self._stderr: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "LocalProcess":
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr, env=os.environ | {"PYTHONUNBUFFERED": "1"})
        assert self._process.stdin is not None
        self._process.stdin.write(self.request)
        self._process.stdin.close()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._stderr is not None:
            self._stderr.close()

    def lines(self) -> Iterator[dict[str, Any]]:
        """Each JSON line the child prints, as it prints it; DeviceError after idle_timeout_s of silence."""
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        selector = selectors.DefaultSelector()
        selector.register(fd, selectors.EVENT_READ)
        buffer = b""
        try:
            while True:
                if not selector.select(timeout=self.idle_timeout_s):
                    raise DeviceError(f"the local worker printed nothing for {self.idle_timeout_s:.0f} s "
                                      f"(hung runtime?); rerun to resume")
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            selector.close()

    def wait(self, timeout_s: float) -> int:
        assert self._process is not None
        return self._process.wait(timeout=timeout_s)

    def stderr_tail(self, count: int = 3) -> list[str]:
        assert self._stderr is not None
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip().splitlines()[-count:]


class LocalAgent(DeviceAgent):
    """Measures model files on this machine's CPU, one fresh worker process per batch."""

    cache_states = CACHE_STATES  # its worker owns the timing loop, so it can evict L2 between runs
    can_pace = True  # ... and interleave a pace model

    def __init__(self, options: LocalOptions | None = None, worker: WorkerProgram = LOCAL_WORKER) -> None:
        self.options = options or LocalOptions()
        self.worker = worker
        self._info: DeviceInfo | None = None

    @staticmethod
    def accepts(address: str) -> bool:
        return address == "local"

    def info(self) -> DeviceInfo:
        if self._info is None:
            self._info = host_info()
        return self._info

    def check_settings(self, settings: RunSettings) -> None:
        if settings.accelerator != "cpu":
            raise BadInputError(f"the local agent runs on the CPU only, not {settings.accelerator!r} "
                                f"(accelerators are for phones)")
        if settings.cores is not None:
            allowed = sorted(os.sched_getaffinity(0))
            missing = [c for c in settings.cores if c not in allowed]
            if missing:
                raise BadInputError(f"core(s) {missing} do not exist or are not available to this "
                                    f"process; available cores: {','.join(map(str, allowed))}")
        modules = self.worker.runtime_modules.get(settings.runtime, ())
        if not any(find_spec(m) for m in modules):
            raise BadInputError(f"runtime {settings.runtime!r} is not installed here (none of "
                                f"{', '.join(modules)} imports)")

    def measure_batch(self, files: Sequence[ModelFile], settings: RunSettings,
                      trial_index: int) -> list[Measurement]:
        return list(self.measure_stream(files, settings, trial_index))

    def measure_stream(self, files: Sequence[ModelFile], settings: RunSettings,
                       trial_index: int, pace: ModelFile | None = None) -> Iterator[Measurement]:
        self.check_settings(settings)
        remaining = list(files)
        while remaining:
            done = 0
            for measurement in self._one_worker(remaining, settings, trial_index, pace):
                done += 1
                yield measurement
            remaining = remaining[done:]

    def _one_worker(self, files: Sequence[ModelFile], settings: RunSettings,
                    trial_index: int, pace: ModelFile | None = None) -> Iterator[Measurement]:
        """Start one worker over `files`; if it dies early, the file it was on gets the error."""
        argv = self.worker.args(self.options.python or sys.executable)
        request = self.worker.request(files, settings, pace)
        with LocalProcess(argv, request, self.options.idle_timeout_s) as process:
            index = 0
            for record in process.lines():
                measurement = self.worker.parse_line(record, files[index], trial_index, settings.runtime)
                if pace is not None and measurement.pace_ms is not None:
                    measurement.pace_sha256 = pace.sha256
                yield measurement
                index += 1
                if index == len(files):
                    break
            code = process.wait(timeout_s=30)
            if index < len(files):
                if code == -signal.SIGINT or code == 130:
                    raise KeyboardInterrupt
                why = f"signal {-code}" if code < 0 else f"exit code {code}"
                yield Measurement.failed(files[index], trial_index, RunnerInfo(settings.runtime, "?"),
                                         f"error: worker died ({why}) on this file: "
                                         f"{' | '.join(process.stderr_tail())[:400]}")
