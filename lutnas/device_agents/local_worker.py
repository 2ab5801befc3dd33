"""One trial on the host: a fresh process that measures a batch of model files in the order given.

Run as `python -m lutnas.device_agents.local_worker`, a request (JSON) on stdin, one JSON line per
file on stdout as soon as that file is measured, so the parent can store each measurement as it is
taken. Why a process per trial: a process that starts slow stays slow for its whole life (CV across
processes 5-19% on a 2-core host, 0.2-3.6% within one), so trials must sample processes.

It imports only the runtime it needs (torch costs ~1.5 s to import, onnxruntime and LiteRT ~0.15 s)
and nothing of lutnas beyond the TFLite fallback chain. Native libraries print to fd 1, so the
protocol goes to a private duplicate of stdout and fd 1 is pointed at stderr.
"""

from __future__ import annotations

import gc
import glob
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def read_temps() -> dict[str, float]:
    temps: dict[str, float] = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        try:
            with open(f"{zone}/type") as t, open(f"{zone}/temp") as v:
                temps[t.read().strip() or os.path.basename(zone)] = int(v.read().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return temps


def read_freqs(cores: list[int] | None) -> dict[str, int]:
    freqs: dict[str, int] = {}
    for core in cores if cores else range(os.cpu_count() or 1):
        try:
            with open(f"/sys/devices/system/cpu/cpu{core}/cpufreq/scaling_cur_freq") as handle:
                freqs[f"cpu{core}"] = int(handle.read().strip())
        except (OSError, ValueError):
            continue
    return freqs


def _numpy_dtype(onnx_type: str) -> Any:
    return {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
            "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}[onnx_type]


def _random(shape: Any, dtype: Any) -> np.ndarray:
    # Symbolic (str / None) or negative dimensions are batch-like: use 1.
    dims = [int(d) if isinstance(d, (int, np.integer)) and int(d) > 0 else 1 for d in shape]
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(dims).astype(dtype)
    return rng.integers(0, 8, size=dims).astype(dtype)


class Runner:
    """Loads one file and gives a zero-argument `invoke` to time, plus optional per-operator times."""

    name = "?"
    version = "?"

    def load(self, path: str, threads: int) -> Callable[[], Any]:
        raise NotImplementedError

    def operator_ms(self, path: str, threads: int, runs: int) -> dict[str, float] | None:
        return None


class TfliteRunner(Runner):
    def load(self, path: str, threads: int) -> Callable[[], Any]:
        from lutnas.device_agents.runtimes import load_tflite_interpreter_named

        interpreter, named = load_tflite_interpreter_named(path, threads)
        self.name, _, self.version = named.partition("==")
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], _random(detail["shape"], detail["dtype"]))
        return interpreter.invoke


class OnnxRunner(Runner):
    def __init__(self) -> None:
        import onnxruntime

        self.ort = onnxruntime
        self.name, self.version = "onnxruntime", onnxruntime.__version__

    def _session(self, path: str, threads: int, profile: bool) -> Any:
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                       f"lutnas-ort-{os.getpid()}")
        return self.ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def _feeds(self, session: Any) -> dict[str, np.ndarray]:
        return {i.name: _random(i.shape, _numpy_dtype(i.type)) for i in session.get_inputs()}

    def load(self, path: str, threads: int) -> Callable[[], Any]:
        session = self._session(path, threads, profile=False)
        feeds = self._feeds(session)
        return lambda: session.run(None, feeds)

    def operator_ms(self, path: str, threads: int, runs: int) -> dict[str, float] | None:
        # A separate profiled session after the timed runs: the profiler's own cost stays out of the
        # timed samples; its per-node kernel times are summed by operator type, per run.
        session = self._session(path, threads, profile=True)
        feeds = self._feeds(session)
        session.run(None, feeds)
        profiled_runs = max(1, min(runs, 20))
        for _ in range(profiled_runs):
            session.run(None, feeds)
        profile_path = session.end_profiling()
        try:
            with open(profile_path) as handle:
                events = json.load(handle)
        finally:
            os.unlink(profile_path)
        totals: dict[str, float] = {}
        for event in events:
            if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
                op = event.get("args", {}).get("op_name", "?")
                totals[op] = totals.get(op, 0.0) + float(event.get("dur", 0))
        # The first profiled run is the warm-up; kernel events of all runs are in the file.
        return {op: us / 1000.0 / (profiled_runs + 1) for op, us in sorted(totals.items())}


class TorchRunner(Runner):
    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        self.torch = torch
        self.name, self.version = "torch", torch.__version__.split("+")[0]

    def load(self, path: str, threads: int) -> Callable[[], Any]:
        torch = self.torch
        sidecar = os.path.splitext(path)[0] + ".json"
        try:
            with open(sidecar) as handle:
                shape = json.load(handle)["input_shape"]
        except (OSError, ValueError, KeyError):
            raise RuntimeError(f"no input shape for {path}: TorchScript files need the export record "
                               f"{sidecar} next to them") from None
        module = torch.jit.load(path).eval()
        example = torch.from_numpy(_random(shape, np.float32))

        def invoke() -> Any:
            with torch.inference_mode():
                return module(example)

        return invoke


