"""Quantized TFLite models of blocks and subnets: full-integer int8, and fp16 weights.

Route, measured on one block of each `elasticvit` kind (conv stem, MBConv, attention, FFN, head):
litert-torch converts the block to fp32 TFLite and ai-edge-quantizer (AEQ) rewrites that file with
its `static_wi8_ai8` recipe, calibrated on a few inputs. All five kinds convert, attention included,
to files without a single float tensor (int8 I/O) and within cosine 0.998-0.9999 of PyTorch.
litert-torch's PT2E route (torchao `prepare_pt2e` / `convert_pt2e`, then `litert_torch.convert` with
a `QuantConfig`) failed on four of the five: "Expected get_attr node, got call_function" (conv,
MBConv, head), "histogram_cpu not implemented for 'Long'" (attention's index tensor); only the FFN
converted, so AEQ is the one route here.

int8 I/O is the default: between two blocks of a deployed full-integer model there is no
quantize / dequantize, so a block measured with int8 I/O is what the whole model spends on it; float
I/O (`io="float"`) adds a QUANTIZE and a DEQUANTIZE at the ends, as a model fed float images has.

A file is accepted by a quantization-aware check: int8 output cannot match fp32 to 1e-3 as the fp32
export does, so the check asks for the same direction (cosine similarity) and a bounded relative
error (||q - f|| / ||f||), both against the fp32 PyTorch output on the block's example input.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lutnas.errors import BadInputError, ExportError
from lutnas.profiler import converter

# Model format (the export cache's name for it) -> precision. fp32 TFLite is export.py's "tflite".
FORMATS = {"tflite-int8": "int8", "tflite-fp16": "fp16"}
IO_TYPES = ("int8", "float")
CALIBRATION_SAMPLES = 8
CALIBRATION_SEED = 0
# `--calibration-data DIR` travels as this variable, so the export worker processes see it too.
CALIBRATION_ENV = "LUTNAS_CALIBRATION_DATA"


class QuantizationError(ExportError):
    """A block or subnet that cannot be quantized, or whose quantized file fails the check."""


@dataclass(frozen=True)
class Criterion:
    """Bounds a quantized output must meet against the fp32 PyTorch output."""

    min_cosine: float
    max_relative_error: float


# int8: the five elasticvit kinds measure cosine >= 0.998 and relative error <= 0.07 on one block;
# 0.99 / 0.15 leaves room for deeper stacks while a wrong graph (cosine ~0) still fails.
# fp16 weights lose ~1e-3 of relative precision.
CRITERIA = {"int8": Criterion(0.99, 0.15), "fp16": Criterion(0.9999, 0.01)}


@dataclass(frozen=True)
class QuantizationCheck:
    """How a quantized file's output compares with PyTorch's fp32 output on the example input."""

    precision: str
    cosine: float
    relative_error: float
    max_abs_error: float
    input_dtype: str

    def passes(self) -> bool:
        bound = CRITERIA[self.precision]
        return self.cosine >= bound.min_cosine and self.relative_error <= bound.max_relative_error


def format_of(precision: str) -> str:
    """The model format of a quantized precision ("int8" -> "tflite-int8"); BadInputError otherwise."""
    for fmt, value in FORMATS.items():
        if value == precision:
            return fmt
    raise BadInputError(f"precision {precision!r} has no quantized TFLite format; use "
                        f"{' or '.join(FORMATS.values())}")


def quantizer_version() -> str:
    """ai-edge-quantizer's version (part of the export cache key of quantized files)."""
    try:
        return metadata.version("ai-edge-quantizer")
    except metadata.PackageNotFoundError:
        return "absent"


def use_calibration_data(data: Path) -> None:
    """Calibrate int8 files of 3-channel inputs on the images of ImageFolder `data` from now on
    (this process and the export workers it starts). BadInputError when `data` is no directory."""
    if not Path(data).is_dir():
        raise BadInputError(f"--calibration-data {data}: no such directory; give an ImageFolder "
                            f"(<dir>/<class>/<image>.jpg)")
    os.environ[CALIBRATION_ENV] = str(Path(data).resolve())


def calibration_data_from_env() -> Path | None:
    """The ImageFolder `--calibration-data` named (via CALIBRATION_ENV), or None for random inputs."""
    value = os.environ.get(CALIBRATION_ENV, "").strip()
    return Path(value) if value else None


