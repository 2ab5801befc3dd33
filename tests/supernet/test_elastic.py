"""The supernet running a subnet computes what the extracted static subnet computes."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from lutnas.space import MBCONV, TRANSFORMER, SearchSpace
from lutnas.supernet.blocks import build_block
from lutnas.supernet.model import Supernet


def _perturb_bn(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial running stats, so a wrong slice of them would show in eval mode."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)


@pytest.fixture(scope="module")
def tiny_supernet() -> Supernet:
    torch.manual_seed(0)
    net = Supernet(SearchSpace.load("tiny")).eval()
    with torch.no_grad():
        _perturb_bn(net, torch.Generator().manual_seed(1))
    return net


def _check(net: Supernet, config, seed: int) -> None:
    x = torch.randn(2, 3, config.resolution, config.resolution,
                    generator=torch.Generator().manual_seed(seed))
    static = net.extract(config).eval()
    with torch.no_grad():
        expected = net.set_active(config)(x)
        got = static(x)
    assert got.shape == (2, net.space.num_classes)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The extracted model is exactly the static composition of the config's blocks.
    reference = nn.Sequential(*(build_block(s) for s in net.space.blocks_of(config)))
    assert [type(m) for m in static] == [type(m) for m in reference]
    assert {k: v.shape for k, v in static.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}


def test_tiny_random_configs_match_extracted(tiny_supernet: Supernet) -> None:
    space = tiny_supernet.space
    rng = random.Random(0)
    configs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(10)]
    assert {s.type for s in space.stages} == {MBCONV, TRANSFORMER}
    for index, config in enumerate(configs):
        _check(tiny_supernet, config, index)


def test_elasticvit_small_resolution_matches_extracted() -> None:
    torch.manual_seed(0)
    space = SearchSpace.load("elasticvit")
    net = Supernet(space).eval()
    with torch.no_grad():
        _perturb_bn(net, torch.Generator().manual_seed(2))
    rng = random.Random(3)
    smallest = space.smallest()
    for index in range(4):
        config = space.sample(rng)
        # The smallest resolution keeps the check fast; the bias table is still the largest grid's.
        config = type(config)(smallest.resolution, config.stem, config.stages)
        _check(net, config, index)


def test_supernet_gradients_reach_only_active_slices(tiny_supernet: Supernet) -> None:
    net = tiny_supernet
    config = net.space.smallest()
    net.zero_grad()
    net.train()
    x = torch.randn(2, 3, config.resolution, config.resolution)
    net.set_active(config)(x).sum().backward()
    net.eval()
    fc2 = net.stages[-1][2].fc2.weight.grad
    width, hidden = config.stages[-1].width, config.stages[-1].width * config.stages[-1].mlp_ratio
    assert fc2[:width, :hidden].abs().sum() > 0
    assert fc2[width:].abs().sum() == 0 and fc2[:, hidden:].abs().sum() == 0
    # Layers beyond the active depth are not used at all.
    assert net.stages[0][1].dw_conv.weight.grad is None
    net.zero_grad()


def test_elastic_mbconv_shortcut_extracts_exactly() -> None:
    """A stage's first layer: pooled and projected residuals slice like every other layer."""
    from lutnas.supernet.elastic import ElasticMBConv

    torch.manual_seed(0)
    layer = ElasticMBConv(32, 48, 5, 2, (3, 6), True, "hswish", projects=True).eval()
    with torch.no_grad():
        _perturb_bn(layer, torch.Generator().manual_seed(4))
    for cin, cout, k, e, hw in [(16, 48, 3, 3, 11), (32, 32, 5, 6, 12), (24, 40, 5, 3, 7),
                                (32, 48, 5, 6, 8)]:
        x = torch.randn(2, cin, hw, hw, generator=torch.Generator().manual_seed(hw))
        static = layer.extract(cin, cout, k, e).eval()
        with torch.no_grad():
            torch.testing.assert_close(static(x), layer(x, cout, k, e), rtol=1e-5, atol=1e-5)
        assert hasattr(static, "shortcut_conv") == (cin != cout)
