"""Export of blocks and subnets to real .tflite / .onnx files, checked against PyTorch by re-running."""

import random

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from lutnas.device_agents.runtimes import load_tflite_interpreter
from lutnas.errors import ExportError
from lutnas.profiler.export import (
    ModelCache,
    build_subnet,
    export_many,
    export_module,
    export_pool,
    export_spec,
    export_subnet,
    export_subnets,
    model_seed,
    shutdown_export_pool,
    weights_digest,
)
from lutnas.space import SearchSpace
from lutnas.supernet.blocks import build_block, example_input


def one_of_each_kind(space: SearchSpace, resolution: int, seed: int) -> list:
    rng = random.Random(seed)
    by_kind: dict[str, list] = {}
    for spec in space.unique_blocks([resolution]):
        by_kind.setdefault(spec.kind, []).append(spec)
    # Small ones keep CI fast: the smallest-input half of each kind.
    return [rng.choice(sorted(specs, key=lambda s: s.hw)[: max(1, len(specs) // 2)])
            for specs in by_kind.values()]


@pytest.mark.slow
def test_elasticvit_blocks_of_every_kind_export_to_both_formats(elasticvit_space, tmp_path) -> None:
    specs = one_of_each_kind(elasticvit_space, 128, seed=7)
    assert {s.kind for s in specs} == {"conv", "mbconv", "attn", "ffn", "head"}
    cache = ModelCache(tmp_path)
    for fmt in ("onnx", "tflite"):
        exported = export_many(specs, fmt, cache, workers=2)
        assert set(exported) == {s.key for s in specs}
    for spec in specs:
        # Rebuild the block with the exporter's seed and run both files on the same input.
        torch.manual_seed(model_seed(spec.key))
        module = build_block(spec)
        x = example_input(spec)
        with torch.no_grad():
            reference = module(x).numpy()
        scale = max(1.0, float(np.abs(reference).max()))
        session = onnxruntime.InferenceSession(str(cache.get(spec.key, "onnx").path))
        out = session.run(None, {"input": x.numpy()})[0]
        assert np.abs(out - reference).max() < 1e-4 * scale, spec.key
        interpreter = load_tflite_interpreter(str(cache.get(spec.key, "tflite").path))
        interpreter.allocate_tensors()
        nhwc = np.ascontiguousarray(np.moveaxis(x.numpy(), 1, -1))
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], nhwc)
        interpreter.invoke()
        out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        if out.ndim == 4:
            out = np.moveaxis(out, -1, 1)
        assert np.abs(out - reference).max() < 1e-4 * scale, spec.key


def test_cache_is_reused_and_resumes(tiny_space, tmp_path) -> None:
    specs = tiny_space.unique_blocks([32])[:3]
    cache = ModelCache(tmp_path)
    first = export_many(specs, "onnx", cache, workers=1)
    mtimes = {k: e.path.stat().st_mtime_ns for k, e in first.items()}
    # A damaged record means "not done": that one file is exported again, the others are reused.
    damaged = first[specs[0].key].path.with_suffix(".json")
    damaged.write_text("{not json")
    again = export_many(specs, "onnx", cache, workers=1)
    assert again[specs[1].key].path.stat().st_mtime_ns == mtimes[specs[1].key]
    assert again[specs[0].key].sha256
    assert not list(tmp_path.rglob(".tmp-*"))


def test_versions_change_the_cache_path(tiny_space, tmp_path) -> None:
    spec = tiny_space.unique_blocks([32])[0]
    cache = ModelCache(tmp_path)
    path = cache.path_for(spec.key, "onnx")
    cache.versions = dict(cache.versions, torch="99.0")
    assert cache.path_for(spec.key, "onnx") != path


class NotExportable(nn.Module):
    """Random output: the exported file cannot agree with a second PyTorch run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x)


def test_a_disagreeing_export_is_refused_naming_the_block(tmp_path) -> None:
    with pytest.raises(ExportError, match="my:block"):
        export_module("my:block", NotExportable(), torch.zeros(1, 4), False, "onnx", ModelCache(tmp_path))
    assert not list(tmp_path.rglob("*.onnx"))


def test_subnet_export_matches_torch(tiny_space, tmp_path) -> None:
    config = tiny_space.sample(random.Random(5))
    entry = export_subnet(tiny_space, config, "onnx", ModelCache(tmp_path))
    assert entry.key.startswith("subnet:tiny:")
    assert entry.input_shape == (1, 3, config.resolution, config.resolution)
    assert entry.max_abs_error < 1e-4


def test_torchscript_export_runs(tiny_space, tmp_path) -> None:
    spec = [s for s in tiny_space.unique_blocks([32]) if s.kind == "attn"][0]
    entry = export_spec(spec, "torchscript", ModelCache(tmp_path))
    loaded = torch.jit.load(str(entry.path))
    assert loaded(example_input(spec)).shape == example_input(spec).shape


def test_the_export_pool_is_started_once_and_reused(tiny_space, tmp_path) -> None:
    specs = tiny_space.unique_blocks([32])[:6]
    try:
        first = export_many(specs[:3], "onnx", ModelCache(tmp_path), workers=2)
        pool = export_pool(2)
        second = export_many(specs[3:], "onnx", ModelCache(tmp_path), workers=2)
        assert export_pool(2) is pool  # the second call reused the running workers
        assert set(first) | set(second) == {s.key for s in specs}
        # a single subnet goes to the warm workers too, and is checked against PyTorch there
        config = tiny_space.sample(random.Random(2))
        [entry] = export_subnets(tiny_space, [config], "onnx", ModelCache(tmp_path), workers=2)
        assert entry.max_abs_error < 1e-4
    finally:
        shutdown_export_pool()


def test_a_changed_lutnas_setting_starts_fresh_export_workers(monkeypatch) -> None:
    # Spawned workers keep the environment they started with; one that read the old assembly
    # or calibration setting must not serve an export asked for under the new one.
    try:
        pool = export_pool(1)
        assert export_pool(1) is pool
        monkeypatch.setenv("LUTNAS_SUBNET_ASSEMBLY", "convert")
        fresh = export_pool(1)
        assert fresh is not pool and export_pool(1) is fresh
        monkeypatch.setenv("UNRELATED_SETTING", "1")
        assert export_pool(1) is fresh
    finally:
        shutdown_export_pool()


def test_a_retrained_subnet_is_exported_again_not_taken_from_the_cache(tiny_space, tmp_path) -> None:
    config = tiny_space.sample(random.Random(4))
    cache = ModelCache(tmp_path)
    module = build_subnet(tiny_space, config)
    first = export_subnet(tiny_space, config, "onnx", cache, module=module)
    assert export_subnet(tiny_space, config, "onnx", cache, module=module).path == first.path
    digest = weights_digest(module)
    with torch.no_grad():  # "retrained": the same subnet with other weights
        next(module.parameters()).add_(0.5)
    assert weights_digest(module) != digest
    second = export_subnet(tiny_space, config, "onnx", cache, module=module)
    assert second.path != first.path and second.sha256 != first.sha256
    static = export_subnet(tiny_space, config, "onnx", cache)
    assert static.path not in (first.path, second.path)
