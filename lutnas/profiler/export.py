"""Export blocks and subnets to micro-model files, once, into a content-addressed cache.

A model file depends only on its block key, its format and the versions of the tools that wrote it,
so the cache path is a hash of those: every device profiled from this machine reuses the same files,
and a new torch or litert-torch release builds new ones instead of silently reusing old ones.
A file is accepted only after its outputs were checked against PyTorch; the check's record (a JSON
sidecar, written last and atomically) is what marks the file as done, so an interrupted export
resumes cleanly and never leaves a half-written model that looks finished.
"""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import lutnas
from lutnas.device_agents.base import ModelFile
from lutnas.errors import BadInputError, ExportError
from lutnas.fileio import atomic_path
from lutnas.profiler import converter, export_executorch, export_speedups, quantize, stitch
from lutnas.space import BLOCKS_REVISION, BlockSpec, SearchSpace, SubnetConfig, subnet_key
from lutnas.supernet.blocks import build_block, example_input

FORMATS = {"tflite": ".tflite", "onnx": ".onnx", "torchscript": ".pt",
           "tflite-int8": ".tflite", "tflite-fp16": ".tflite",  # these two: profiler/quantize.py
           "pte": ".pte"}  # ExecuTorch (XNNPACK): profiler/export_executorch.py
RUNTIME_FORMATS = {"tflite": "tflite", "onnxruntime": "onnx", "torch": "torchscript", "executorch": "pte"}
# Whole static subnets in these formats are stitched from their blocks' files (stitch.py): fp32
# blocks have float ends that chain as they are; int8 ends each carry their own quantization.
STITCHED_FORMATS = ("tflite",)
STITCHED = "stitched"
# How a static subnet converted whole is made (the cache keeps it apart from files of older lutnas,
# whose repeated blocks had one weight tensor between them): see build_subnet.
DISTINCT = "distinct-weights"
# "convert" turns stitching off; an environment variable so the export workers see it too.
ASSEMBLY_ENV = "LUTNAS_SUBNET_ASSEMBLY"


def _stitching(fmt: str) -> bool:
    """Whether static subnets in `fmt` are stitched (BadInputError for an unknown setting)."""
    setting = os.environ.get(ASSEMBLY_ENV, "stitch").strip().lower() or "stitch"
    if setting not in ("stitch", "convert"):
        raise BadInputError(f"{ASSEMBLY_ENV}={setting!r} is not a subnet assembly; use stitch or convert")
    return setting == "stitch" and fmt in STITCHED_FORMATS
# Relative tolerance of the numerical check: fp32 conversions here agree to ~1e-6 of the output scale
# (toolchain.md: 3e-6); a wrong graph is off by the scale itself.
TOLERANCE = 1e-3


