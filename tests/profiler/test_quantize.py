# ruff: noqa: F811 - pytest fixtures imported from tests.adbd.fixtures are redefined as arguments
"""int8 / fp16 TFLite export (ai-edge-quantizer): blocks incl. attention, a whole subnet, the
quantization-aware check, the converter's reason for a block it cannot quantize, the cache key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lutnas.device_agents.base import ModelFile, RunSettings
from lutnas.device_agents.local import LocalAgent
from lutnas.device_agents.runtimes import load_tflite_interpreter
from lutnas.errors import BadInputError
from lutnas.profiler import quantize
from lutnas.profiler.export import ModelCache, export_spec, export_subnet, format_for
from lutnas.space import BlockSpec, SearchSpace
from tests.adbd import SimulatedAdbd
from tests.adbd.fixtures import _session_adb_key, adb_key, phone  # noqa: F401

ATTN = "attn:hw=8,c=48,hd=16,vs=2,act=hswish"
MBCONV = "mbconv:hw=16,cin=16,cout=24,k=3,s=2,e=4,se=1,act=hswish"


def _tensor_types(path) -> set[str]:
    interpreter = load_tflite_interpreter(str(path))
    return {np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}


@pytest.mark.parametrize("key", [ATTN, MBCONV])
def test_int8_blocks_are_full_integer_and_close_to_fp32(tmp_path, key: str) -> None:
    cache = ModelCache(tmp_path)
    entry = export_spec(BlockSpec.parse(key), "tflite-int8", cache)
    assert entry.path.suffix == ".tflite" and entry.path.parent.name == "tflite-int8"
    assert "float32" not in _tensor_types(entry.path)  # int8 weights, activations and I/O
    assert load_tflite_interpreter(str(entry.path)).get_input_details()[0]["dtype"] == np.int8
    assert cache.get(key, "tflite-int8") == entry  # recorded: a rerun reuses it
    assert cache.path_for(key, "tflite-int8") != cache.path_for(key, "tflite")  # precision is in the key
    # the host agent runs int8 files as they are (its worker feeds int8 inputs by the file's dtype)
    settings = RunSettings(warmup=1, runs=3, precision="int8")
    [measured] = LocalAgent().measure_batch([ModelFile.from_path(entry.path, key)], settings, 0)
    assert measured.ok and measured.median_ms > 0


def test_convert_reports_the_check_and_float_io_keeps_float_ends(tmp_path) -> None:
    from lutnas.supernet.blocks import build_block, example_input

    spec = BlockSpec.parse(MBCONV)
    torch.manual_seed(0)
    check = quantize.convert(build_block(spec), example_input(spec), True, tmp_path / "f.tflite", "int8",
                             io="float")
    assert check.input_dtype == "float32" and check.passes()
    assert check.cosine >= 0.99 and check.relative_error <= 0.15
    fp16 = quantize.convert(build_block(spec), example_input(spec), True, tmp_path / "h.tflite", "fp16")
    assert fp16.cosine > 0.9999 and "float16" in _tensor_types(tmp_path / "h.tflite")


def test_a_whole_subnet_quantizes(tmp_path) -> None:
    space = SearchSpace.load("tiny")
    entry = export_subnet(space, space.smallest(), "tflite-int8", ModelCache(tmp_path))
    assert entry.path.is_file() and entry.input_shape == (1, 3, 32, 32)


class _Unconvertible(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svdvals(x.flatten(2))


def test_a_block_that_cannot_be_quantized_is_named_with_the_converters_reason(tmp_path) -> None:
    with pytest.raises(quantize.QuantizationError, match=r"^odd:svd: cannot quantize to int8: .*svd"):
        quantize.convert(_Unconvertible(), torch.randn(1, 4, 4, 4), False, tmp_path / "x.tflite", "int8",
                         key="odd:svd")


def test_the_criterion_fails_a_wrong_graph_and_passes_rounding() -> None:
    reference = np.random.default_rng(0).standard_normal((1, 8, 4, 4)).astype(np.float32)
    assert not quantize.compare(-reference, reference, "int8").passes()
    step = np.abs(reference).max() / 127
    assert quantize.compare(np.round(reference / step) * step, reference, "int8").passes()
    with pytest.raises(quantize.QuantizationError, match="shape"):
        quantize.compare(reference[0], reference, "int8")


def test_formats_and_calibration_inputs(tmp_path) -> None:
    assert format_for("tflite", "int8") == "tflite-int8" and format_for("onnxruntime") == "onnx"
    with pytest.raises(BadInputError, match="--runtime tflite"):
        format_for("onnxruntime", "int8")
    example = torch.zeros(1, 3, 16, 16)
    seeded = quantize.calibration_inputs(example, count=3)
    assert len(seeded) == 3 and torch.equal(seeded[0], quantize.calibration_inputs(example, count=1)[0])
    images = quantize.calibration_inputs(example, data=_image_folder(tmp_path))
    assert len(images) == 2 and images[0].shape == (1, 3, 16, 16)
    with pytest.raises(BadInputError, match="3-channel"):
        quantize.calibration_inputs(torch.zeros(1, 8, 4, 4), data=tmp_path)


def _image_folder(root):
    from PIL import Image

    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        pixels = np.full((20, 24, 3), 40 if name == "cat" else 200, np.uint8)
        Image.fromarray(pixels).save(root / name / "a.png")
    return root


def test_calibration_images_join_the_cache_key_and_calibrate_a_stem(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(quantize.CALIBRATION_ENV, "")  # restored after the test
    stem = "conv:hw=32,cin=3,cout=8,k=3,s=2,act=hswish"
    cache = ModelCache(tmp_path / "cache")
    seeded = cache.path_for(stem, "tflite-int8")
    with pytest.raises(BadInputError, match="no such directory"):
        quantize.use_calibration_data(tmp_path / "missing")
    quantize.use_calibration_data(_image_folder(tmp_path / "images"))
    assert quantize.cache_identity()["calibration"].startswith("images:")
    assert cache.path_for(stem, "tflite-int8") != seeded  # other calibration, other file
    assert export_spec(BlockSpec.parse(stem), "tflite-int8", cache).path.is_file()


@pytest.mark.slow
def test_profile_device_int8_on_the_simulated_phone(phone: SimulatedAdbd, tmp_path) -> None:
    """`profile-device --precision int8` over ADB: int8 files pushed, run by the runner double."""
    from lutnas.cli import profile_device_main
    from lutnas.tables.store import MeasurementStore

    store = tmp_path / "m.sqlite"
    assert profile_device_main(["--device", f"adb:{phone.address}", "--runner", "tests/adbd/benchmark_model",
                                "--space", "tiny", "--limit", "2", "--trials", "1", "--warmup", "1",
                                "--runs", "3", "--precision", "int8", "--store", str(store),
                                "--cache", str(tmp_path / "cache"), "--cv-bound", "10",
                                "--drift-bound", "10", "--max-remeasure", "0"]) == 0
    with MeasurementStore(store) as db:
        frame = db.measurements_frame()
    assert set(frame["precision"]) == {"int8"} and (frame["runner_name"] == "benchmark_model").all()
    assert frame["key"].nunique() >= 2 and (frame["median_ms"] > 0).all()
