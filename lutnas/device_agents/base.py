"""The device agent contract: measure model files on one device, report what was measured and how.

An agent knows nothing about search spaces: it receives model files (each labelled with the key the
caller will store it under) and returns one Measurement per file per trial. The same contract serves
the host (a fresh worker process per trial) and a phone over ADB (push, then run the phone's
`benchmark_model`): batches of files per trial, a trial index, temperatures and frequencies around
the trial, per-operator breakdowns when the runner gives them, and an error per file that never
aborts the rest of the batch.
"""

from __future__ import annotations

import operator
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lutnas.errors import BadInputError
from lutnas.fileio import sha256_of  # noqa: F401  (re-exported: callers import it from here)

RUNTIMES = ("tflite", "onnxruntime", "torch", "executorch")
ACCELERATORS = ("cpu", "gpu", "nnapi", "npu")
PRECISIONS = ("fp32", "fp16", "int8")
# The cache state each timed run starts from: "warm" (runs back to back, as benchmark_model does)
# or "cold-l2" (the host worker rewrites a buffer of 4x the core's L2 before every run, so a
# block starts the way it does inside a whole model: with a cache its predecessor filled;
# benchmarks/results/lut_gap.json), or "cold-llc" (a buffer of 2x the last-level cache before every
# run and, paced, before every pace invoke: weights and input come from memory, as a block's do
# inside a model whose weights outgrow the cache (elasticvit at 128 px: 60-100 MiB of fp32 weights
# against this host's 32 MiB L3); and the pace model's own time no longer depends on the model it
# follows, which it does after cold-l2 runs (0.11-0.34 ms after blocks, 0.34-0.42 ms after whole
# subnets; 0.48-0.57 / 0.52-0.59 ms with the flush: measured, session-6 note)).
CACHE_STATES = ("warm", "cold-l2", "cold-llc")
# Pacing (RunSettings.pace). On a virtual host the speed of everything changes by up to 2x on a
# time scale of seconds, shared by whatever runs (measured here: one subnet 0.34-0.70 ms across
# fresh processes, and from one interpreter instance to the next inside a process); a model timed
# invoke by invoke against a fixed pace model sees the same state in both, so the ratio holds
# (the same subnet/pace ratio: 0.725-0.791). Figures are ratio x the pace model's median over the
# store's first paced run (tables/store.py); on evmini blocks this cut the trial-to-trial CV from
# 16% to 3-4% (benchmarks/pacing.py).
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
    """How a file is run; measurements are only compared under equal settings.

    Validated here, once, when constructed (BadInputError naming the flag): nothing downstream
    checks these values again. Whether a device can honour valid settings (a core it lacks, a
    runtime it cannot run) is its agent's `check_settings`. `cores` is kept sorted and unique.
    """

    runtime: str = "tflite"
    threads: int = 1
    cores: tuple[int, ...] | None = None  # pinned cores; None = not pinned
    warmup: int = 10
    runs: int = 50
    accelerator: str = "cpu"
    op_profiling: bool = False
    precision: str = "fp32"  # fp32 | fp16 (weights) | int8 (full-integer); part of the identity
    cache: str = "warm"  # CACHE_STATES; a table refuses measurements that mix them
    # Interleave every timed invoke with one of a fixed pace model and normalise by it (PACING);
    # only timing loops lutnas owns can (DeviceAgent.can_pace); a table refuses mixing.
    pace: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.pace, bool):
            raise BadInputError(f"pace must be true or false, got {self.pace!r}")
        if self.cache not in CACHE_STATES:
            raise BadInputError(f"unknown cache state {self.cache!r}; use {' or '.join(CACHE_STATES)}")
        if self.precision not in PRECISIONS:
            raise BadInputError(f"unknown precision {self.precision!r}; use --precision "
                                f"{' or '.join(PRECISIONS)}")
        if self.runtime not in RUNTIMES:
            raise BadInputError(f"unknown runtime {self.runtime!r}; use one of {', '.join(RUNTIMES)}")
        if self.accelerator not in ACCELERATORS:
            raise BadInputError(f"unknown accelerator {self.accelerator!r}; use one of "
                                f"{', '.join(ACCELERATORS)}")
        threads, warmup, runs = (_count(self.threads), _count(self.warmup), _count(self.runs))
        if threads is None or threads < 1:
            raise BadInputError(f"--threads must be at least 1, got {self.threads!r}")
        if runs is None or warmup is None or runs < 1 or warmup < 0:
            raise BadInputError(f"--runs must be at least 1 and --warmup at least 0, got "
                                f"{self.runs!r} and {self.warmup!r}")
        for name, value in (("threads", threads), ("warmup", warmup), ("runs", runs)):
            object.__setattr__(self, name, value)  # numpy integers from a table become int
        if self.cores is not None:
            cores = [_count(c) for c in self.cores]
            if not cores or any(c is None or c < 0 for c in cores):
                raise BadInputError(f"--cores must list core numbers >= 0, got {self.cores!r}")
            object.__setattr__(self, "cores", tuple(sorted(set(cores))))

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


