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

from lutnas.space import MBCONV, SearchSpace, Slot, SubnetConfig, conv_out
from lutnas.supernet.data import resize_batch
from lutnas.supernet.elastic import (
    ElasticAttention,
    ElasticConv,
    ElasticFeedForward,
    ElasticHead,
    ElasticMBConv,
)


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
                layers.append(ElasticMBConv(cin, width, k, stage.stride, stage.expands, stage.se, act,
                                            projects=True))
                layers.extend(ElasticMBConv(width, width, k, 1, stage.expands, stage.se, act)
                              for _ in range(max(stage.depths) - 1))
            else:
                layers.append(ElasticMBConv(cin, width, space.downsample_kernel, stage.stride,
                                            (space.downsample_expand,), space.downsample_se, act,
                                            projects=True))
                grid = conv_out(hw, stage.stride)
                for _ in range(max(stage.depths)):
                    layers.append(ElasticAttention(width, stage.head_dim, max(stage.v_scales), grid, act))
                    layers.append(ElasticFeedForward(width, max(stage.mlp_ratios), act))
            self.stages.append(layers)
            hw, cin = conv_out(hw, stage.stride), width
        self.head = ElasticHead(cin, space.head_expand, space.head_hidden, space.num_classes, act)
        self.set_active(space.largest())

    # ------------------------------------------------------------------ running a subnet
    def set_active(self, config: SubnetConfig) -> "Supernet":
        """Select the subnet `forward` runs; returns self so calls chain."""
        self.active = self.space.validate(config)
        self._active_layers = self.space.layers_of(self.active)
        return self

    def layer_at(self, slot: Slot) -> nn.Module:
        """The elastic layer holding the weights of `slot` (see `lutnas.space.Slot`)."""
        group, position = slot
        if group == 0:
            return self.stem_conv if position == 0 else self.stem_layers[position - 1]
        if group <= len(self.stages):
            return self.stages[group - 1][position]
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the active subnet on a batch already at its resolution (see `data.resize_batch`).

        x: (N, 3, R, R) with R the active resolution; returns logits (N, num_classes)."""
        for slot, spec in self._active_layers:
            x = self.layer_at(slot).run(x, spec)
        return x

    # ------------------------------------------------------------------ extraction
    def extract(self, config: SubnetConfig) -> nn.Sequential:
        """The static subnet (blocks of `space.blocks_of(config)`, in order) with the active weights."""
        modules = [self.layer_at(slot).extract_spec(spec) for slot, spec in self.space.layers_of(config)]
        model = nn.Sequential(*modules)
        param = next(self.parameters())
        return model.to(device=param.device, dtype=param.dtype).train(self.training)

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
