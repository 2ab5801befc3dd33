"""Block-sum predictors: a subnet's latency is the corrected sum of its blocks' latencies.

The LUT, learned, analytic and transfer predictors differ only in how they price one block; summing
over `space.blocks_of(config)` and the whole-model `Correction` are done here, once, so `lutnas
evaluate` compares them under the same correction fitted on the same subnets.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lutnas.errors import PredictorError
from lutnas.predictors.base import Predictor, check_fitted
from lutnas.predictors.correction import Correction
from lutnas.space import BlockSpec, SearchSpace, SubnetConfig, as_specs, subnet_key
from lutnas.space.complexity import weight_mib


class BlockSumPredictor(Predictor):
    """`predict(configs) = correction_.apply(sum of predict_blocks, block count)`.

    Subclasses implement `fit(...)` (which resets `correction_` to the identity) and
    `_predict_blocks(specs, use_measured)`; `calibrate` fits the correction on measured subnets.
    `corrected` says whether `predict` applies the correction (the LUT makes it a hyper-parameter).
    `weight_precision` (fp32 | fp16 | int8, the table's; set by `calibrate(precision=...)` and the
    registry) prices each subnet's weights in MiB for the correction's weight term, as the LUT does.
    """

    name = "blocksum"
    corrected: bool = True
    weight_precision: str = "fp32"

    def __init__(self, space: SearchSpace | None = None) -> None:
        self.space = space

    # -------------------------------------------------------------- to be provided by subclasses
    @abstractmethod
    def _predict_blocks(self, specs: list[BlockSpec], use_measured: bool) -> tuple[np.ndarray, np.ndarray]:
        """(ms, spread ms) for a non-empty list of specs; the predictor is fitted."""

    # -------------------------------------------------------------- blocks
    def predict_blocks(self, specs: Sequence[BlockSpec | str], return_spread: bool = False,
                       use_measured: bool = True) -> Any:
        """ms per block (float64 array); with `return_spread`, also the spread in ms (how unsure the
        predictor is). `use_measured`: keys the predictor was fitted on return their measured
        latency with spread 0, where the predictor keeps them (learned, transfer)."""
        check_fitted(self)
        specs = as_specs(specs)
        if specs:
            ms, spread = self._predict_blocks(specs, use_measured)
        else:
            ms, spread = np.zeros(0), np.zeros(0)
        return (ms, spread) if return_spread else ms

    def block_sums(self, configs: Sequence[SubnetConfig]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per config: uncorrected block sum (ms), its spread (root sum of squares of the blocks'
        spreads) and the number of blocks it executes."""
        space = self._require_space()
        per_config = [[s.key for s in space.blocks_of(c)] for c in configs]
        unique = sorted({k for keys in per_config for k in keys})
        ms, spread = self.predict_blocks(unique, return_spread=True)
        lookup = dict(zip(unique, ms))
        var = dict(zip(unique, spread ** 2))
        sums = np.array([sum(lookup[k] for k in keys) for keys in per_config], dtype=float)
        spreads = np.sqrt(np.array([sum(var[k] for k in keys) for keys in per_config], dtype=float))
        return sums, spreads, np.array([len(keys) for keys in per_config], dtype=float)

    # -------------------------------------------------------------- whole subnets
    @property
    def correction(self) -> Correction:
        """The fitted correction, or the identity before `calibrate`."""
        return getattr(self, "correction_", None) or Correction()

    @property
    def wants_calibration(self) -> bool:
        return self.corrected and not self.correction.fitted

    def subnet_weight_mib(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        """Each config's weights in MiB at `weight_precision` (`lutnas.space.complexity.weight_mib`,
        the figure the LUT's correction charges)."""
        space = self._require_space()
        return np.array([weight_mib(space.blocks_of(c), self.weight_precision) for c in configs],
                        dtype=float)

    def corrected_sums(self, configs: Sequence[SubnetConfig], sums: np.ndarray,
                       blocks: np.ndarray) -> np.ndarray:
        """The correction applied to block sums (ms) of `configs`, with their weight MiB when the
        correction has a weight term."""
        weights = self.subnet_weight_mib(configs) if self.correction.weight_ms_per_mib else None
        return self.correction.apply(sums, blocks, weights)

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        configs = list(configs)
        sums, _, blocks = self.block_sums(configs)
        return self.corrected_sums(configs, sums, blocks) if self.corrected else sums

    def calibrate(self, configs: Sequence[SubnetConfig], measured_ms: Sequence[float],
                  invoke_ms: float | None = None, precision: str | None = None) -> BlockSumPredictor:
        """Fit `correction_` on subnets measured end to end (see `Correction.fit`). Each subnet's
        weight MiB at `precision` (default `weight_precision`) makes the weight term a candidate,
        kept only when it lowers the leave-one-out error, as for the LUT. PredictorError for
        mismatched lengths."""
        if precision:
            self.weight_precision = precision
        configs = list(configs)
        measured = np.asarray(measured_ms, dtype=float)
        if len(configs) != len(measured) or not configs:
            raise PredictorError(f"calibrate needs one measured latency per config, got "
                                 f"{len(configs)} configs and {len(measured)} latencies")
        sums, _, blocks = self.block_sums(configs)
        space = self._require_space()
        self.correction_ = Correction.fit(sums, measured, blocks, invoke_ms,
                                          subnets=[subnet_key(space, c) for c in configs],
                                          weight_mib=self.subnet_weight_mib(configs))
        return self

    def explain(self, config: SubnetConfig) -> pd.DataFrame:
        """Per-block breakdown of one prediction, in execution order."""
        specs = self._require_space().blocks_of(config)
        ms, spread = self.predict_blocks(specs, return_spread=True)
        return pd.DataFrame({"key": [s.key for s in specs], "kind": [s.kind for s in specs],
                             "ms": ms, "spread_ms": spread})

    def _require_space(self) -> SearchSpace:
        space = getattr(self, "space_", None) or self.space
        if space is None:
            raise PredictorError(f"{self.label} predictor has no search space; pass space= to price "
                                 f"subnet configs (blocks need none)")
        return space

    # -------------------------------------------------------------- state (serialize.py)
    def _correction_state(self) -> dict[str, Any]:
        # The precision travels with the correction: its weight term is priced in MiB at it.
        return {**self.correction.to_dict(), "weight_precision": self.weight_precision}

    def _load_correction(self, header: dict[str, Any]) -> None:
        self.correction_ = Correction.from_dict(header["correction"])
        self.weight_precision = str(header["correction"].get("weight_precision") or "fp32")


def keyed_values(keys: Sequence[Any], values: np.ndarray) -> dict[str, float]:
    """{key: value} from a predictor file's key list and value array, refusing unequal lengths."""
    if len(keys) != len(values):
        raise PredictorError("predictor file is inconsistent (keys and values differ in length); "
                             "it was altered: refit it")
    return dict(zip((str(k) for k in keys), values.astype(float)))
