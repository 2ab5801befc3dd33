"""The host CPU as a device: each trial is a fresh worker process (`local_worker`) over a batch.

The agent is the transport (start a process, feed it the request, read one JSON line per file);
the worker is the runner; parsing its lines is `measurement_from_record`. A worker that dies
(a segfaulting runtime, the OOM killer) costs the file it was on: that file gets an error
Measurement and a new worker takes the rest of the batch.
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
import time
from collections.abc import Iterator, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from lutnas.device_agents.base import (
    ACCELERATORS,
    RUNTIMES,
    CpuCluster,
    DeviceAgent,
    DeviceInfo,
    Measurement,
    ModelFile,
    RunnerInfo,
    RunSettings,
)
from lutnas.device_agents.runtimes import runtime_versions
from lutnas.errors import BadInputError, DeviceError

RUNTIME_MODULES = {"tflite": ("ai_edge_litert", "tflite_runtime", "tensorflow"),
                   "onnxruntime": ("onnxruntime",), "torch": ("torch",)}


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


def measurement_from_record(record: dict[str, Any], file: ModelFile, trial_index: int) -> Measurement:
    """A worker's JSON line -> Measurement (stats derived from the raw samples)."""
    runner = RunnerInfo(record.get("runner_name", "?"), record.get("runner_version", "?"))
    measurement = Measurement(
        key=file.key, model_sha256=file.sha256, trial_index=trial_index, runner=runner,
        samples_ms=[float(x) for x in record.get("samples_ms", [])],
        operator_ms=record.get("operator_ms"), raw_output=json.dumps(record, sort_keys=True),
        temps_before=record.get("temps_before", {}), temps_after=record.get("temps_after", {}),
        freqs_before=record.get("freqs_before", {}), freqs_after=record.get("freqs_after", {}),
        timestamp=float(record.get("timestamp", time.time())), status=record.get("status", "error"),
    )
    if measurement.ok and not measurement.samples_ms:
        measurement.status = "error: the worker returned no samples"
    return measurement.fill_stats_from_samples()


class LocalAgent(DeviceAgent):
    """Measures model files on this machine's CPU, one fresh worker process per batch."""

    def __init__(self, python: str | None = None, idle_timeout_s: float = 600.0) -> None:
        self.python = python or sys.executable
        self.idle_timeout_s = idle_timeout_s  # no line from the worker for this long = hung
        self._info: DeviceInfo | None = None

    def info(self) -> DeviceInfo:
        if self._info is None:
            self._info = host_info()
        return self._info

    def check_settings(self, settings: RunSettings) -> None:
        if settings.runtime not in RUNTIMES:
            raise BadInputError(f"unknown runtime {settings.runtime!r}; use one of {', '.join(RUNTIMES)}")
        if settings.accelerator != "cpu":
            raise BadInputError(f"the local agent runs on the CPU only, not {settings.accelerator!r} "
                                f"(accelerators {', '.join(ACCELERATORS)} are for phones)")
        if settings.threads < 1:
            raise BadInputError(f"threads must be at least 1, got {settings.threads}")
        if settings.warmup < 0 or settings.runs < 1:
            raise BadInputError(f"need warmup >= 0 and runs >= 1, got {settings.warmup} and {settings.runs}")
        if settings.cores is not None:
            allowed = sorted(os.sched_getaffinity(0))
            missing = [c for c in settings.cores if c not in allowed]
            if missing or not settings.cores:
                raise BadInputError(f"core(s) {missing or list(settings.cores)} do not exist or are not "
                                    f"available to this process; available cores: "
                                    f"{','.join(map(str, allowed))}")
        if not any(find_spec(m) for m in RUNTIME_MODULES[settings.runtime]):
            raise BadInputError(f"runtime {settings.runtime!r} is not installed here (none of "
                                f"{', '.join(RUNTIME_MODULES[settings.runtime])} imports)")

    def measure_batch(self, files: Sequence[ModelFile], settings: RunSettings,
                      trial_index: int) -> list[Measurement]:
        return list(self.measure_stream(files, settings, trial_index))

    def measure_stream(self, files: Sequence[ModelFile], settings: RunSettings,
                       trial_index: int) -> Iterator[Measurement]:
        self.check_settings(settings)
        remaining = list(files)
        while remaining:
            done = 0
            for measurement in self._one_worker(remaining, settings, trial_index):
                done += 1
                yield measurement
            remaining = remaining[done:]

    def _one_worker(self, files: Sequence[ModelFile], settings: RunSettings,
                    trial_index: int) -> Iterator[Measurement]:
        """Start one worker over `files`; if it dies early, the file it was on gets the error."""
        request = {"runtime": settings.runtime, "threads": settings.threads,
                   "cores": list(settings.cores) if settings.cores else None,
                   "warmup": settings.warmup, "runs": settings.runs,
                   "op_profiling": settings.op_profiling,
                   "files": [{"path": str(f.path), "key": f.key} for f in files]}
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(
                [self.python, "-m", "lutnas.device_agents.local_worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=stderr, env=os.environ | {"PYTHONUNBUFFERED": "1"})
            try:
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(json.dumps(request).encode())
                process.stdin.close()
                index = 0
                for record in self._lines(process):
                    if "fatal" in record:
                        raise DeviceError(f"the local worker could not start {settings.runtime}: "
                                          f"{record['fatal']}")
                    yield measurement_from_record(record, files[index], trial_index)
                    index += 1
                    if index == len(files):
                        break
                code = process.wait(timeout=30)
                if index < len(files):
                    if code == -signal.SIGINT or code == 130:
                        raise KeyboardInterrupt
                    stderr.seek(0)
                    tail = stderr.read().decode(errors="replace").strip().splitlines()[-3:]
                    why = f"signal {-code}" if code < 0 else f"exit code {code}"
                    yield Measurement.failed(files[index], trial_index, RunnerInfo(settings.runtime, "?"),
                                             f"error: worker died ({why}) on this file: "
                                             f"{' | '.join(tail)[:400]}")
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()

    def _lines(self, process: subprocess.Popen[bytes]) -> Iterator[dict[str, Any]]:
        assert process.stdout is not None
        fd = process.stdout.fileno()
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


def model_file(path: Path, key: str) -> ModelFile:
    return ModelFile.from_path(Path(path), key)
