"""The elastic supernet of a search space: one set of shared weights for every subnet.

Its layers are laid out exactly as `space.blocks_of(config)` walks a subnet (stem conv, stem MBConvs,
per stage: MBConv layers, or a downsample MBConv and attention/FFN pairs, then the head), each layer
sized for the largest choice that can reach it. `extract(config)` returns the static composition the
profiler measures (`nn.Sequential` of `blocks.py` modules), so what is searched is what is deployed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lutnas.supernet.blocks import conv_out
from lutnas.supernet.data import resize_batch
from lutnas.supernet.elastic import (
    ElasticAttention,
    ElasticConv,
    ElasticFeedForward,
    ElasticHead,
    ElasticMBConv,
)
from lutnas.supernet.space import MBCONV, SearchSpace, StageChoice, SubnetConfig


class Supernet(nn.Module):
    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        act = space.activation
        stem = space.stem
        max_width = max(stem.widths)
        self.stem_conv = ElasticConv(3, max_width, stem.kernel, stem.stride, act)
        self.stem_layers = nn.ModuleList(
            ElasticMBConv(max_width, max_width, max(stem.kernels), 1, (1,), False, act)
            for _ in range(max(stem.depths))
        )
        hw = conv_out(max(space.resolutions), stem.stride)
        cin = max_width
        self.stages = nn.ModuleList()
        for stage in space.stages:
            width = max(stage.widths)
            layers = nn.ModuleList()
            if stage.type == MBCONV:
                k = max(stage.kernels)
                layers.append(ElasticMBConv(cin, width, k, stage.stride, stage.expands, stage.se, act))
                layers.extend(ElasticMBConv(width, width, k, 1, stage.expands, stage.se, act)
                              for _ in range(max(stage.depths) - 1))
            else:
                layers.append(ElasticMBConv(cin, width, space.downsample_kernel, stage.stride,
                                            (space.downsample_expand,), space.downsample_se, act))
                grid = conv_out(hw, stage.stride)
                for _ in range(max(stage.depths)):
                    layers.append(ElasticAttention(width, stage.head_dim, max(stage.v_scales), grid, act))
                    layers.append(ElasticFeedForward(width, max(stage.mlp_ratios), act))
            self.stages.append(layers)
            hw, cin = conv_out(hw, stage.stride), width
        self.head = ElasticHead(cin, space.head_expand, space.head_hidden, space.num_classes, act)
        self.active = space.largest()

    # ------------------------------------------------------------------ running a subnet
    def set_active(self, config: SubnetConfig) -> "Supernet":
        """Select the subnet `forward` runs; returns self so calls chain."""
        self.active = self.space.validate(config)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the active subnet on a batch already at its resolution (see `data.resize_batch`)."""
        cfg = self.active
        y = self.stem_conv(x, cfg.stem.width)
        for layer in self.stem_layers[:cfg.stem.depth]:
            y = layer(y, cfg.stem.width, cfg.stem.kernel, 1)
        for stage, layers, choice in zip(self.space.stages, self.stages, cfg.stages):
            if stage.type == MBCONV:
                for layer in layers[:choice.depth]:
                    y = layer(y, choice.width, choice.kernel, choice.expand)
            else:
                y = layers[0](y, choice.width, self.space.downsample_kernel, self.space.downsample_expand)
                for index in range(choice.depth):
                    y = layers[1 + 2 * index](y, choice.v_scale)
                    y = layers[2 + 2 * index](y, choice.mlp_ratio)
        return self.head(y)

    # ------------------------------------------------------------------ extraction
    def extract(self, config: SubnetConfig) -> nn.Sequential:
        """The static subnet (blocks of `space.blocks_of(config)`, in order) with the active weights."""
        self.space.validate(config)
        modules: list[nn.Module] = [self.stem_conv.extract(3, config.stem.width)]
        modules += [layer.extract(config.stem.width, config.stem.width, config.stem.kernel, 1)
                    for layer in self.stem_layers[:config.stem.depth]]
        hw = conv_out(config.resolution, self.space.stem.stride)
        cin = config.stem.width
        for stage, layers, choice in zip(self.space.stages, self.stages, config.stages):
            modules += self._extract_stage(stage.type, layers, hw, cin, choice, stage.stride)
            hw, cin = conv_out(hw, stage.stride), choice.width
        modules.append(self.head.extract(cin))
        model = nn.Sequential(*modules)
        param = next(self.parameters())
        return model.to(device=param.device, dtype=param.dtype).train(self.training)

    def _extract_stage(self, kind: str, layers: nn.ModuleList, hw: int, cin: int,
                       choice: StageChoice, stride: int) -> list[nn.Module]:
        if kind == MBCONV:
            out = [layers[0].extract(cin, choice.width, choice.kernel, choice.expand)]
            out += [layer.extract(choice.width, choice.width, choice.kernel, choice.expand)
                    for layer in layers[1:choice.depth]]
            return out
        out = [layers[0].extract(cin, choice.width, self.space.downsample_kernel,
                                 self.space.downsample_expand)]
        grid = conv_out(hw, stride)
        for index in range(choice.depth):
            out.append(layers[1 + 2 * index].extract(grid, choice.width, choice.v_scale))
            out.append(layers[2 + 2 * index].extract(choice.width, choice.mlp_ratio))
        return out

    # ------------------------------------------------------------------ batch norm
    @torch.no_grad()
    def recalibrate_bn(self, config: SubnetConfig, loader: Iterable, batches: int) -> None:
        """Re-estimate BN statistics for `config` from `batches` training batches.

        The running statistics of shared BN layers mix every subnet trained, so they fit none; the
        exact average over a few batches of this subnet's own activations is what evaluation needs.
        The momentum is set to 1/(i+1) per batch, which makes the running values a plain mean.
        """
        recalibrate_bn(self, loader, batches, config.resolution, lambda: self.set_active(config))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, batches: int, resolution: int,
                   before: object = None) -> None:
    """Reset BN running stats of `model` and average them over `batches` batches (train-mode BN)."""
    if callable(before):
        before()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(bn.momentum, bn.training) for bn in bns]
    was_training = model.training
    for bn in bns:
        bn.reset_running_stats()
    model.eval()
    for bn in bns:
        bn.train()
    device = next(model.parameters()).device
    seen = 0
    for x, _ in loader:
        if seen >= batches:
            break
        for bn in bns:
            bn.momentum = 1.0 / (seen + 1)
        model(resize_batch(x.to(device), resolution))
        seen += 1
    for bn, (momentum, training) in zip(bns, saved):
        bn.momentum = momentum
        bn.train(training)
    model.train(was_training)
