"""The device agent contract: measure model files on one device, report what was measured and how.

An agent knows nothing about search spaces: it receives model files (each labelled with the key the
caller will store it under) and returns one Measurement per file per trial. The same contract serves
the host (a fresh worker process per trial) and a phone over ADB (push, then run the phone's
`benchmark_model`): batches of files per trial, a trial index, temperatures and frequencies around
the trial, per-operator breakdowns when the runner gives them, and an error per file that never
aborts the rest of the batch.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RUNTIMES = ("tflite", "onnxruntime", "torch")
ACCELERATORS = ("cpu", "gpu", "nnapi")
OK = "ok"


@dataclass(frozen=True)
class CpuCluster:
    """Cores that share a maximum frequency (a big.LITTLE cluster on a phone)."""

    cores: tuple[int, ...]
    max_khz: int | None = None
    min_khz: int | None = None
    governor: str | None = None


@dataclass(frozen=True)
class DeviceInfo:
    """Who measured: enough to refuse comparing numbers from different devices or runner builds."""

    device_id: str
    kind: str  # "host" or "android"
    model: str
    manufacturer: str = ""
    soc: str = ""
    abi: str = ""
    os_name: str = ""
    os_version: str = ""
    cpu_model: str = ""
    cores: int = 0
    clusters: tuple[CpuCluster, ...] = ()
    libraries: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["clusters"] = [asdict(c) | {"cores": list(c.cores)} for c in self.clusters]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DeviceInfo":
        data = dict(data)
        data["clusters"] = tuple(
            CpuCluster(**(c | {"cores": tuple(c["cores"])})) for c in data.get("clusters", [])
        )
        return cls(**data)


@dataclass(frozen=True)
class RunSettings:
    """How a file is run; measurements are only compared under equal settings."""

    runtime: str = "tflite"
    threads: int = 1
    cores: tuple[int, ...] | None = None  # pinned cores; None = not pinned
    warmup: int = 10
    runs: int = 50
    accelerator: str = "cpu"
    op_profiling: bool = False

    @property
    def core_mask(self) -> str:
        """Hex mask as taskset takes it ("0x1" for core 0); "all" when not pinned."""
        if not self.cores:
            return "all"
        return hex(sum(1 << c for c in self.cores))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cores"] = list(self.cores) if self.cores is not None else None
        return data


@dataclass(frozen=True)
class RunnerInfo:
    name: str  # e.g. "ai_edge_litert", "benchmark_model"
    version: str
    binary_sha256: str = ""


@dataclass(frozen=True)
class ModelFile:
    """A model file and the key its measurements are stored under."""

    path: Path
    key: str
    sha256: str

    @classmethod
    def from_path(cls, path: Path, key: str) -> "ModelFile":
        return cls(Path(path), key, sha256_of(Path(path)))


@dataclass
class Measurement:
    """One file measured in one trial. Times in milliseconds."""

    key: str
    model_sha256: str
    trial_index: int
    runner: RunnerInfo
    samples_ms: list[float] = field(default_factory=list)
    median_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    p90_ms: float | None = None
    operator_ms: dict[str, float] | None = None
    raw_output: str = ""
    temps_before: dict[str, float] = field(default_factory=dict)
    temps_after: dict[str, float] = field(default_factory=dict)
    freqs_before: dict[str, int] = field(default_factory=dict)
    freqs_after: dict[str, int] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)
    status: str = OK

    @property
    def ok(self) -> bool:
        return self.status == OK

    def fill_stats_from_samples(self) -> "Measurement":
        """Derive the summary statistics from `samples_ms` (runners that give only stats skip this)."""
        samples = sorted(self.samples_ms)
        if samples:
            self.median_ms = statistics.median(samples)
            self.mean_ms = statistics.fmean(samples)
            self.std_ms = statistics.pstdev(samples) if len(samples) > 1 else 0.0
            self.min_ms = samples[0]
            self.p90_ms = samples[min(len(samples) - 1, int(round(0.9 * (len(samples) - 1))))]
        return self

    @classmethod
    def failed(cls, file: ModelFile, trial_index: int, runner: RunnerInfo, error: str,
               raw_output: str = "") -> "Measurement":
        return cls(key=file.key, model_sha256=file.sha256, trial_index=trial_index, runner=runner,
                   raw_output=raw_output, status=error or "error")


class DeviceAgent(ABC):
    """One device. Agents are used from one thread; a device farm runs one agent per worker."""

    @abstractmethod
    def info(self) -> DeviceInfo:
        """Fingerprint of the device and its runtimes (cheap after the first call)."""

    @abstractmethod
    def measure_batch(self, files: Sequence[ModelFile], settings: RunSettings,
                      trial_index: int) -> list[Measurement]:
        """Run one trial over `files` (in the given order) and return one Measurement per file.

        A file that fails gets a Measurement whose `status` is the error text; the others go on.
        A failure of the device itself (disconnect, timeout) raises `DeviceError`.
        """

    def measure_stream(self, files: Sequence[ModelFile], settings: RunSettings,
                       trial_index: int) -> Iterator[Measurement]:
        """Like `measure_batch`, yielding each Measurement as soon as it is taken.

        The profiling loop stores measurements from this iterator, so an agent that can report
        file by file (the local agent) loses at most the file in flight when the process is
        killed; the default simply yields the finished batch.
        """
        yield from self.measure_batch(files, settings, trial_index)

    def check_settings(self, settings: RunSettings) -> None:
        """Raise BadInputError for settings this device cannot honour (default: accept)."""
        return None

    def close(self) -> None:
        """Release the device (remove pushed files, close connections)."""
        return None

    def __enter__(self) -> "DeviceAgent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