def parse_cores(text: str) -> tuple[int, ...]:
    """'0', '0,2', '4-7' -> sorted unique core numbers (taskset's list syntax).

    The one core-list parser (the CLI's --cores and the benchmarks use it). Raises BadInputError.
    """
    cores: list[int] = []
    try:
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            cores.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    except ValueError:
        raise BadInputError(f"--cores {text!r} is not a core list like 0 or 0,1 or 4-7") from None
    if not cores or min(cores) < 0:
        raise BadInputError(f"--cores {text!r} must list core numbers >= 0")
    return tuple(sorted(set(cores)))


def _count(value: object) -> int | None:
    """`value` as an int when it is an integer (int, numpy integer), else None; bools are not."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


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
    """One file measured in one trial. Times in milliseconds.

    Every field is stored (the measurement store's schema 3 keeps `statistic`, the delegation
    counts, `partitions`, `peak_mem_mb` and `flags` as columns of their own; `notes()` repeats them
    in the raw output for whoever reads that alone)."""

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
    # Which statistic median_ms holds: "median" (the runner's), "median-of-samples" (lutnas's, from
    # samples_ms) or "average" (the runner printed only an average: a last resort, flagged).
    statistic: str = ""
    delegated_nodes: int | None = None  # nodes the requested delegate ran, of total_nodes
    total_nodes: int | None = None
    partitions: int | None = None  # delegate partitions (each a CPU <-> accelerator hand-over)
    peak_mem_mb: float | None = None  # the runner's peak memory footprint, when it printed one
    flags: list[str] = field(default_factory=list)  # "partial-delegation", "average-as-median", ...
    # Paced timing (RunSettings.pace): the pace model's median over the invokes interleaved with
    # this file's timed ones, and which pace model it was; and the median over runs of each run's
    # ms / its pace invoke's ms (None where only the medians were recorded: then the trial's
    # ratio is median_ms / pace_ms; store.paced_ms).
    pace_ms: float | None = None
    pace_sha256: str = ""
    pace_ratio: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def notes(self) -> str:
        """One `# lutnas:` line with the statistic, delegation, memory and flags (for raw_output)."""
        parts = [f"statistic={self.statistic}"] if self.statistic else []
        if self.delegated_nodes is not None or self.total_nodes is not None:
            parts.append(f"delegated_nodes={self.delegated_nodes} total_nodes={self.total_nodes} "
                         f"partitions={self.partitions}")
        if self.peak_mem_mb is not None:
            parts.append(f"peak_mem_mb={self.peak_mem_mb:g}")
        if self.flags:
            parts.append("flags=" + ",".join(self.flags))
        return f"# lutnas: {' '.join(parts)}\n" if parts else ""

    def fill_stats_from_samples(self) -> "Measurement":
        """Derive the summary statistics from `samples_ms` (runners that give only stats skip this)."""
        samples = sorted(self.samples_ms)
        if samples:
            self.median_ms = statistics.median(samples)
            self.mean_ms = statistics.fmean(samples)
            self.std_ms = statistics.pstdev(samples) if len(samples) > 1 else 0.0
            self.min_ms = samples[0]
            self.p90_ms = samples[min(len(samples) - 1, int(round(0.9 * (len(samples) - 1))))]
            self.statistic = "median-of-samples"
        return self

    @classmethod
    def failed(cls, file: ModelFile, trial_index: int, runner: RunnerInfo, error: str,
               raw_output: str = "") -> "Measurement":
        return cls(key=file.key, model_sha256=file.sha256, trial_index=trial_index, runner=runner,
                   raw_output=raw_output, status=error or "error")


class DeviceAgent(ABC):
    """One device. Agents are used from one thread; a device farm runs one agent per worker."""

    # Cache states its timing loop can start runs from (RunSettings.cache); benchmark_model on a
    # phone times runs back to back, so only "warm" unless the agent owns the loop (the host).
    cache_states: tuple[str, ...] = ("warm",)
    # Whether its timing loop can interleave a pace model (RunSettings.pace): lutnas's own worker.
    can_pace: bool = False
    # Whether a trial first copies the model files to the device (a phone, a board); the host
    # reads them in place.
    pushes_files: bool = False
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

    def models_per_session(self, settings: RunSettings) -> int:
        """Models one runner session (a phone's shell session) runs before `measure_batch` opens
        the next under `settings`; 0 when a whole batch is one session (lutnas's worker process).
        A dry run's probe times one session more to charge the extra ones (`profiler.probe`)."""
        return 0

    def missing_files(self, files: Sequence[ModelFile]) -> list[ModelFile]:
        """Those of `files` a trial would first copy to the device (not there under their device
        path with the same sha256); none where files are read in place (`pushes_files` False). A
        dry run charges their pushes (`profiler.probe`). DeviceError as the device's shell raises."""
        return []

    def push_files(self, files: Sequence[ModelFile]) -> None:
        """Copy those of `files` the device lacks, each device path once, as a trial's first step
        does; nothing where files are read in place. DeviceError as the transport raises, or when
        the device refuses a file."""
        return None

    def forget_files(self, files: Sequence[ModelFile]) -> None:
        """Remove `files` from the device, so the next push copies them again (the probe times
        pushes so); nothing where files are read in place. DeviceError as the shell raises."""
        return None

    def measure_stream(self, files: Sequence[ModelFile], settings: RunSettings,
                       trial_index: int, pace: ModelFile | None = None) -> Iterator[Measurement]:
        """Like `measure_batch`, yielding each Measurement as soon as it is taken; with `pace` (a
        model file, when `settings.pace`), every timed invoke is followed by one of `pace` and each
        Measurement carries the pace model's median (`pace_ms`); BadInputError where the agent's
        timing loop cannot do that (`can_pace` False).

        The profiling loop stores measurements from this iterator, so an agent that can report
        file by file (the local agent) loses at most the file in flight when the process is
        killed; the default simply yields the finished batch.
        """
        if pace is not None:
            raise BadInputError(f"{type(self).__name__} cannot pace its runs; drop --pace")
        yield from self.measure_batch(files, settings, trial_index)

    def check_settings(self, settings: RunSettings) -> None:
        """Raise BadInputError for (valid) settings this device cannot honour (default: accept)."""
        return None

    def read_state(self) -> tuple[dict[str, float], dict[str, int]]:
        """Temperatures (°C by zone) and CPU frequencies (kHz) now; empty where not read."""
        return {}, {}

    def close(self) -> None:
        """Release the device (remove pushed files, close connections)."""
        return None

    def __enter__(self) -> "DeviceAgent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_cache_state(agent: DeviceAgent, settings: RunSettings) -> None:
    """BadInputError when `agent`'s timing loop cannot start runs from `settings.cache`, or cannot
    pace them when `settings.pace`."""
    if settings.cache not in agent.cache_states:
        raise BadInputError(f"{type(agent).__name__} times runs back to back and cannot give them a "
                            f"{settings.cache} cache; use --cache-state {' or '.join(agent.cache_states)}")
    if settings.pace and not agent.can_pace:
        raise BadInputError(f"{type(agent).__name__} runs its device's own benchmark binary, which "
                            f"cannot interleave a pace model; drop --pace (pacing needs lutnas's own "
                            f"timing loop: --device local)")
