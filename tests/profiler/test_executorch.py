"""ExecuTorch (issue 15): blocks and subnets to .pte lowered to XNNPACK, checked against PyTorch,
measured on the host by the local agent's fresh worker process through `executorch.runtime`."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lutnas.device_agents.base import ModelFile, RunSettings
from lutnas.device_agents.local import LocalAgent
from lutnas.errors import BadInputError
from lutnas.profiler import export_executorch
from lutnas.profiler.export import ModelCache, export_many, export_subnet, format_for, model_seed
from lutnas.supernet.blocks import build_block, example_input
from tests.profiler.test_export import one_of_each_kind


@pytest.mark.slow
def test_every_elasticvit_kind_lowers_whole_to_xnnpack_and_matches_torch(elasticvit_space, tmp_path):
    specs = one_of_each_kind(elasticvit_space, 128, seed=7)
    cache = ModelCache(tmp_path)
    exported = export_many(specs, "pte", cache, workers=1)
    assert set(exported) == {s.key for s in specs}
    for spec in specs:
        torch.manual_seed(model_seed(spec.key))
        module, x = build_block(spec).eval(), example_input(spec)
        # Full-width weight slices are dropped, so convolutions and linear layers with static weights
        # run in XNNPACK; what stays out is named (attention's split q/k/v weights, its position index).
        left = export_executorch.undelegated_ops(export_executorch.lower(module, x))
        assert not any("convolution" in op for op in left), (spec.key, left)
        if spec.kind in ("conv", "mbconv"):
            assert left == [], (spec.key, left)
        if spec.kind == "ffn":
            assert left == ["aten.native_layer_norm.default"], left
        with torch.no_grad():
            reference = module(x).numpy()
        out = export_executorch.run_pte(exported[spec.key].path, [x])
        assert np.abs(out - reference).max() < 1e-4 * max(1.0, float(np.abs(reference).max())), spec.key
        assert exported[spec.key].path.suffix == ".pte"


def test_a_subnet_exports_and_the_local_agent_measures_it(tiny_space, tmp_path):
    config = tiny_space.sample(random.Random(5))
    entry = export_subnet(tiny_space, config, "pte", ModelCache(tmp_path))
    assert entry.max_abs_error < 1e-4 and entry.input_shape == (1, 3, config.resolution, config.resolution)
    files = [ModelFile(entry.path, entry.key, entry.sha256)]
    (result,) = LocalAgent().measure_batch(files, RunSettings(runtime="executorch", warmup=2, runs=5), 1)
    assert result.ok, result.status
    assert len(result.samples_ms) == 5 and 0 < result.min_ms <= result.median_ms
    assert result.runner.name == "executorch" and result.runner.version == export_executorch.version()


def test_the_cache_key_names_executorch_and_int8_is_refused(tmp_path):
    assert ModelCache(tmp_path).path_for("conv:x", "pte").suffix == ".pte"
    assert format_for("executorch") == "pte"
    with pytest.raises(BadInputError, match="--precision int8 .* not executorch"):
        format_for("executorch", "int8")