def default_cache_dir() -> Path:
    env = os.environ.get("LUTNAS_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lutnas" / "models"


def tool_versions() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    return {"lutnas": lutnas.__version__, "blocks": str(BLOCKS_REVISION), "torch": version("torch"),
            "litert-torch": version("litert-torch"), "onnx": version("onnx")}


@dataclass(frozen=True)
class ExportedModel:
    key: str
    format: str
    path: Path
    sha256: str
    max_abs_error: float
    input_shape: tuple[int, ...]

    def record(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = self.path.name
        data["input_shape"] = list(self.input_shape)
        return data


class ModelCache:
    """Files under `root/<format>/<hash>.<ext>` with a `<hash>.json` record of their check."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.versions = tool_versions()

    def path_for(self, key: str, fmt: str, assembly: str = "") -> Path:
        """`assembly` names how a whole model was made (STITCHED from block files, or DISTINCT:
        converted with each position's weights of its own): files made differently are
        different files."""
        if fmt not in FORMATS:
            raise BadInputError(f"unknown model format {fmt!r}; use one of {', '.join(FORMATS)}")
        identity = {"key": key, "format": fmt, "versions": self.versions} | _quantizer_of(fmt)
        if assembly:
            identity["assembly"] = assembly
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        return self.root / fmt / f"{digest}{FORMATS[fmt]}"

    def get(self, key: str, fmt: str, assembly: str = "") -> ExportedModel | None:
        path = self.path_for(key, fmt, assembly)
        record_path = path.with_suffix(".json")
        if not (path.is_file() and record_path.is_file()):
            return None
        try:
            record = json.loads(record_path.read_text())
            if record["key"] != key:
                return None
            return ExportedModel(key, fmt, path, record["sha256"], float(record["max_abs_error"]),
                                 tuple(record["input_shape"]))
        except (ValueError, KeyError):
            return None  # a damaged record: export again




def model_seed(key: str) -> int:
    return zlib.crc32(key.encode())


def _write_tflite(module: nn.Module, example: torch.Tensor, spatial: bool,
                  out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Convert with litert-torch; returns (the file's output, PyTorch's) on `example`, NHWC when
    `spatial`. One PyTorch forward: the channel-last wrapper only permutes, so the reference is the
    module's own output permuted (bit for bit what the wrapper returns)."""
    litert_torch = converter.litert_torch()

    with torch.no_grad():
        reference = module(example)
    if spatial:
        output_is_map = reference.dim() == 4
        wrapped = litert_torch.to_channel_last_io(
            module, args=[0], outputs=[0] if output_is_map else []
        )
        feed = example.permute(0, 2, 3, 1).contiguous()
        if output_is_map:
            reference = reference.permute(0, 2, 3, 1)
    else:
        wrapped, feed = module, example
    litert_torch.convert(wrapped.eval(), (feed,)).export(str(out))
    return _run_tflite(out, feed.numpy()), reference.numpy()


def _run_tflite(path: Path, feed: np.ndarray) -> np.ndarray:
    from lutnas.device_agents.runtimes import load_tflite_interpreter

    interpreter = load_tflite_interpreter(str(path), threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], feed)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _write_stitched(blocks: Sequence[Path], module: nn.Module, example: torch.Tensor,
                    out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Chain the block files (stitch.py) into `out`; (its output, PyTorch's) on `example`, NHWC."""
    data, _folded = stitch.stitch(blocks)
    out.write_bytes(data)
    with torch.no_grad():
        reference = module(example)
    if reference.dim() == 4:
        reference = reference.permute(0, 2, 3, 1)
    return _run_tflite(out, example.permute(0, 2, 3, 1).contiguous().numpy()), reference.numpy()


def _write_onnx(module: nn.Module, example: torch.Tensor, out: Path) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime

    # The legacy TorchScript exporter: 0.01-0.03 s a model against ~0.6 s for dynamo (toolchain.md),
    # and the same graph for these static blocks.
    torch.onnx.export(module, (example,), str(out), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])
    with torch.no_grad():
        reference = module(example).numpy()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    produced = session.run(None, {"input": example.numpy()})[0]
    return produced, reference


def _write_torchscript(module: nn.Module, example: torch.Tensor,
                       out: Path) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        traced = torch.jit.trace(module, (example,))
        reference = module(example).numpy()
    torch.jit.save(traced, str(out))
    loaded = torch.jit.load(str(out))
    with torch.no_grad():
        produced = loaded(example).numpy()
    return produced, reference


def _error(produced: np.ndarray, reference: np.ndarray) -> np.ndarray:
    if produced.shape != reference.shape:
        raise ExportError(f"output shape {produced.shape} differs from PyTorch's {reference.shape}")
    return np.abs(produced.astype(np.float64) - reference.astype(np.float64))


def _sped_up(fmt: str) -> bool:
    """Whether `fmt`'s conversion runs torch's decompositions, which export_speedups makes cheaper:
    .tflite of every precision and .pte (3.3 -> 2.2 s a block, 12 of 12 files identical)."""
    return fmt.startswith("tflite") or fmt == "pte"


def _write_checked(key: str, module: nn.Module, example: torch.Tensor, spatial: bool, fmt: str,
                   out: Path, blocks: Sequence[Path] = ()) -> tuple[float, float]:
    """Write `out` and run it on `example`: (max abs error against PyTorch, output scale).
    Quantized formats are checked by quantize's own criterion (scale 0: no tolerance applies here).
    `blocks`: the block files `out` is stitched from instead of converting `module`."""
    if not blocks and _sped_up(fmt):  # stitching converts nothing
        if fmt.startswith("tflite"):
            converter.litert_torch()  # before install(): its JAX memo needs the converter loaded
        export_speedups.install()
    if blocks:
        produced, reference = _write_stitched(blocks, module, example, out)
    elif fmt in quantize.FORMATS:
        check = quantize.convert(module, example, spatial, out, quantize.FORMATS[fmt], key=key)
        return float(check.max_abs_error), 0.0
    elif fmt == "tflite":
        produced, reference = _write_tflite(module, example, spatial, out)
    elif fmt == "onnx":
        produced, reference = _write_onnx(module, example, out)
    elif fmt == "pte":
        produced, reference = export_executorch.write_pte(module, example, out)
    else:
        produced, reference = _write_torchscript(module, example, out)
    errors = _error(produced, reference)
    scale = max(1.0, float(np.abs(reference).max())) if reference.size else 1.0
    return (float(errors.max()) if errors.size else 0.0), scale


def export_module(key: str, module: nn.Module, example: torch.Tensor, spatial: bool, fmt: str,
                  cache: ModelCache, blocks: Sequence[Path] = (), assembly: str = "") -> ExportedModel:
    """Write, check and record one model; returns the cached entry when already done. With
    `blocks` (.tflite files whose composition `module` is), the file is stitched from them.
    `assembly`: how a whole model is made (ModelCache.path_for); STITCHED when `blocks` are given.
    Raises ExportError naming `key` and the format when the converter fails or its file disagrees
    with PyTorch beyond TOLERANCE (quantize.QuantizationError for int8)."""
    assembly = STITCHED if blocks else assembly
    done = cache.get(key, fmt, assembly)
    if done is not None:
        return done
    path = cache.path_for(key, fmt, assembly)
    module = module.eval()
    with atomic_path(path) as tmp:
        native = converter.NativeOutput()
        try:
            with native:
                max_error, scale = _write_checked(key, module, example, spatial, fmt, tmp, blocks)
        except ExportError as exc:
            if isinstance(exc, quantize.QuantizationError):
                raise  # already names the block and the converter's reason
            raise ExportError(f"{key}: {fmt} export disagrees with PyTorch: {exc}") from None
        except Exception as exc:  # the converters raise anything; name the block that failed
            raise ExportError(
                f"{key}: {fmt} export failed: {type(exc).__name__}: {exc}{native.last_line()}"
            ) from None
        if max_error > TOLERANCE * scale and fmt not in quantize.FORMATS:
            raise ExportError(
                f"{key}: {fmt} file disagrees with PyTorch (max abs error {max_error:.3g} at output "
                f"scale {scale:.3g}); the converter mistranslated this block"
            )
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = ExportedModel(key, fmt, path, sha, max_error, tuple(example.shape))
    with atomic_path(path.with_suffix(".json")) as tmp_record:
        tmp_record.write_text(json.dumps(entry.record(), sort_keys=True))
    return entry


def export_spec(spec: BlockSpec, fmt: str, cache: ModelCache) -> ExportedModel:
    torch.manual_seed(model_seed(spec.key))
    module = build_block(spec)
    return export_module(spec.key, module, example_input(spec), spec.record.spatial_input, fmt, cache)


def build_subnet(space: SearchSpace, config: SubnetConfig, as_blocks: bool = False) -> nn.Module:
    """The static model of a subnet: the composition of its blocks' modules, seeded.

    A block whose key comes again later in the subnet (a stage repeating one block) gets weights
    of its own at every position (seeded by key and occurrence), as a trained subnet has. With one
    seed per key, the converters merge the equal weights into one tensor read by every repeat
    (litert-torch and torch.onnx's exporter both do): four 40-48-block `elasticvit` 128 px subnets
    came out 42-53 MB as .tflite against 63-89 MB with the weights apart, a model smaller than the
    one deployed. On this host's LiteRT (1 thread, 32 MiB LLC) the difference was within the
    timing's noise (merged x1.002-1.024 of apart, a copy of one file x1.010-1.035 of it:
    benchmarks/subnet_stitch.py), but a device short of memory bandwidth streams what the file
    holds.
    `as_blocks`: every block with its own block file's weights, seeded by its key alone: the model
    a file stitched from those files is (stitch.py keeps the repeats' weights apart)."""
    modules = []
    seen: dict[str, int] = {}
    for spec in space.blocks_of(config):
        repeat = seen.get(spec.key, 0)
        seen[spec.key] = repeat + 1
        suffix = "" if as_blocks or repeat == 0 else f"#{repeat}"
        torch.manual_seed(model_seed(spec.key + suffix))
        modules.append(build_block(spec))
    return nn.Sequential(*modules).eval()


def export_subnet(space: SearchSpace, config: SubnetConfig, fmt: str, cache: ModelCache,
                  module: nn.Module | None = None) -> ExportedModel:
    """Export a whole subnet: its static model, or `module` (e.g. with trained weights).

    A file of the static model already in the cache is reused, stitched or converted. Else, in a
    format of STITCHED_FORMATS and with every block's file in the cache (the blocks were profiled),
    unless LUTNAS_SUBNET_ASSEMBLY=convert, the file is stitched from those (stitch.py: ~2 s at 128
    px against 53-83 s converting); otherwise it is converted whole (exporting 20-50 missing blocks
    would cost more than one conversion). Either way it is checked against PyTorch. ExportError
    names what failed."""
    example = torch.randn(1, 3, config.resolution, config.resolution,
                          generator=torch.Generator().manual_seed(0))
    key = subnet_key(space, config)
    if module is not None:  # its own weights: cached under their digest, never the static file
        return export_module(key, module.eval(), example, True, fmt, cache,
                             assembly=trained_assembly(module))
    done = cached_subnet(space, config, fmt, cache)
    if done is not None:  # before building 10-50 modules only to find the file made
        return done
    blocks = [cache.get(s.key, fmt) for s in space.blocks_of(config)] if _stitching(fmt) else []
    if blocks and all(blocks):
        return export_module(key, build_subnet(space, config, as_blocks=True), example, True, fmt,
                             cache, blocks=[b.path for b in blocks if b is not None])
    return export_module(key, build_subnet(space, config), example, True, fmt, cache,
                         assembly=DISTINCT)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 (hex, first 16 digits) of `module`'s state dict: names, dtypes, shapes and bytes.

    Tells two trainings of the same subnet apart (same key, other weights), so a rerun after
    retraining neither reuses the old export nor the old measurement of it."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def trained_assembly(module: nn.Module) -> str:
    """The cache assembly (ModelCache.path_for) of a subnet with `module`'s own weights."""
    return f"trained-{weights_digest(module)}"


def cached_subnet(space: SearchSpace, config: SubnetConfig, fmt: str,
                  cache: ModelCache) -> ExportedModel | None:
    """The static subnet's file when the cache has one, stitched (preferred, unless stitching is
    off) or converted."""
    key = subnet_key(space, config)
    stitched = cache.get(key, fmt, STITCHED) if _stitching(fmt) else None
    return stitched or cache.get(key, fmt, DISTINCT)


class _Empty(nn.Module):
    """One elementwise op: the least a runtime can run, so its latency is the per-invoke cost."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def export_empty(resolution: int, fmt: str, cache: ModelCache) -> ExportedModel:
    """An (almost) empty model on a 1x3xRxR input: measured like the blocks, its latency is the
    per-invoke overhead (interpreter call, input copy) every isolated block's figure includes."""
    example = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    return export_module(f"empty:r={resolution}", _Empty(), example, True, fmt, cache)


# The pace model of paced timing (RunSettings.pace; PACING in device_agents/base.py): one fixed
# block of ElasticViT's commonest kind, independent of any space, so every store and space on a
# device paces with the same file. Its size: ~0.1 ms on this host's LiteRT (1 thread), well above
# timer and per-invoke noise, and a small share of the time of the blocks it paces.
PACE_SPEC = "mbconv:hw=16,cin=32,cout=32,k=3,s=1,e=4,se=0,act=hswish"
PACE_KEY = "pace"


def pace_file(settings_runtime: str, precision: str, cache: ModelCache) -> ModelFile:
    """The pace model for a runtime and precision, exported once into `cache` (ExportError as any
    export)."""
    entry = export_spec(BlockSpec.parse(PACE_SPEC), format_for(settings_runtime, precision), cache)
    return ModelFile(entry.path, PACE_KEY, entry.sha256)


# ------------------------------------------------------------------------------------------------
# Parallel export of many blocks.

def import_plugins() -> list[str]:
    """Import the modules named in LUTNAS_PLUGINS (comma-separated): user code that registers
    block kinds must run in every process that builds blocks, export workers included.
    BadInputError names a module that cannot be imported."""
    import importlib

    names = [n.strip() for n in os.environ.get("LUTNAS_PLUGINS", "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise BadInputError(f"LUTNAS_PLUGINS names {name!r}, which cannot be imported ({exc}); "
                                f"fix the name or PYTHONPATH") from None
    return names


def _worker_init(preload: tuple[str, ...]) -> None:
    """Once per export worker: one thread, the user's plugins, the converters of `preload` imported
    before the first job, then `gc.freeze()`. The ~400k objects torch, JAX and litert-torch create at
    import never become garbage, yet every full collection walked them: GC took 0.8 s of a block's
    conversion unfrozen and 0.2 s frozen (measured on `elasticvit` blocks)."""
    torch.set_num_threads(1)
    import_plugins()
    if any(fmt.startswith("tflite") for fmt in preload):
        converter.litert_torch()  # import and JAX start-up: seconds, paid at pool start
    if any(_sped_up(fmt) for fmt in preload):
        export_speedups.install()
    if "onnx" in preload:
        import onnxruntime  # noqa: F401
    gc.collect()
    gc.freeze()


_POOL_LOCK = threading.Lock()
_POOL: dict[str, Any] = {}


def export_pool(workers: int, preload: Sequence[str] = ()) -> ProcessPoolExecutor:
    """The process pool exports run in: started once, then reused by every later call with the same
    `workers` and LUTNAS_* environment, so process start and imports (5-10 s a worker here) are paid
    once per session, not per call. A broken pool (a worker killed) is replaced on the next call."""
    # Spawned workers keep the environment they started with, and they read LUTNAS_PLUGINS,
    # LUTNAS_SUBNET_ASSEMBLY, the calibration data and the speed-up switch from it: any change to
    # one of those must start fresh workers, or exports would follow the old settings.
    key = (workers, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("LUTNAS_"))))
    with _POOL_LOCK:
        pool = _POOL.get("executor")
        if pool is not None and (_POOL["key"] != key or getattr(pool, "_broken", False)):
            pool.shutdown(wait=False, cancel_futures=True)
            pool = None
        if pool is None:
            context = multiprocessing.get_context("spawn")  # fork after torch's thread pools can deadlock
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                       initializer=_worker_init, initargs=(tuple(preload),))
            _POOL.update(key=key, executor=pool)
        return pool


def _pool_running() -> bool:
    """Whether warm workers exist: then even one export goes to them (GC frozen, converter imported)
    instead of importing the converter into this process."""
    return "executor" in _POOL


def shutdown_export_pool() -> None:
    """Stop the export workers (they hold ~1 GB each); the next export starts new ones."""
    with _POOL_LOCK:
        pool = _POOL.pop("executor", None)
        _POOL.clear()
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_pid(pause_s: float) -> int:
    time.sleep(pause_s)
    return os.getpid()


def warm_export_pool(workers: int, fmt: str) -> float:
    """Start `workers` export processes for `fmt` and wait until each has run its start-up;
    returns the seconds it took (the cold start an export pays once)."""
    start = time.perf_counter()
    pool = export_pool(workers, (fmt,))
    seen: set[int] = set()
    for _ in range(50):  # a worker still importing takes no job: ask until every one has answered
        seen |= {f.result() for f in [pool.submit(_worker_pid, 0.2) for _ in range(workers)]}
        if len(seen) >= workers:
            break
    return time.perf_counter() - start


def _export_job(spec_key: str, fmt: str, cache_root: str) -> ExportedModel:
    return export_spec(BlockSpec.parse(spec_key), fmt, ModelCache(Path(cache_root)))


def _collect(futures: set[Future[Any]], done: Callable[[Any], None]) -> None:
    """Hand each result to `done` as it finishes; the first failure cancels the rest and raises."""
    pending = set(futures)
    while pending:
        finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
        for future in finished:
            error = future.exception()
            if error is not None:
                for other in pending:
                    other.cancel()
                raise error if isinstance(error, ExportError) else ExportError(
                    f"an export worker failed: {type(error).__name__}: {error}")
            done(future.result())


def export_many(specs: Sequence[BlockSpec], fmt: str, cache: ModelCache, workers: int = 2,
                on_done: Callable[[ExportedModel], None] | None = None) -> dict[str, ExportedModel]:
    """Export every spec not yet cached, in the shared process pool; returns key -> entry for all.

    The first failure stops the pool and raises ExportError naming the block; what was exported
    before it stays in the cache, so a rerun continues from there.
    """
    results: dict[str, ExportedModel] = {}

    def done(entry: ExportedModel) -> None:
        results[entry.key] = entry
        if on_done:
            on_done(entry)

    todo: list[BlockSpec] = []
    for spec in specs:
        entry = cache.get(spec.key, fmt)
        if entry is None:
            todo.append(spec)
        else:
            done(entry)
    if workers <= 1 or (len(todo) <= 1 and not _pool_running()):
        for spec in todo:
            done(export_spec(spec, fmt, cache))
    else:
        pool = export_pool(workers, (fmt,))
        _collect({pool.submit(_export_job, s.key, fmt, str(cache.root)) for s in todo}, done)
    return results


def _export_subnet_job(space: SearchSpace, config_json: str, fmt: str, cache_root: str) -> ExportedModel:
    return export_subnet(space, SubnetConfig.from_json(config_json), fmt, ModelCache(Path(cache_root)))


def export_subnets(space: SearchSpace, configs: Sequence[SubnetConfig], fmt: str, cache: ModelCache,
                   workers: int = 2) -> list[ExportedModel]:
    """Whole static subnets (export_subnet: stitched when their blocks are cached) exported in
    parallel in the shared pool, one subnet a worker; entries in the order of `configs`.
    ExportError names the first subnet that failed."""
    todo = [c for c in configs if cached_subnet(space, c, fmt, cache) is None]
    if workers > 1 and (len(todo) > 1 or (todo and _pool_running())):
        pool = export_pool(workers, (fmt,))
        _collect({pool.submit(_export_subnet_job, space, c.to_json(), fmt, str(cache.root))
                  for c in todo}, lambda _entry: None)
    return [export_subnet(space, c, fmt, cache) for c in configs]  # cached: a lookup each


def _quantizer_of(fmt: str) -> dict[str, str]:
    """A quantized file also depends on the quantizer's version and calibration set (cache key)."""
    if fmt == "pte":
        return export_executorch.cache_identity()
    return quantize.cache_identity() if fmt in quantize.FORMATS else {}


def format_for(runtime: str, precision: str = "fp32") -> str:
    """The model format `runtime` runs at `precision` (int8 and fp16 only as TFLite)."""
    if precision == "fp32":
        return RUNTIME_FORMATS[runtime]
    if runtime != "tflite":
        raise BadInputError(f"--precision {precision} is exported for --runtime tflite only, "
                            f"not {runtime}; use --precision fp32 or --runtime tflite")
    return quantize.format_of(precision)


def formats_for(runtimes: Iterable[str]) -> list[str]:
    try:
        return sorted({RUNTIME_FORMATS[r] for r in runtimes})
    except KeyError as exc:
        raise BadInputError(f"unknown runtime {exc}; use one of {', '.join(RUNTIME_FORMATS)}") from None
