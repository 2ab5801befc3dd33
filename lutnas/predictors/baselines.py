"""The MACs-linear baseline: latency = a * MACs + b, the proxy hardware-unaware NAS uses.

It is reported ("FLOPs-linear", the name papers give it; their FLOPs are MACs) next to the LUT so an
evaluation shows what measuring buys (toolchain.md: such a fit reached ~5% MAPE on this host
against 1-2% for the LUT sum). `fit(table)` fits the table's blocks, where a block's latency ~
a * MACs + b and a subnet's is then a * MACs + b * (number of blocks); `calibrate` refits it on
whole subnets measured end to end, which is what it is scored after when there are some.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lutnas.errors import BlockKeyError, PredictorError
from lutnas.predictors.base import Predictor, check_fitted
from lutnas.space import BlockSpec, SearchSpace, SubnetConfig, block_complexity


class FlopsLinearPredictor(Predictor):
    """`a * MACs + b` per subnet (fitted on subnets) or `a * MACs + b * blocks` (fitted on blocks)."""

    name = "flops-linear"
    fitted_attributes = ("coef_",)

    def __init__(self, space: SearchSpace | None = None) -> None:
        self.space = space

    @property
    def label(self) -> str:
        return "FLOPs-linear"

    @property
    def wants_calibration(self) -> bool:
        return True  # whole subnets, when there are some, are what it should be fitted on

    def _features(self, configs: Sequence[SubnetConfig]) -> tuple[np.ndarray, np.ndarray]:
        if self.space is None:
            raise PredictorError("the FLOPs-linear predictor has no search space; pass space=")
        macs, blocks = [], []
        for config in configs:
            specs = self.space.blocks_of(config)
            macs.append(sum(block_complexity(s).macs for s in specs))
            blocks.append(len(specs))
        return np.asarray(macs, dtype=float), np.asarray(blocks, dtype=float)

    def fit(self, table: Any) -> FlopsLinearPredictor:
        """Fit `a * MACs + b` on the table's blocks (operators and foreign keys are skipped)."""
        specs, values = [], []
        for key, value in zip(table.frame.index, table.frame["median_ms"]):
            try:
                spec = BlockSpec.parse(str(key))
            except BlockKeyError:  # imported foreign keys have no shape to count
                continue
            if not spec.is_operator and np.isfinite(value):
                specs.append(spec)
                values.append(float(value))
        if len(specs) < 2:
            raise PredictorError("FLOPs-linear fit on blocks needs at least 2 measured blocks")
        macs = np.asarray([block_complexity(s).macs for s in specs], dtype=float)
        (a, b), *_ = np.linalg.lstsq(np.column_stack([macs, np.ones_like(macs)]), values, rcond=None)
        self.coef_, self.per_block_ = (float(a), float(b)), True
        return self

    def calibrate(self, configs: Sequence[SubnetConfig], measured_ms: Sequence[float],
                  invoke_ms: float | None = None, precision: str | None = None) -> FlopsLinearPredictor:
        """Refit `a * MACs + b` on whole subnets (at least 2); `invoke_ms` and `precision` are not
        used."""
        y = np.asarray(measured_ms, dtype=float)
        if len(configs) != len(y) or len(y) < 2:
            raise PredictorError(f"FLOPs-linear fit needs >= 2 measured subnets with one latency each, "
                                 f"got {len(configs)} configs and {len(y)} latencies")
        macs, _ = self._features(configs)
        (a, b), *_ = np.linalg.lstsq(np.column_stack([macs, np.ones_like(macs)]), y, rcond=None)
        self.coef_, self.per_block_ = (float(a), float(b)), False
        return self

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        check_fitted(self)
        macs, blocks = self._features(configs)
        a, b = self.coef_
        return a * macs + b * (blocks if self.per_block_ else 1.0)