# ExecuTorch's ScalarType codes (TensorInfo.dtype()) of the input types lutnas's files take.
_ET_DTYPES = {6: np.float32, 5: np.float16, 1: np.int8, 0: np.uint8, 3: np.int32, 4: np.int64}


class ExecutorchRunner(Runner):
    """A .pte through ExecuTorch's Python runtime (`executorch.runtime`, XNNPACK registered).

    Threads: XNNPACK runs on ExecuTorch's own thread pool, sized here before any file loads (its
    default is the number of cores). The runtime takes torch tensors, so torch is imported too."""

    def __init__(self, threads: int) -> None:
        from importlib import metadata

        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        portable_lib._unsafe_reset_threadpool(threads)
        self.torch, self.runtime = torch, Runtime.get()
        self.name, self.version = "executorch", metadata.version("executorch")

    def load(self, path: str, threads: int) -> Callable[[], Any]:
        from executorch.runtime import Verification

        method = self.runtime.load_program(path, verification=Verification.Minimal).load_method("forward")
        meta = method.metadata
        inputs = []
        for index in range(meta.num_inputs()):
            info = meta.input_tensor_meta(index)
            inputs.append(self.torch.from_numpy(_random(info.sizes(), _ET_DTYPES[int(info.dtype())])))
        return lambda: method.execute(inputs)


def make_runner(runtime: str, threads: int) -> Runner:
    if runtime == "tflite":
        return TfliteRunner()
    if runtime == "onnxruntime":
        return OnnxRunner()
    if runtime == "torch":
        return TorchRunner(threads)
    if runtime == "executorch":
        return ExecutorchRunner(threads)
    raise ValueError(f"unknown runtime {runtime!r}")


L2_FALLBACK_BYTES = 1 << 20  # when sysfs does not say (this host's per-core L2, lscpu/sysfs)
LLC_FALLBACK_BYTES = 32 << 20  # the same for the last level (this host's L3)
EVICT_L2_FACTOR = 4  # buffer = 4x L2: benchmarks/lut_gap.py's "l2flushed" (4 MiB here), well under L3
# buffer = 2x the last level: every line of a least-recently-used cache is replaced by the time the
# buffer has been read and written once (64 MiB here, 6.5 ms per pass, measured)
EVICT_LLC_FACTOR = 2


def _size_bytes(text: str) -> int:
    text = text.strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def cache_sizes(core: int = 0) -> dict[int, int]:
    """{cache level: bytes} of `core`'s data and unified caches from sysfs ({} when not there)."""
    sizes: dict[int, int] = {}
    for index in sorted(glob.glob(f"/sys/devices/system/cpu/cpu{core}/cache/index*")):
        try:
            with open(f"{index}/level") as level, open(f"{index}/size") as size, \
                    open(f"{index}/type") as kind:
                if kind.read().strip() == "Instruction":
                    continue
                sizes[int(level.read().strip())] = _size_bytes(size.read())
        except (OSError, ValueError):
            continue
    return sizes


def l2_bytes(core: int = 0) -> int:
    """Size of `core`'s level-2 cache in bytes from sysfs; L2_FALLBACK_BYTES when it is not there."""
    return cache_sizes(core).get(2, L2_FALLBACK_BYTES)


def llc_bytes(core: int = 0) -> int:
    """Size of `core`'s last-level cache in bytes from sysfs; LLC_FALLBACK_BYTES when it is not there."""
    sizes = cache_sizes(core)
    return sizes[max(sizes)] if sizes else LLC_FALLBACK_BYTES


