"""The FLOPs-linear baseline: latency = a * MACs + b, the proxy hardware-unaware NAS uses.

It is reported next to the LUT so an evaluation shows what measuring buys (toolchain.md: a
FLOPs-linear fit reached ~5% MAPE on this host against 1-2% for the LUT sum). It is fitted on
whole subnets measured end to end when there are some; otherwise on the table's blocks, where
a block's latency ~ a * MACs + b and a subnet's is then a * MACs + b * (number of blocks).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lutnas.errors import PredictorError
from lutnas.predictors.base import Predictor, PredictorContext, register_predictor
from lutnas.space import BlockSpec, SearchSpace, SubnetConfig, block_complexity


class FlopsLinearPredictor(Predictor):
    name = "FLOPs-linear"

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.coef_: tuple[float, float] | None = None  # (ms per MAC, ms per block or per net)
        self.per_block_: bool = False

    def _features(self, configs: Sequence[SubnetConfig]) -> tuple[np.ndarray, np.ndarray]:
        macs, blocks = [], []
        for config in configs:
            specs = self.space.blocks_of(config)
            macs.append(sum(block_complexity(s).macs for s in specs))
            blocks.append(len(specs))
        return np.asarray(macs, dtype=float), np.asarray(blocks, dtype=float)

    def fit(self, configs: Sequence[SubnetConfig], measured_ms: Sequence[float]) -> "FlopsLinearPredictor":
        y = np.asarray(measured_ms, dtype=float)
        if len(configs) != len(y) or len(y) < 2:
            raise PredictorError(f"FLOPs-linear fit needs >= 2 measured subnets with one latency each, "
                                 f"got {len(configs)} configs and {len(y)} latencies")
        macs, _ = self._features(configs)
        (a, b), *_ = np.linalg.lstsq(np.column_stack([macs, np.ones_like(macs)]), y, rcond=None)
        self.coef_, self.per_block_ = (float(a), float(b)), False
        return self

    def fit_blocks(self, specs: Sequence[BlockSpec], latency_ms: Sequence[float]) -> "FlopsLinearPredictor":
        y = np.asarray(latency_ms, dtype=float)
        if len(specs) < 2:
            raise PredictorError("FLOPs-linear fit on blocks needs at least 2 measured blocks")
        macs = np.asarray([block_complexity(s).macs for s in specs], dtype=float)
        (a, b), *_ = np.linalg.lstsq(np.column_stack([macs, np.ones_like(macs)]), y, rcond=None)
        self.coef_, self.per_block_ = (float(a), float(b)), True
        return self

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        if self.coef_ is None:
            raise PredictorError("FLOPs-linear predictor is not fitted; call fit() or fit_blocks()")
        macs, blocks = self._features(configs)
        a, b = self.coef_
        return a * macs + b * (blocks if self.per_block_ else 1.0)


def _builder(context: PredictorContext) -> Predictor | None:
    predictor = FlopsLinearPredictor(context.space)
    if len(context.calibration_configs) >= 2:
        return predictor.fit(context.calibration_configs, context.calibration_ms)
    frame = context.table.frame
    specs, values = [], []
    for key, value in zip(frame.index, frame["median_ms"]):
        try:
            spec = BlockSpec.parse(str(key))
        except Exception:  # imported foreign keys have no shape to count
            continue
        if not spec.is_operator and np.isfinite(value):
            specs.append(spec)
            values.append(float(value))
    return predictor.fit_blocks(specs, values) if len(specs) >= 2 else None


register_predictor("flops-linear", _builder)