def cache_identity() -> dict[str, str]:
    """What besides block and format a quantized file depends on: the quantizer's version and the
    calibration set (seeded random, or a digest of the image files' names and sizes)."""
    data = calibration_data_from_env()
    calibration = f"random:{CALIBRATION_SAMPLES}:{CALIBRATION_SEED}"
    if data is not None and data.is_dir():
        digest = hashlib.sha256()
        for path in sorted(p for p in data.rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(data)}:{path.stat().st_size}\n".encode())
        calibration = f"images:{digest.hexdigest()[:16]}"
    return {"quantizer": quantizer_version(), "calibration": calibration}


def calibration_inputs(example: torch.Tensor, count: int = CALIBRATION_SAMPLES,
                       seed: int = CALIBRATION_SEED, data: Path | None = None) -> list[torch.Tensor]:
    """`count` inputs shaped like `example` (N, C, H, W or N, T, C) to calibrate activation ranges.

    Seeded standard-normal inputs by default (the blocks' example inputs are standard normal too).
    With `data`, an ImageFolder (`data/<class>/<image>`, or its `train/` split), images resized to
    H x W: only for inputs of 3 channels (a subnet, or its stem), since a later block's input is a
    feature map no image stands for. Raises BadInputError for images given to such a block.
    """
    if data is None:
        generator = torch.Generator().manual_seed(seed)
        return [torch.randn(example.shape, generator=generator) for _ in range(count)]
    if example.dim() != 4 or example.shape[1] != 3:
        raise BadInputError(f"--calibration-data images fit only 3-channel image inputs, not "
                            f"{tuple(example.shape)}; leave it out to calibrate on random inputs")
    from lutnas.supernet.data import ImageFolderDataset

    root = Path(data) / "train" if (Path(data) / "train").is_dir() else Path(data)
    if not root.is_dir():
        raise BadInputError(f"--calibration-data {data}: no such directory; give an ImageFolder "
                            f"(<dir>/<class>/<image>.jpg)")
    dataset = ImageFolderDataset(root, int(example.shape[-1]))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return [dataset[int(i)][0].unsqueeze(0).expand(example.shape[0], -1, -1, -1).contiguous()
            for i in order[:count]]


def _recipe(precision: str, io: str) -> list[dict[str, Any]]:
    if precision == "fp16":
        return [{"regex": ".*", "operation": "*", "algorithm_key": "float_casting",
                 "op_config": {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT",
                                                        "granularity": "TENSORWISE", "symmetric": True},
                               "compute_precision": "FLOAT", "explicit_dequantize": True}}]
    from ai_edge_quantizer import recipe

    rules: list[dict[str, Any]] = list(recipe.static_wi8_ai8())
    if io == "float":  # keep the graph's inputs and outputs float: QUANTIZE / DEQUANTIZE at the ends
        rules += [{"regex": ".*", "operation": op, "algorithm_key": "no_quantize"}
                  for op in ("INPUT", "OUTPUT")]
    return rules


def _channel_last(module: nn.Module, example: torch.Tensor, spatial: bool) -> tuple[nn.Module, bool]:
    """The module with NHWC I/O (as export.py's fp32 files) and whether inputs must be permuted."""
    if not spatial:
        return module, False
    litert_torch = converter.litert_torch()

    output_is_map = module(example).dim() == 4
    return litert_torch.to_channel_last_io(module, args=[0], outputs=[0] if output_is_map else []), True


def _quantize_file(float_path: Path, out: Path, precision: str, io: str,
                   calibration: list[np.ndarray]) -> None:
    from ai_edge_quantizer import quantizer

    from lutnas.device_agents.runtimes import load_tflite_interpreter

    engine = quantizer.Quantizer(str(float_path))
    engine.load_quantization_recipe(_recipe(precision, io))
    result = {}
    if engine.need_calibration:
        signatures = load_tflite_interpreter(str(float_path)).get_signature_list()
        signature, spec = next(iter(signatures.items()))
        name = spec["inputs"][0]
        result = engine.calibrate({signature: [{name: x} for x in calibration]}, num_threads=1)
    engine.quantize(result).export_model(str(out), overwrite=True)