def _evictor(size: int) -> Callable[[], None]:
    buffer = np.ones(max(size, 1 << 20) // 8)

    def evict() -> None:
        buffer.__iadd__(1.0)

    return evict


def l2_evictor(core: int = 0) -> Callable[[], None]:
    """A callable that reads and writes EVICT_L2_FACTOR x L2 bytes: afterwards the model's weights
    and activations are out of L2 (still in L3), as when a predecessor block ran before it."""
    return _evictor(EVICT_L2_FACTOR * l2_bytes(core))


def llc_evictor(core: int = 0) -> Callable[[], None]:
    """A callable that reads and writes EVICT_LLC_FACTOR x the last-level cache: afterwards nothing
    the model touched is in any cache, as for a block inside a model whose weights outgrow it."""
    return _evictor(EVICT_LLC_FACTOR * llc_bytes(core))


def eviction_bytes(cache: str, core: int = 0) -> tuple[int, int]:
    """(bytes rewritten before every invoke, bytes before every pace invoke) for a cache state
    (CACHE_STATES in base.py); ValueError for an unknown one. Only cold-llc evicts before the pace
    model: after a cold-l2 eviction the model's weights must still be in the last level, and a
    flush of it before the pace would take them out."""
    if cache == "warm":
        return 0, 0
    if cache == "cold-l2":
        return EVICT_L2_FACTOR * l2_bytes(core), 0
    if cache == "cold-llc":
        size = EVICT_LLC_FACTOR * llc_bytes(core)
        return size, size
    raise ValueError(f"unknown cache state {cache!r}")


def cache_hooks(cache: str, core: int = 0) -> tuple[Callable[[], None] | None, Callable[[], None] | None]:
    """(run before every invoke, run before every pace invoke) of `eviction_bytes`; one buffer
    when both evict the same amount."""
    before, before_pace = eviction_bytes(cache, core)
    evict = _evictor(before) if before else None
    if not before_pace:
        return evict, None
    return evict, evict if before_pace == before else _evictor(before_pace)


def measure(runner: Runner, path: str, threads: int, warmup: int, runs: int,
            op_profiling: bool, before: Callable[[], Any] | None = None,
            pace: Callable[[], Any] | None = None, pace_before: Callable[[], Any] | None = None,
            ) -> tuple[list[float], dict[str, float] | None, list[float]]:
    """`runs` timed invokes after `warmup` untimed ones -> (ms per run, per-operator ms or None,
    ms per run of `pace`). `before` runs untimed ahead of every warm-up and timed invoke (the
    cache eviction); `pace`, when given, is invoked and timed right after every invoke, so both
    see the same host state (PACING in base.py), after `pace_before` (untimed) when given."""
    invoke = runner.load(path, threads)
    for _ in range(warmup):
        if before is not None:
            before()
        invoke()
        if pace is not None:
            if pace_before is not None:
                pace_before()
            pace()
    samples: list[float] = []
    paced: list[float] = []
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()  # a collection inside a timed run would be charged to the block
    try:
        for _ in range(runs):
            if before is not None:
                before()
            start = clock()
            invoke()
            middle = clock()
            samples.append((middle - start) / 1e6)
            if pace is not None:
                if pace_before is not None:
                    pace_before()
                middle = clock()
                pace()
                paced.append((clock() - middle) / 1e6)
    finally:
        gc.enable()
    operators = runner.operator_ms(path, threads, runs) if op_profiling else None
    return samples, operators, paced


def paired_ratio(samples: list[float], paced: list[float]) -> float | None:
    """Median over runs of (this run's ms / the pace invoke's ms right after it): each run is set
    against the host state it saw. Against the ratio of the two medians it cut the median
    trial-to-trial CV of 60 `elasticvit` 128 px blocks (onnxruntime, 10 trials of 20 runs, two
    runs) from 7.4% and 6.5% to 6.2% and 5.7% cold-llc, from 4.9% and 5.3% to 4.3% and 4.2% warm
    (benchmarks/paced_estimator.py). None when the lists do not pair up or a pace invoke took no
    measurable time."""
    if not samples or len(samples) != len(paced) or min(paced) <= 0:
        return None
    return float(np.median(np.asarray(samples) / np.asarray(paced)))


def main() -> int:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    request = json.loads(sys.stdin.read())
    cores = request.get("cores")

    def emit(record: dict[str, Any]) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    try:
        if cores:
            os.sched_setaffinity(0, cores)  # before the runtime creates its thread pool
        runner = make_runner(request["runtime"], int(request["threads"]))
        cache = request.get("cache") or "warm"
        evict, pace_before = cache_hooks(cache, cores[0] if cores else 0)
        pace = runner.load(request["pace"], int(request["threads"])) if request.get("pace") else None
    except Exception as exc:
        emit({"fatal": f"{type(exc).__name__}: {exc}"})
        return 3
    for item in request["files"]:
        record: dict[str, Any] = {"key": item["key"], "temps_before": read_temps(),
                                  "freqs_before": read_freqs(cores), "timestamp": time.time()}
        try:
            samples, operators, paced = measure(runner, item["path"], int(request["threads"]),
                                                int(request["warmup"]), int(request["runs"]),
                                                bool(request.get("op_profiling")), evict, pace,
                                                pace_before)
            record.update(samples_ms=samples, operator_ms=operators, status="ok", cache=cache)
            if paced:
                record["pace_ms"] = float(np.median(paced))
                record["pace_ratio"] = paired_ratio(samples, paced)
        except Exception as exc:  # one bad file must not abort the batch
            record.update(samples_ms=[], operator_ms=None, status=f"error: {type(exc).__name__}: {exc}")
        record.update(runner_name=runner.name, runner_version=runner.version,
                      temps_after=read_temps(), freqs_after=read_freqs(cores), pid=os.getpid(),
                      affinity=sorted(os.sched_getaffinity(0)))
        emit(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
