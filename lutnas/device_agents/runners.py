"""One record per runner program: how lutnas calls it and how it reads what the program prints.

A runner is the program that times a model on the device; a transport (local process, ADB, later
SSH) only carries its command and its output. Each record holds everything about one program, so
no other file switches on a runner's name:
- `benchmark_model` (TFLite) and `onnxruntime_perf_test`: binaries the user supplies for the
  device, run by a shell transport; `args` builds the argument list, `parse` turns the output
  into Measurement statistics (pure, on top of `runner_output`'s parsers).
- `local_worker`: lutnas's own runner (`local_worker.py`), a fresh Python process per trial fed a
  JSON request; it prints one JSON line per file, which `parse_line` turns into a Measurement.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lutnas.device_agents.base import Measurement, ModelFile, RunnerInfo, RunSettings
from lutnas.device_agents.policy import mark_deterministic
from lutnas.device_agents.runner_output import (
    STAT_AVERAGE,
    STAT_RUNNER_MEDIAN,
    STAT_SAMPLE_MEDIAN,
    parse_benchmark_model,
    parse_executor_runner,
    parse_onnxruntime_perf_test,
)
from lutnas.errors import DeviceError, RunnerOutputError


@dataclass(frozen=True)
class RunnerProgram:
    """A benchmark binary run on a device through a shell.

    `host_option` / `device_option` name the `RemoteOptions` fields (and so the CLI flags) that
    locate the binary: a host file pushed once, or one already on the device.
    `parse(output, settings)` returns Measurement fields in ms; it raises RunnerOutputError for
    output it cannot read.
    """

    name: str
    runtime: str
    accelerators: tuple[str, ...]
    host_option: str
    device_option: str | None
    needs: str  # what the device needs, for the error when no binary is given
    args: Callable[[str, RunSettings], list[str]]
    parse: Callable[[str, RunSettings], dict[str, Any]]

    def flags(self) -> str:
        """The flags that supply the binary, e.g. '--runner PATH or --runner-on-device PATH'."""
        options = [self.host_option] + ([self.device_option] if self.device_option else [])
        return " or ".join(f"--{o.replace('_', '-')} PATH" for o in options)


def _ms(value_us: float | None) -> float | None:
    return None if value_us is None else value_us / 1000.0


def _timing_args(model_path: str, settings: RunSettings) -> list[str]:
    """The flags both `benchmark_model` flavours share: the model, threads, warm-up and timed runs."""
    return [f"--graph={model_path}", f"--num_threads={settings.threads}",
            f"--warmup_runs={settings.warmup}", f"--num_runs={settings.runs}"]


def benchmark_model_args(model_path: str, settings: RunSettings) -> list[str]:
    """TFLite `benchmark_model` arguments for one model under `settings`."""
    args = _timing_args(model_path, settings)
    if settings.accelerator == "gpu":
        args.append("--use_gpu=true")
    elif settings.accelerator == "nnapi":
        args.append("--use_nnapi=true")
    if settings.op_profiling:
        args.append("--enable_op_profiling=true")
    return args


def litert_args(model_path: str, settings: RunSettings) -> list[str]:
    """LiteRT CompiledModel `benchmark_model` arguments (from its flag list in benchmark_litert_model.h;
    `--dispatch_library_path` and the like come through --runner-arg)."""
    args = _timing_args(model_path, settings)
    if settings.accelerator == "gpu":
        args.append("--use_gpu=true")
    elif settings.accelerator == "npu":
        args.append("--use_npu=true")
    return args


_DELEGATE_OPS = ("delegate",)  # node types of a delegate's kernel: an op table of only these is opaque


def benchmark_model_stats(output: str, settings: RunSettings) -> dict[str, Any]:
    """Measurement fields of one run, in ms.

    benchmark_model prints statistics, not samples: the median is its median when it prints one,
    else its average (statistic "average", flagged). A requested accelerator whose delegate the
    runner says was not applied raises RunnerOutputError quoting that line (marked deterministic);
    partial delegation is kept with its share and flagged. An op profile whose only nodes are a
    delegate's is opaque: no breakdown, flagged. p90 it never prints.
    """
    parsed = parse_benchmark_model(output)
    values = parsed.stats.values_us if parsed.stats else {}
    median, statistic = parsed.median()
    flags = ["average-as-median"] if statistic == STAT_AVERAGE else []
    fields: dict[str, Any] = {}
    if settings.accelerator != "cpu":
        delegation = parsed.delegation_for(settings.accelerator)
        if delegation is not None and delegation.applied is False:
            raise RunnerOutputError(mark_deterministic(
                f"the {settings.accelerator} delegate was not applied, so nothing ran on the "
                f"{settings.accelerator}: the runner said {delegation.line!r}"))
        if delegation is not None:
            fields = dict(delegated_nodes=delegation.nodes, total_nodes=delegation.total,
                          partitions=delegation.partitions)
            if delegation.partial:
                flags.append("partial-delegation")
        else:
            flags.append("delegation-unreported")
    operator_ms = parsed.node_type_ms() if settings.op_profiling else None
    if operator_ms and all(any(d in op.lower() for d in _DELEGATE_OPS) for op in operator_ms):
        operator_ms, flags = None, flags + ["opaque-op-profile"]
    return dict(median_ms=_ms(median), mean_ms=_ms(values.get("avg", parsed.inference_avg_us)),
                std_ms=_ms(values.get("std")), min_ms=_ms(values.get("min")), operator_ms=operator_ms,
                statistic=statistic, peak_mem_mb=parsed.peak_memory_mb, flags=flags, **fields)


def perf_test_args(model_path: str, settings: RunSettings) -> list[str]:
    """`onnxruntime_perf_test` arguments (it has no warm-up option: its first run is reported apart)."""
    return ["-m", "times", "-r", str(settings.runs), "-x", str(settings.threads),
            "-e", "nnapi" if settings.accelerator == "nnapi" else "cpu", model_path]


def perf_test_stats(output: str, settings: RunSettings) -> dict[str, Any]:
    """Statistics of one run, in ms: the P50 as median when printed, else the average (flagged)."""
    perf = parse_onnxruntime_perf_test(output)
    p50 = perf.percentiles_us.get("p50")
    return dict(median_ms=_ms(p50 if p50 is not None else perf.avg_us), mean_ms=_ms(perf.avg_us),
                min_ms=_ms(perf.min_us), p90_ms=_ms(perf.percentiles_us.get("p90")),
                statistic=STAT_RUNNER_MEDIAN if p50 is not None else STAT_AVERAGE,
                flags=[] if p50 is not None else ["average-as-median"], peak_mem_mb=perf.peak_memory_mb)


def executor_runner_args(model_path: str, settings: RunSettings) -> list[str]:
    """ExecuTorch `executor_runner` arguments: warm-up and timed runs as one `--num_executions`
    (it has no warm-up option; `executor_runner_stats` drops the warm-up executions)."""
    return [f"--model_path={model_path}", f"--num_executions={settings.warmup + settings.runs}",
            f"--cpu_threads={settings.threads}", "--print_output=none"]


def executor_runner_stats(output: str, settings: RunSettings) -> dict[str, Any]:
    """Measurement fields of one run, in ms.

    A runner that prints every execution (`Iteration i of N`) gives samples: the warm-up executions
    are dropped and the statistics come from the rest (median of samples). One that prints only its
    total gives the mean over all executions, warm-up included (statistic "average", flagged
    "average-as-median" and "warmup-included").
    """
    parsed = parse_executor_runner(output)
    if parsed.iterations_us:
        samples = [us / 1000.0 for us in parsed.iterations_us[settings.warmup:]] or \
                  [us / 1000.0 for us in parsed.iterations_us]
        ordered = sorted(samples)
        middle = len(ordered) // 2
        median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        mean = sum(samples) / len(samples)
        std = (sum((x - mean) ** 2 for x in samples) / len(samples)) ** 0.5
        p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
        return dict(samples_ms=samples, median_ms=median, mean_ms=mean, std_ms=std, min_ms=ordered[0],
                    p90_ms=p90, statistic=STAT_SAMPLE_MEDIAN, flags=[])
    return dict(median_ms=_ms(parsed.mean_us), mean_ms=_ms(parsed.mean_us), statistic=STAT_AVERAGE,
                flags=["average-as-median"] + (["warmup-included"] if settings.warmup else []))


BENCHMARK_MODEL = RunnerProgram(
    name="benchmark_model", runtime="tflite", accelerators=("cpu", "gpu", "nnapi"),
    host_option="runner", device_option="runner_on_device",
    needs="TFLite's benchmark_model built for it (e.g. the android_aarch64 nightly)",
    args=benchmark_model_args, parse=benchmark_model_stats)

# LiteRT's CompiledModel benchmark (benchmark_litert_model): same parser, its own flags.
LITERT_COMPILED_MODEL = RunnerProgram(
    name="benchmark_litert_model", runtime="tflite", accelerators=("cpu", "gpu", "npu"),
    host_option="runner", device_option="runner_on_device",
    needs="LiteRT's CompiledModel benchmark_model built for it",
    args=litert_args, parse=benchmark_model_stats)

# Written from the format its source documents; no GPU provider in the Android build lutnas targets.
ONNXRUNTIME_PERF_TEST = RunnerProgram(
    name="onnxruntime_perf_test", runtime="onnxruntime", accelerators=("cpu", "nnapi"),
    host_option="onnx_runner", device_option=None,
    needs="onnxruntime_perf_test built for it",
    args=perf_test_args, parse=perf_test_stats)

# ExecuTorch's executor_runner (its XNNPACK build, for .pte files lowered to XNNPACK); supplied with
# --runner like benchmark_model, since one profiling run uses one runtime.
EXECUTOR_RUNNER = RunnerProgram(
    name="executor_runner", runtime="executorch", accelerators=("cpu",),
    host_option="runner", device_option="runner_on_device",
    needs="ExecuTorch's executor_runner built for it with XNNPACK and the posix PAL",
    args=executor_runner_args, parse=executor_runner_stats)

# The runner of each runtime on a device reached through a shell (the default for --runner-kind).
SHELL_RUNNERS: dict[str, RunnerProgram] = {p.runtime: p for p in (BENCHMARK_MODEL, ONNXRUNTIME_PERF_TEST,
                                                                  EXECUTOR_RUNNER)}
# --runner-kind: the TFLite runner programs by the name the flag takes.
RUNNER_KINDS: dict[str, RunnerProgram] = {"benchmark_model": BENCHMARK_MODEL,
                                          "litert": LITERT_COMPILED_MODEL}


def shell_runner(runtime: str, kind: str | None = None) -> RunnerProgram | None:
    """The runner program for `runtime` (and --runner-kind `kind` for tflite); None when none."""
    if runtime == "tflite" and kind:
        return RUNNER_KINDS.get(kind)
    return SHELL_RUNNERS.get(runtime)


@dataclass(frozen=True)
class WorkerProgram:
    """lutnas's own runner: `python -m MODULE`, a JSON request on stdin, a JSON line per file.

    `runtime_modules`: the Python modules any of which lets it run a runtime (checked before a
    worker is started, so a missing runtime is one clear error rather than a failed batch).
    """

    name: str = "local_worker"
    module: str = "lutnas.device_agents.local_worker"
    runtime_modules: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "tflite": ("ai_edge_litert", "tflite_runtime", "tensorflow"),
        "onnxruntime": ("onnxruntime",), "torch": ("torch",), "executorch": ("executorch",)})

    def args(self, python: str) -> list[str]:
        return [python, "-m", self.module]

    def request(self, files: Sequence[ModelFile], settings: RunSettings,
                pace: ModelFile | None = None) -> bytes:
        """The worker's stdin: the settings, the pace model (or null) and the files, in the order
        they are measured."""
        return json.dumps({"runtime": settings.runtime, "threads": settings.threads,
                           "cores": list(settings.cores) if settings.cores else None,
                           "warmup": settings.warmup, "runs": settings.runs,
                           "op_profiling": settings.op_profiling, "cache": settings.cache,
                           "pace": str(pace.path) if pace is not None else None,
                           "files": [{"path": str(f.path), "key": f.key} for f in files]}).encode()

    def parse_line(self, record: dict[str, Any], file: ModelFile, trial_index: int,
                   runtime: str) -> Measurement:
        """One JSON record of the worker -> Measurement (stats derived from the raw samples).

        Raises DeviceError when the worker says it could not start the runtime at all.
        """
        if "fatal" in record:
            raise DeviceError(f"the local worker could not start {runtime}: {record['fatal']}")
        return measurement_from_record(record, file, trial_index)


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
    if record.get("pace_ms") is not None:
        measurement.pace_ms = float(record["pace_ms"])
    if record.get("pace_ratio") is not None:
        measurement.pace_ratio = float(record["pace_ratio"])
    return measurement.fill_stats_from_samples()


LOCAL_WORKER = WorkerProgram()