def run_tflite(path: Path, feed: np.ndarray) -> tuple[np.ndarray, str]:
    """Output (dequantized to float) of a TFLite file on one float input, and the input's dtype.

    An int8 input is quantized with the file's own scale and zero point, as a caller would.
    """
    from lutnas.device_agents.runtimes import load_tflite_interpreter

    interpreter = load_tflite_interpreter(str(path), threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    value = feed
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        value = np.clip(np.round(feed / scale + zero), info.min, info.max).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    output = interpreter.get_output_details()[0]
    produced = interpreter.get_tensor(output["index"])
    if np.issubdtype(output["dtype"], np.integer):
        scale, zero = output["quantization"]
        produced = (produced.astype(np.float32) - zero) * scale
    return produced, np.dtype(detail["dtype"]).name


def compare(produced: np.ndarray, reference: np.ndarray, precision: str,
            input_dtype: str = "float32") -> QuantizationCheck:
    """Cosine similarity, relative L2 error and max abs error of `produced` against `reference`."""
    if produced.shape != reference.shape:
        raise QuantizationError(f"output shape {produced.shape} differs from PyTorch's {reference.shape}")
    q = produced.astype(np.float64).ravel()
    f = reference.astype(np.float64).ravel()
    norm_q, norm_f = float(np.linalg.norm(q)), float(np.linalg.norm(f))
    cosine = float(q @ f / (norm_q * norm_f)) if norm_q > 0 and norm_f > 0 else float(norm_q == norm_f)
    relative = float(np.linalg.norm(q - f) / norm_f) if norm_f > 0 else float(norm_q)
    return QuantizationCheck(precision, cosine, relative, float(np.abs(q - f).max(initial=0.0)),
                             input_dtype)


def convert(module: nn.Module, example: torch.Tensor, spatial: bool, out: Path, precision: str, *,
            io: str = "int8", calibration_data: Path | None = None, key: str = "") -> QuantizationCheck:
    """Write `module` as a quantized TFLite file at `out` and check it against PyTorch in fp32.

    `example`: the module's NCHW (spatial) or token input; the file takes NHWC when `spatial`.
    `precision`: "int8" (weights and activations, calibrated on `calibration_inputs`: images of
    `calibration_data` or CALIBRATION_ENV for 3-channel inputs, else seeded random) or "fp16"
    (weights; compute stays float, so `io` does not apply). Raises QuantizationError naming `key`
    and the converter's reason when it cannot quantize, or the check's figures when it fails.
    """
    if precision not in CRITERIA:
        raise BadInputError(f"cannot quantize to {precision!r}; use {' or '.join(CRITERIA)}")
    if io not in IO_TYPES:
        raise BadInputError(f"quantized I/O {io!r} is not one of {', '.join(IO_TYPES)}")
    litert_torch = converter.litert_torch()

    module = module.eval()
    label = key or type(module).__name__
    if calibration_data is None and example.dim() == 4 and example.shape[1] == 3:
        calibration_data = calibration_data_from_env()  # images only fit 3-channel inputs
    with torch.no_grad():
        wrapped, permute = _channel_last(module, example, spatial)
        nhwc = (lambda x: x.permute(0, 2, 3, 1).contiguous()) if permute else (lambda x: x)
        inputs = calibration_inputs(example, data=calibration_data)
        # checked on an input of the distribution calibrated for: an image when calibrated on images
        # (random inputs fall outside their ranges), else the example (not among the seeded draws)
        feed = nhwc(inputs[0] if calibration_data is not None else example)
        reference = wrapped(feed).numpy()
        calibration = [nhwc(x).numpy() for x in inputs]
    with tempfile.TemporaryDirectory(prefix="lutnas-quantize-") as scratch:
        float_path = Path(scratch) / "fp32.tflite"
        try:
            litert_torch.convert(wrapped, (feed,)).export(str(float_path))
            _quantize_file(float_path, Path(out), precision, io, calibration)
            produced, input_dtype = run_tflite(Path(out), feed.numpy())
        except QuantizationError:
            raise
        except Exception as exc:  # the converter and quantizer raise anything: name the block
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise QuantizationError(f"{label}: cannot quantize to {precision}: "
                                    f"{type(exc).__name__}: {reason}") from None
    check = compare(produced, reference, precision, input_dtype)
    if not check.passes():
        bound = CRITERIA[precision]
        raise QuantizationError(
            f"{label}: {precision} file strays from PyTorch fp32 (cosine {check.cosine:.4f}, relative "
            f"error {check.relative_error:.3f}; needs >= {bound.min_cosine} and "
            f"<= {bound.max_relative_error}); this block does not quantize well")
    return check
