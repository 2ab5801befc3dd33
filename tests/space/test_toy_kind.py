"""A new block kind is one BlockKind record plus its module class: the proof.

Everything the toy kind needs is written here, in the test, and registered through the public
registries (`lutnas.space.register_kind`, `register_stage_type`,
`lutnas.supernet.blocks.register_module`); no other file of lutnas knows it. A space YAML built from
it is then profiled on this host with onnxruntime, tabled, predicted and searched through the same
`lutnas.cli.main` a user's command runs, in this process, where the kind is registered.

`profile-device` with `--export-workers 2` (its default) exports in spawned worker processes that
parse the block keys afresh: a kind registered only in the parent is unknown there, so the user
names the module that registers it in `LUTNAS_PLUGINS` (imported by `lutnas` at start and by every
export worker), as the last test does.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lutnas.cli import main
from lutnas.space import (
    BlockKind,
    BlockSpec,
    SearchSpace,
    StageType,
    block_complexity,
    conv_out,
    register_kind,
    register_stage_type,
    unregister_kind,
    unregister_stage_type,
)
from lutnas.space.complexity import Tally
from lutnas.supernet.blocks import build_block, example_input, register_module, unregister_module
from lutnas.tables.table import LatencyTable

KIND, STAGE_TYPE = "toyconv", "toy"


# ------------------------------------------------------------------------- the toy kind's record
def _toy_cost(tally: Tally, p: dict) -> None:
    ho = conv_out(p["hw"], p["s"])
    weights = p["cout"] * p["cin"] * p["k"] ** 2
    tally.layer(ho * ho * weights, weights + p["cout"], p["hw"] ** 2 * p["cin"], ho * ho * p["cout"])


def _toy_operators(p: dict) -> list[BlockSpec]:
    ho = conv_out(p["hw"], p["s"])
    return [BlockSpec.make("conv2d", hw=p["hw"], cin=p["cin"], cout=p["cout"], k=p["k"], s=p["s"]),
            BlockSpec.make("activation", n=ho * ho, c=p["cout"], act="relu")]


TOY_KIND = BlockKind(
    name=KIND, fields=("hw", "cin", "cout", "k", "s"),
    input_shape=lambda p: (p["cin"], p["hw"], p["hw"]),
    output_elements=lambda p: conv_out(p["hw"], p["s"]) ** 2 * p["cout"],
    cost=_toy_cost, operators=_toy_operators,
)


class ToyConv(nn.Module):
    """The toy kind's module: a plain conv (with bias) and ReLU."""

    def __init__(self, hw: int, cin: int, cout: int, k: int, s: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def _toy_stage_blocks(space, stage, hw: int, cin: int, choice) -> list[BlockSpec]:
    first = BlockSpec.make(KIND, hw=hw, cin=cin, cout=choice.width, k=choice.kernel, s=stage.stride)
    rest = BlockSpec.make(KIND, hw=conv_out(hw, stage.stride), cin=choice.width, cout=choice.width,
                          k=choice.kernel, s=1)
    return [first] + [rest] * (choice.depth - 1)


TOY_STAGE = StageType(STAGE_TYPE, ("depth", "width", "kernel"), _toy_stage_blocks)

# Tiny on purpose: 8 subnets and 10 unique blocks, so profiling takes seconds.
TOY_SPACE_YAML = f"""
name: toyspace
num_classes: 10
activation: relu
resolutions: [32]
stem: {{widths: [8], kernel: 3, stride: 2, depths: [1], kernels: [3]}}
stages:
  - {{name: toys, type: {STAGE_TYPE}, depths: [1, 2], widths: [8, 16], kernels: [3, 5], stride: 2}}
head: {{expand: 2, hidden: 32}}
"""


def all_configs(space: SearchSpace) -> list:
    """Every subnet of a one-stage space with a fixed stem."""
    (stage,) = space.stages
    return [space.config_from_json(json.dumps({
        "resolution": r, "stem": {"width": space.stem.widths[0], "depth": 1, "kernel": 3},
        "stages": [{"depth": d, "width": w, "kernel": k}]}))
        for r, d, w, k in itertools.product(space.resolutions, stage.depths, stage.widths, stage.kernels)]


@pytest.fixture
def toy_registered():
    register_kind(TOY_KIND)
    register_module(KIND)(ToyConv)
    register_stage_type(TOY_STAGE)
    yield
    unregister_stage_type(STAGE_TYPE)
    unregister_module(KIND)
    unregister_kind(KIND)


@pytest.fixture
def toy_space_file(tmp_path, toy_registered):
    path = tmp_path / "toy.yaml"
    path.write_text(TOY_SPACE_YAML)
    return path


def test_the_record_prices_the_module_it_registers(toy_registered):
    spec = BlockSpec.parse(f"{KIND}:hw=16,cin=8,cout=16,k=3,s=2")
    module = build_block(spec)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = module(example_input(spec))
    assert out.numel() == spec.output_elements()
    cost = block_complexity(spec)
    assert 2 * cost.macs == counter.get_total_flops()
    assert cost.params == sum(p.numel() for p in module.parameters())
    assert [op.kind for op in spec.operators()] == ["conv2d", "activation"]


def test_profile_table_predict_search_a_toy_kind(tmp_path, toy_space_file, capsys):
    space = SearchSpace.load(toy_space_file)
    toy_blocks = [b for b in space.unique_blocks() if b.kind == KIND]
    assert len(toy_blocks) == 8
    store, table_path = tmp_path / "m.sqlite", tmp_path / "toy.parquet"

    # Export runs in this process (--export-workers 1); the trials run in worker processes that
    # only load .onnx files and never parse a block key.
    assert main(["profile-device", "--device", "local", "--space", str(toy_space_file),
                 "--runtime", "onnxruntime", "--trials", "2", "--runs", "5", "--warmup", "1",
                 "--export-workers", "1", "--store", str(store)]) == 0
    assert main(["build-table", "--store", str(store), "--space", str(toy_space_file),
                 "--out", str(table_path)]) == 0
    table = LatencyTable.load(table_path)
    assert {b.key for b in space.unique_blocks()} <= set(table.keys)
    assert table.load_space() == space  # the table embeds the YAML of the toy space

    def lut_sum(config) -> float:
        return sum(table.latency_ms(b.key) for b in space.blocks_of(config))

    expected = lut_sum(space.largest())
    capsys.readouterr()
    assert main(["predict", "--table", str(table_path), "--config", "largest", "--explain"]) == 0
    printed = capsys.readouterr().out
    assert KIND in printed
    lut_ms = float(re.search(r"LUT sum: ([0-9.]+) ms", printed).group(1))
    assert lut_ms == pytest.approx(expected, abs=1e-4)

    # A target between the smallest and the largest subnet: the search must leave the largest out.
    target = (lut_sum(space.smallest()) + expected) / 2
    out = tmp_path / "search"
    assert main(["search", "--space", str(toy_space_file), "--table", str(table_path),
                 "--target-ms", f"{target:.6f}", "--window-ms", f"{target:.6f}", "--fill", "none",
                 "--population", "8", "--generations", "3", "--parents", "4", "--mutations", "4",
                 "--crossovers", "4", "--no-export", "--out", str(out)]) == 0
    best = json.loads((out / "best.json").read_text())
    winner = space.config_from_json(json.dumps(best["config"]))
    assert best["predicted_ms"] == pytest.approx(lut_sum(winner), abs=1e-6)
    assert best["predicted_ms"] <= target
    # 8 subnets: the search must have found the proxy's optimum (most MACs) under the target.
    feasible = [c for c in all_configs(space) if lut_sum(c) <= target]
    assert space.complexity(winner).macs == max(space.complexity(c).macs for c in feasible)


PLUGIN = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("toy_kind_records", {str(__file__)!r})
toy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy)
KIND, TOY_KIND, TOY_STAGE, ToyConv = toy.KIND, toy.TOY_KIND, toy.TOY_STAGE, toy.ToyConv
from lutnas.space import register_kind, register_stage_type
from lutnas.supernet.blocks import register_module

register_kind(TOY_KIND, replace=True)
register_stage_type(TOY_STAGE, replace=True)
register_module(KIND)(ToyConv)
"""


def test_export_workers_know_a_kind_named_in_lutnas_plugins(tmp_path, toy_space_file, monkeypatch):
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers start with the parent's sys.path
    monkeypatch.setenv("LUTNAS_PLUGINS", "toy_plugin")
    store = tmp_path / "m.sqlite"
    assert main(["profile-device", "--device", "local", "--space", str(toy_space_file),
                 "--runtime", "onnxruntime", "--trials", "1", "--runs", "3", "--warmup", "1",
                 "--export-workers", "2", "--limit", "4", "--store", str(store)]) == 0
