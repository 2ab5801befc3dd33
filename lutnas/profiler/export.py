"""Export blocks and subnets to micro-model files, once, into a content-addressed cache.

A model file depends only on its block key, its format and the versions of the tools that wrote it,
so the cache path is a hash of those: every device profiled from this machine reuses the same files,
and a new torch or litert-torch release builds new ones instead of silently reusing old ones.
A file is accepted only after its outputs were checked against PyTorch; the check's record (a JSON
sidecar, written last and atomically) is what marks the file as done, so an interrupted export
resumes cleanly and never leaves a half-written model that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lutnas
from lutnas.errors import BadInputError, ExportError
from lutnas.fileio import atomic_path
from lutnas.profiler import export_executorch, quantize
from lutnas.space import BLOCKS_REVISION, BlockSpec, SearchSpace, SubnetConfig, subnet_key
from lutnas.supernet.blocks import build_block, example_input

FORMATS = {"tflite": ".tflite", "onnx": ".onnx", "torchscript": ".pt",
           "tflite-int8": ".tflite", "tflite-fp16": ".tflite",  # these two: profiler/quantize.py
           "pte": ".pte"}  # ExecuTorch (XNNPACK): profiler/export_executorch.py
RUNTIME_FORMATS = {"tflite": "tflite", "onnxruntime": "onnx", "torch": "torchscript", "executorch": "pte"}
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

    def path_for(self, key: str, fmt: str) -> Path:
        if fmt not in FORMATS:
            raise BadInputError(f"unknown model format {fmt!r}; use one of {', '.join(FORMATS)}")
        digest = hashlib.sha256(
            json.dumps({"key": key, "format": fmt, "versions": self.versions} | _quantizer_of(fmt),
                       sort_keys=True).encode()
        ).hexdigest()[:24]
        return self.root / fmt / f"{digest}{FORMATS[fmt]}"

    def get(self, key: str, fmt: str) -> ExportedModel | None:
        path = self.path_for(key, fmt)
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




class _NativeOutput:
    """Silence the converter's C++ logging (it writes to fds 1/2), keeping it for error messages."""

    def __init__(self) -> None:
        self.text = ""

    def __enter__(self) -> "_NativeOutput":
        self._sink = tempfile.TemporaryFile(mode="w+b")
        self._saved = os.dup(1), os.dup(2)
        os.dup2(self._sink.fileno(), 1)
        os.dup2(self._sink.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        os.close(self._saved[0])
        os.close(self._saved[1])
        self._sink.seek(0)
        self.text = self._sink.read().decode(errors="replace")
        self._sink.close()

    def last_line(self) -> str:
        lines = [ln for ln in self.text.splitlines() if ln.strip()]
        return f" (converter said: {lines[-1][:200]})" if lines else ""


def model_seed(key: str) -> int:
    return zlib.crc32(key.encode())


def _write_tflite(module: nn.Module, example: torch.Tensor, spatial: bool, out: Path) -> np.ndarray:
    import litert_torch

    if spatial:
        output_is_map = module(example).dim() == 4
        wrapped = litert_torch.to_channel_last_io(
            module, args=[0], outputs=[0] if output_is_map else []
        )
        feed = example.permute(0, 2, 3, 1).contiguous()
    else:
        wrapped, feed = module, example
    litert_torch.convert(wrapped.eval(), (feed,)).export(str(out))
    with torch.no_grad():
        reference = wrapped(feed).numpy()
    from lutnas.device_agents.runtimes import load_tflite_interpreter

    interpreter = load_tflite_interpreter(str(out), threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], feed.numpy())
    interpreter.invoke()
    produced = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return _error(produced, reference)


def _write_onnx(module: nn.Module, example: torch.Tensor, out: Path) -> np.ndarray:
    import onnxruntime

    # The legacy TorchScript exporter: 0.01-0.03 s a model against ~0.6 s for dynamo (toolchain.md),
    # and the same graph for these static blocks.
    torch.onnx.export(module, (example,), str(out), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])
    with torch.no_grad():
        reference = module(example).numpy()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    produced = session.run(None, {"input": example.numpy()})[0]
    return _error(produced, reference)


def _write_torchscript(module: nn.Module, example: torch.Tensor, out: Path) -> np.ndarray:
    with torch.no_grad():
        traced = torch.jit.trace(module, (example,))
        reference = module(example).numpy()
    torch.jit.save(traced, str(out))
    loaded = torch.jit.load(str(out))
    with torch.no_grad():
        produced = loaded(example).numpy()
    return _error(produced, reference)


def _error(produced: np.ndarray, reference: np.ndarray) -> np.ndarray:
    if produced.shape != reference.shape:
        raise ExportError(f"output shape {produced.shape} differs from PyTorch's {reference.shape}")
    return np.abs(produced.astype(np.float64) - reference.astype(np.float64))


