"""Whole subnets stitched from their blocks' .tflite files (profiler/stitch.py)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lutnas.errors import BadInputError, ExportError
from lutnas.profiler import stitch
from lutnas.profiler.export import (
    DISTINCT,
    STITCHED,
    ModelCache,
    build_subnet,
    cached_subnet,
    export_many,
    export_module,
    export_subnet,
    export_subnets,
    shutdown_export_pool,
)
from lutnas.space import subnet_key


@pytest.fixture(scope="module")
def block_cache(tiny_space, tmp_path_factory) -> ModelCache:
    """The .tflite files of the smallest tiny subnet's 11 blocks (two transformer blocks among
    them), exported once in the pool as profiling does."""
    cache = ModelCache(tmp_path_factory.mktemp("blocks"))
    try:
        export_many(tiny_space.blocks_of(tiny_space.smallest()), "tflite", cache, workers=2)
    finally:
        shutdown_export_pool()
    return cache


def test_a_stitched_subnet_is_the_converters_op_list_and_matches_torch(tiny_space, block_cache,
                                                                        tmp_path) -> None:
    config = tiny_space.smallest()
    key = subnet_key(tiny_space, config)
    [stitched] = export_subnets(tiny_space, [config], "tflite", block_cache, workers=1)
    assert stitched.path == block_cache.path_for(key, "tflite", STITCHED)  # its blocks were cached
    assert stitched.max_abs_error < 1e-4  # checked against PyTorch on export
    # without the blocks' files the subnet is converted whole
    converted = export_subnet(tiny_space, config, "tflite", ModelCache(tmp_path))
    assert converted.path == ModelCache(tmp_path).path_for(key, "tflite", DISTINCT)
    # chaining alone adds transposes and reshapes at the transformer boundary; folding removes
    # exactly those: what runs is what the converter makes of the whole model
    blocks = [block_cache.get(s.key, "tflite").path for s in tiny_space.blocks_of(config)]
    chained = stitch.chain([stitch.read_model(p) for p in blocks])
    assert stitch.fold_boundaries(chained) > 0
    data, folded = stitch.stitch(blocks)
    assert folded > 0 and stitched.sha256 == hashlib.sha256(data).hexdigest()  # not converted after all
    assert stitch.op_counts(stitched.path) == stitch.op_counts(converted.path)
    # the cache hands the same file back, however it was made
    assert export_subnet(tiny_space, config, "tflite", block_cache).sha256 == stitched.sha256
    assert export_subnet(tiny_space, config, "tflite", ModelCache(tmp_path)).sha256 == converted.sha256


def _varied(data: np.ndarray) -> bool:
    """A weight: over 64 bytes and not one value repeated (the converters also merge the ones and
    zeros of norm layers and biases at their initial values: a few KB a subnet, left as they are)."""
    return data.nbytes > 64 and len(np.unique(data)) > 1


def _shared_tflite_weights(path: Path) -> int:
    """Weights (_varied) that more than one op of a .tflite file reads."""
    model = stitch.read_model(path)
    graph = model.subgraphs[0]
    reads = Counter(t for op in graph.operators for t in op.inputs if t >= 0)
    data = {t: model.buffers[graph.tensors[t].buffer].data for t in reads}
    return sum(1 for t, n in reads.items() if n > 1 and data[t] is not None and _varied(np.asarray(data[t])))


def _shared_onnx_weights(path: Path) -> int:
    """Weights (_varied) that more than one node of an .onnx file reads (directly or through the
    Identity nodes the exporter makes for a merged initializer)."""
    graph = onnx.load(str(path)).graph
    reads = Counter(name for node in graph.node for name in node.input)
    return sum(1 for t in graph.initializer if reads[t.name] > 1 and _varied(numpy_helper.to_array(t)))


def test_repeated_blocks_keep_weights_of_their_own(tiny_space, block_cache, tmp_path) -> None:
    # the smallest subnet with its first transformer stage two deep: an attention and an FFN block
    # come twice (no block file beyond the fixture's)
    stages = list(tiny_space.smallest().stages)
    stages[2] = dataclasses.replace(stages[2], depth=2)
    config = dataclasses.replace(tiny_space.smallest(), stages=tuple(stages))
    key = subnet_key(tiny_space, config)
    assert len({s.key for s in tiny_space.blocks_of(config)}) < len(tiny_space.blocks_of(config))
    # stitched from the block files (their weights repeat, in tensors apart) and checked against
    # the model made of those files' weights
    stitched = export_subnet(tiny_space, config, "tflite", block_cache)
    assert stitched.path == block_cache.path_for(key, "tflite", STITCHED)
    assert stitched.max_abs_error < 1e-4
    # one seed per key: both converters merge the repeats' equal weights into one tensor...
    example = torch.randn(1, 3, config.resolution, config.resolution)
    merged_cache = ModelCache(tmp_path / "merged")
    merged = [export_module(key, build_subnet(tiny_space, config, as_blocks=True), example, True, fmt,
                            merged_cache) for fmt in ("tflite", "onnx")]
    assert _shared_tflite_weights(merged[0].path) > 0 and _shared_onnx_weights(merged[1].path) > 0
    # ...which the static subnet's conversions and the stitched file do not have
    cache = ModelCache(tmp_path / "whole")
    converted = [export_subnet(tiny_space, config, fmt, cache) for fmt in ("tflite", "onnx")]
    assert all(c.path == cache.path_for(key, c.format, DISTINCT) for c in converted)
    assert _shared_tflite_weights(converted[0].path) == 0 == _shared_tflite_weights(stitched.path)
    assert _shared_onnx_weights(converted[1].path) == 0
    assert stitch.op_counts(stitched.path) == stitch.op_counts(converted[0].path)


def test_blocks_that_do_not_compose_are_refused(tiny_space, block_cache) -> None:
    specs = tiny_space.blocks_of(tiny_space.smallest())
    first, last = (block_cache.get(s.key, "tflite").path for s in (specs[0], specs[-1]))
    with pytest.raises(ExportError, match="do not compose"):
        stitch.stitch([first, last])


def test_quantized_ends_and_other_files_are_refused(tiny_space, block_cache, tmp_path) -> None:
    spec = tiny_space.blocks_of(tiny_space.smallest())[1]
    model = stitch.read_model(block_cache.get(spec.key, "tflite").path)
    graph = model.subgraphs[0]
    graph.tensors[graph.inputs[0]].type = stitch.schema.TensorType.INT8
    with pytest.raises(ExportError, match="quantized blocks do not chain"):
        stitch.chain([model])
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(np.arange(64, dtype=np.uint8).tobytes())
    with pytest.raises(ExportError, match="not a .tflite file"):
        stitch.read_model(junk)


def test_stitching_can_be_turned_off_and_a_wrong_setting_is_named(tiny_space, block_cache,
                                                                   monkeypatch) -> None:
    config = tiny_space.smallest()
    stitched = export_subnet(tiny_space, config, "tflite", block_cache)
    assert cached_subnet(tiny_space, config, "tflite", block_cache) == stitched
    monkeypatch.setenv("LUTNAS_SUBNET_ASSEMBLY", "convert")
    # the stitched file in the cache is not handed out (no converted one is there yet)
    assert cached_subnet(tiny_space, config, "tflite", block_cache) is None
    monkeypatch.setenv("LUTNAS_SUBNET_ASSEMBLY", "glue")
    with pytest.raises(BadInputError, match="LUTNAS_SUBNET_ASSEMBLY='glue'.*stitch or convert"):
        export_subnet(tiny_space, config, "tflite", block_cache)


def _transpose_model(perm: list[int], shape: list[int]) -> stitch.schema.ModelT:
    """A one-op float model: TRANSPOSE(perm) of an input of `shape`."""
    s = stitch.schema
    model = s.ModelT()
    model.version, model.operatorCodes = 3, [s.OperatorCodeT()]
    model.operatorCodes[0].builtinCode = model.operatorCodes[0].deprecatedBuiltinCode = \
        s.BuiltinOperator.TRANSPOSE
    model.operatorCodes[0].version = 1
    constant = s.BufferT()
    constant.data = np.asarray(perm, dtype=np.int32).view(np.uint8)
    model.buffers = [s.BufferT(), constant]
    tensors = []
    for name, dims, buffer, kind in (("x", shape, 0, s.TensorType.FLOAT32),
                                     ("perm", [len(perm)], 1, s.TensorType.INT32),
                                     ("y", [shape[p] for p in perm], 0, s.TensorType.FLOAT32)):
        tensor = s.TensorT()
        tensor.name, tensor.shape, tensor.buffer, tensor.type = name, dims, buffer, kind
        tensors.append(tensor)
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    graph = s.SubGraphT()
    graph.tensors, graph.operators, graph.inputs, graph.outputs = tensors, [op], [0], [2]
    model.subgraphs = [graph]
    return model


def test_folding_ends_when_the_only_op_left_writes_the_output(tmp_path) -> None:
    # a transpose and its inverse fold into an identity from the input to the output, which must
    # stay (nothing else writes the output): folding stops there, and the file runs
    model = stitch.chain([_transpose_model([0, 2, 1], [1, 3, 5]), _transpose_model([0, 2, 1], [1, 5, 3])])
    assert stitch.fold_boundaries(model) == 1
    assert len(model.subgraphs[0].operators) == 1
    model.signatureDefs = [stitch._signature(model.subgraphs[0])]
    path = tmp_path / "identity.tflite"
    path.write_bytes(stitch.write_model(model))
    from lutnas.device_agents.runtimes import load_tflite_interpreter

    interpreter = load_tflite_interpreter(str(path))
    interpreter.allocate_tensors()
    x = np.arange(15, dtype=np.float32).reshape(1, 3, 5)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    assert np.array_equal(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), x)