def export_module(key: str, module: nn.Module, example: torch.Tensor, spatial: bool, fmt: str,
                  cache: ModelCache) -> ExportedModel:
    """Write, check and record one model; returns the cached entry when already done."""
    done = cache.get(key, fmt)
    if done is not None:
        return done
    path = cache.path_for(key, fmt)
    module = module.eval()
    with atomic_path(path) as tmp:
        native = _NativeOutput()
        try:
            with native:
                if fmt in quantize.FORMATS:  # int8 / fp16: checked by quantize's own criterion
                    check = quantize.convert(module, example, spatial, tmp, quantize.FORMATS[fmt], key=key)
                    errors = np.array([check.max_abs_error])
                elif fmt == "tflite":
                    errors = _write_tflite(module, example, spatial, tmp)
                elif fmt == "onnx":
                    errors = _write_onnx(module, example, tmp)
                elif fmt == "pte":
                    errors = _error(*export_executorch.write_pte(module, example, tmp))
                else:
                    errors = _write_torchscript(module, example, tmp)
        except ExportError as exc:
            if isinstance(exc, quantize.QuantizationError):
                raise  # already names the block and the converter's reason
            raise ExportError(f"{key}: {fmt} export disagrees with PyTorch: {exc}") from None
        except Exception as exc:  # the converters raise anything; name the block that failed
            raise ExportError(
                f"{key}: {fmt} export failed: {type(exc).__name__}: {exc}{native.last_line()}"
            ) from None
        with torch.no_grad():
            scale = max(1.0, float(module(example).abs().max()))
        max_error = float(errors.max()) if errors.size else 0.0
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


def build_subnet(space: SearchSpace, config: SubnetConfig) -> nn.Module:
    """The static model of a subnet: exactly the composition of its blocks' modules."""
    torch.manual_seed(model_seed(config.to_json()))
    return nn.Sequential(*[build_block(spec) for spec in space.blocks_of(config)]).eval()


def export_subnet(space: SearchSpace, config: SubnetConfig, fmt: str, cache: ModelCache,
                  module: nn.Module | None = None) -> ExportedModel:
    """Export a whole subnet (its static model, or `module` such as one with trained weights)."""
    module = module if module is not None else build_subnet(space, config)
    example = torch.randn(1, 3, config.resolution, config.resolution,
                          generator=torch.Generator().manual_seed(0))
    return export_module(subnet_key(space, config), module.eval(), example, True, fmt, cache)


class _Empty(nn.Module):
    """One elementwise op: the least a runtime can run, so its latency is the per-invoke cost."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def export_empty(resolution: int, fmt: str, cache: ModelCache) -> ExportedModel:
    """An (almost) empty model on a 1x3xRxR input: measured like the blocks, its latency is the
    per-invoke overhead (interpreter call, input copy) every isolated block's figure includes."""
    example = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    return export_module(f"empty:r={resolution}", _Empty(), example, True, fmt, cache)


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


def _worker_init() -> None:
    torch.set_num_threads(1)
    import_plugins()


def _export_job(spec_key: str, fmt: str, cache_root: str) -> ExportedModel:
    return export_spec(BlockSpec.parse(spec_key), fmt, ModelCache(Path(cache_root)))


def _export_in_pool(todo: Sequence[BlockSpec], fmt: str, cache: ModelCache, workers: int,
                    done: Callable[[ExportedModel], None]) -> None:
    context = multiprocessing.get_context("spawn")  # fork after torch's thread pools can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
        pending = {pool.submit(_export_job, s.key, fmt, str(cache.root)) for s in todo}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise error if isinstance(error, ExportError) else ExportError(str(error))
                done(future.result())


def export_many(specs: Sequence[BlockSpec], fmt: str, cache: ModelCache, workers: int = 2,
                on_done: Callable[[ExportedModel], None] | None = None) -> dict[str, ExportedModel]:
    """Export every spec not yet cached, in a process pool; returns key -> entry for all of them.

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
    if workers <= 1 or len(todo) <= 1:
        for spec in todo:
            done(export_spec(spec, fmt, cache))
    elif todo:
        _export_in_pool(todo, fmt, cache, workers, done)
    return results


def _export_subnet_job(space: SearchSpace, config_json: str, fmt: str, cache_root: str) -> ExportedModel:
    return export_subnet(space, SubnetConfig.from_json(config_json), fmt, ModelCache(Path(cache_root)))


def export_subnets(space: SearchSpace, configs: Sequence[SubnetConfig], fmt: str, cache: ModelCache,
                   workers: int = 2) -> list[ExportedModel]:
    """Whole subnets exported in parallel (a 128 px `elasticvit` subnet takes ~50 s on one core);
    entries in the order of `configs`. ExportError names the first subnet that failed."""
    todo = [c for c in configs if cache.get(subnet_key(space, c), fmt) is None]
    if workers > 1 and len(todo) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context,
                                 initializer=_worker_init) as pool:
            list(pool.map(_export_subnet_job, [space] * len(todo), [c.to_json() for c in todo],
                          [fmt] * len(todo), [str(cache.root)] * len(todo)))
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
