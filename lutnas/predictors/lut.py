"""The lookup-table predictor: a subnet's latency is the sum of its blocks' table latencies.

Search prices millions of subnets, so the sum is not taken block by block. A subnet's blocks in one
stage depend only on the resolution, the stage's input width (the previous stage's width choice)
and the stage's own choices, so each stage's summed latency is precomputed once into a dense grid
over those choices; a prediction is then one fancy-indexing lookup per stage on an integer encoding
of the configs. The grids are built from the space's own `stem_blocks` / `stage_blocks` /
`head_block`, the functions `blocks_of` composes, and a test holds the grid sum to the plain sum over
`blocks_of`, so the index can never drift from what a subnet executes.

The sum of isolated blocks misses per-inference overhead and cache effects between blocks; the
whole-model `Correction` (one for every block-sum predictor), fitted on a few subnets measured end
to end, is stored in the table's metadata and applied when `corrected=True`. Its optional weight
term needs each subnet's weight MiB: the index carries a params grid beside the latency one (one
more gather per slot), and `LutPredictor.calibrate` offers the term to the fit.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lutnas.errors import ConfigError, PredictorError
from lutnas.predictors.base import BlockPredictor, Predictor, check_fitted
from lutnas.predictors.blocksum import BlockSumPredictor
from lutnas.predictors.correction import Correction
from lutnas.space import STEM_FIELDS, BlockSpec, SearchSpace, StageChoice, SubnetConfig, conv_out, subnet_key
from lutnas.space.complexity import MIB, block_complexity, bytes_per_param
from lutnas.tables.table import LatencyTable


@dataclass
class _Slot:
    """One part of every subnet (stem, a stage, head) and its summed latency over its choices."""

    name: str
    columns: tuple[int, ...]  # columns of the config encoding that index `grid`
    grid: np.ndarray  # summed ms; NaN where a block is missing
    filled: np.ndarray  # number of blocks priced by the fallback block predictor
    blocks: np.ndarray  # number of blocks executed (for the per-block overhead term)
    params: np.ndarray  # summed weights (parameters; for the correction's weight term)


class SpaceIndex:
    """Integer encoding of configs and per-slot latency grids for one space and one key pricing."""

    def __init__(self, space: SearchSpace, latency: dict[str, float], filled: set[str],
                 params: dict[str, float] | None = None) -> None:
        self.space = space
        self.latency, self._filled = latency, filled  # key -> ms (table + filled)
        self._params = params or {}  # key -> parameters; without it the params grids are zero
        self.missing: set[str] = set()
        # Encoding columns: resolution, stem fields, then each stage's fields.
        self._choices: list[tuple[int, ...]] = [space.resolutions]
        self._choices += [space.stem.choices()[f] for f in STEM_FIELDS]
        self._stage_cols: list[dict[str, int]] = []
        for stage in space.stages:
            cols = {}
            for name in stage.fields:
                cols[name] = len(self._choices)
                self._choices.append(stage.choices()[name])
            self._stage_cols.append(cols)
        self._position = [{v: i for i, v in enumerate(values)} for values in self._choices]
        self.slots = [self._stem_slot()]
        self.slots += [self._stage_slot(i) for i in range(len(space.stages))]
        self.slots.append(self._head_slot())

    # -------------------------------------------------------------- grids
    def _price(self, blocks: Sequence[BlockSpec]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Plain Python per block, numpy once per list: this runs ~200k times per index.
        ms: list[float] = []
        filled: list[bool] = []
        params = self._params
        weights = [params.get(spec.key, 0.0) for spec in blocks] if params else [0.0] * len(blocks)
        for spec in blocks:
            key = spec.key
            value = self.latency.get(key)
            if value is None or not math.isfinite(value):
                self.missing.add(key)
                ms.append(math.nan)
                filled.append(False)
            else:
                ms.append(value)
                filled.append(key in self._filled)
        return np.array(ms, dtype=float), np.array(filled, dtype=float), np.array(weights, dtype=float)

    def _stage_hw(self, resolution: int) -> list[int]:
        hw = [conv_out(resolution, self.space.stem.stride)]
        for stage in self.space.stages:
            hw.append(conv_out(hw[-1], stage.stride))
        return hw

    def _stem_slot(self) -> _Slot:
        shape = tuple(len(self._choices[c]) for c in range(4))
        grid, filled, count, params = (np.zeros(shape) for _ in range(4))
        for idx in itertools.product(*(range(n) for n in shape)):
            res, width, depth, kernel = (self._choices[c][i] for c, i in enumerate(idx))
            ms, fl, pa = self._price(self.space.stem_blocks(res, width, depth, kernel))
            grid[idx], filled[idx], count[idx], params[idx] = ms.sum(), fl.sum(), len(ms), pa.sum()
        return _Slot("stem", (0, 1, 2, 3), grid, filled, count, params)

    def _stage_slot(self, index: int) -> _Slot:
        stage = self.space.stages[index]
        fields = stage.fields  # depth first
        cols = self._stage_cols[index]
        cin_col = 1 if index == 0 else self._stage_cols[index - 1]["width"]
        columns = (0, cin_col, *(cols[f] for f in fields))
        shape = tuple(len(self._choices[c]) for c in columns)
        grid, filled, count, params = (np.zeros(shape) for _ in range(4))
        depths = self._choices[cols["depth"]]
        other = [f for f in fields if f != "depth"]
        # A stage of depth d executes a prefix of the blocks of the deepest stage (checked below),
        # so one block list per choice gives every depth by cumulative sums.
        for r, res in enumerate(self.space.resolutions):
            hw = self._stage_hw(res)[index]
            for c, cin in enumerate(self._choices[cin_col]):
                for rest in itertools.product(*(range(len(self._choices[cols[f]])) for f in other)):
                    values = {f: self._choices[cols[f]][i] for f, i in zip(other, rest)}
                    deepest = self.space.stage_blocks(stage, hw, cin,
                                                      StageChoice(depth=max(depths), **values))
                    ms, fl, pa = self._price(deepest)
                    cum_ms, cum_fl, cum_pa = np.cumsum(ms), np.cumsum(fl), np.cumsum(pa)
                    for d, depth in enumerate(depths):
                        n = self._length(index, depth, hw, cin, values, deepest)
                        grid[(r, c, d, *rest)] = cum_ms[n - 1]
                        filled[(r, c, d, *rest)] = cum_fl[n - 1]
                        count[(r, c, d, *rest)] = n
                        params[(r, c, d, *rest)] = cum_pa[n - 1]
        return _Slot(stage.name, columns, grid, filled, count, params)

    def _length(self, index: int, depth: int, hw: int, cin: int, values: dict[str, int],
                deepest: list[BlockSpec]) -> int:
        cache = self.__dict__.setdefault("_lengths", {})
        if (index, depth) not in cache:
            blocks = self.space.stage_blocks(self.space.stages[index], hw, cin,
                                             StageChoice(depth=depth, **values))
            if [b.key for b in blocks] != [b.key for b in deepest[:len(blocks)]]:
                raise PredictorError(f"stage {self.space.stages[index].name}: a shallower stage is "
                                     f"not a prefix of the deepest; the LUT index cannot be used")
            cache[(index, depth)] = len(blocks)
        return cache[(index, depth)]

    def _head_slot(self) -> _Slot:
        last_col = self._stage_cols[-1]["width"]
        shape = (len(self.space.resolutions), len(self._choices[last_col]))
        grid, filled, count, params = np.zeros(shape), np.zeros(shape), np.ones(shape), np.zeros(shape)
        for r, res in enumerate(self.space.resolutions):
            hw = self._stage_hw(res)[-1]
            for w, width in enumerate(self._choices[last_col]):
                ms, fl, pa = self._price([self.space.head_block(hw, width)])
                grid[r, w], filled[r, w], params[r, w] = ms.sum(), fl.sum(), pa.sum()
        return _Slot("head", (0, last_col), grid, filled, count, params)

    # -------------------------------------------------------------- encoding and sums
    def encode(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        """(n, columns) int array of choice positions; a value outside the space raises ConfigError."""
        pos = self._position
        rows = []
        for config in configs:
            try:
                row = [pos[0][config.resolution], pos[1][config.stem.width],
                       pos[2][config.stem.depth], pos[3][config.stem.kernel]]
                for _stage, cols, choice in zip(self.space.stages, self._stage_cols, config.stages,
                                               strict=True):
                    for name, col in cols.items():
                        row.append(pos[col][getattr(choice, name)])
            except (KeyError, ValueError):
                self.space.validate(config)  # raises the message naming stage, field and values
                raise ConfigError(f"config {config.to_json()} is outside space "
                                  f"{self.space.name!r}") from None
            rows.append(row)
        return np.asarray(rows, dtype=np.intp).reshape(len(rows), len(self._choices))

    def sum_encoded(self, encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Summed values (NaN where a key is missing) and the number of fallback-priced blocks."""
        total, filled, _ = self.sum_encoded_with_blocks(encoded)
        return total, filled

    def sum_encoded_with_blocks(self, encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `sum_encoded`, plus the number of blocks each config executes."""
        total = np.zeros(len(encoded))
        filled = np.zeros(len(encoded))
        count = np.zeros(len(encoded))
        for slot in self.slots:
            index = tuple(encoded[:, c] for c in slot.columns)
            total += slot.grid[index]
            filled += slot.filled[index]
            count += slot.blocks[index]
        return total, filled, count

    def sum_all(self, encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Summed values, fallback-priced blocks, blocks executed and summed parameters."""
        total, filled, count, params = (np.zeros(len(encoded)) for _ in range(4))
        for slot in self.slots:
            index = tuple(encoded[:, c] for c in slot.columns)
            total += slot.grid[index]
            filled += slot.filled[index]
            count += slot.blocks[index]
            params += slot.params[index]
        return total, filled, count, params

    def sum_for_correction(self, encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per config: summed values, blocks executed and summed parameters (zero without the
        index's `params`): what a whole-model correction with a weight term needs."""
        total, count, params = (np.zeros(len(encoded)) for _ in range(3))
        for slot in self.slots:
            index = tuple(encoded[:, c] for c in slot.columns)
            total += slot.grid[index]
            count += slot.blocks[index]
            params += slot.params[index]
        return total, count, params


@dataclass(frozen=True)
class Prediction:
    """Predicted ms and, per config, whether a fallback predictor priced any part of it."""

    ms: np.ndarray
    used_fallback: np.ndarray


class LutPredictor(BlockSumPredictor):
    """Sum of table latencies over `space.blocks_of(config)`, optionally corrected per device.

    Hyper-parameters: `space` (default: the table's own), `fallback` (a fitted predictor pricing
    the blocks the table lacks: a block predictor fills them, a whole-subnet one prices the configs
    that need them) and `corrected` (apply the table's whole-model correction). `fit(table)` keeps
    the key -> ms lookup (`latency_`); the table's stored correction becomes `correction_`. The
    whole-space index is built on first use by a batch (`index_`): a few subnets are summed block
    by block instead, since building the index takes seconds on `elasticvit` (8.5 s of a 9 s
    `lutnas predict` before).
    """

    name = "lut"
    fitted_attributes = ("latency_",)
    direct_limit = 64  # batches up to this size without a built index are summed block by block

    def __init__(self, space: SearchSpace | None = None,
                 fallback: Predictor | BlockPredictor | None = None, corrected: bool = False) -> None:
        super().__init__(space)
        self.fallback = fallback
        self.corrected = corrected

    @property
    def label(self) -> str:
        return "LUT + correction" if self.corrected else "LUT"

    @classmethod
    def load(cls, table_path: str | Path, space: SearchSpace | None = None,
             fallback: Predictor | BlockPredictor | None = None, corrected: bool = False) -> LutPredictor:
        """`LutPredictor(space, fallback, corrected).fit(LatencyTable.load(table_path))`."""
        return cls(space, fallback, corrected).fit(LatencyTable.load(table_path))

    # -------------------------------------------------------------- fitting
    def fit(self, table: LatencyTable) -> LutPredictor:
        """Index `table` over the space; PredictorError when `corrected` and it has no correction."""
        self.table_ = table
        self.space_ = self.space if self.space is not None else table.load_space()
        try:
            self.correction_ = Correction.from_dict(table.correction) if table.correction else Correction()
        except PredictorError:
            if self.corrected:
                raise
            self.correction_ = Correction()  # the raw sum does not need it; as_corrected() refuses it
        if self.corrected and not table.correction:
            raise PredictorError(f"table of {table.device.device_id} has no whole-model correction; "
                                 f"build it with --calibrate K or calibrate() on measured subnets")
        latency = dict(table.lookup())
        filled: set[str] = set()
        if self.fallback is not None and isinstance(self.fallback, BlockPredictor):
            wanted = [s for s in self.space_.unique_blocks() if s.key not in latency]
            if wanted:
                values = np.asarray(self.fallback.predict_blocks(wanted), dtype=float)
                for spec, value in zip(wanted, values):
                    latency[spec.key] = float(value)
                    filled.add(spec.key)
        self.filled_keys_ = filled
        self.latency_ = latency  # key -> ms: the table's, plus what the fallback filled
        self._index: SpaceIndex | None = None
        return self

    @property
    def index_(self) -> SpaceIndex:
        """The whole-space index (per-stage grids of summed latency), built on first use."""
        if self.__dict__.get("_index") is None:
            check_fitted(self)
            params = {s.key: float(block_complexity(s).params) for s in self.space_.unique_blocks()}
            self._index = SpaceIndex(self.space_, self.latency_, self.filled_keys_, params)
        return self._index

    def _sums(self, configs: list[SubnetConfig]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per config: summed ms (NaN where a key is missing), fallback-priced blocks, blocks and
        summed parameters (the correction's weight term)."""
        if self.__dict__.get("_index") is not None or len(configs) > self.direct_limit:
            return self.index_.sum_all(self.index_.encode(configs))
        total, filled, count, params = (np.zeros(len(configs)) for _ in range(4))
        for i, config in enumerate(configs):
            for spec in self.space_.blocks_of(config):  # validates: ConfigError naming the field
                ms = self.latency_.get(spec.key)
                total[i] += ms if ms is not None and np.isfinite(ms) else np.nan
                filled[i] += spec.key in self.filled_keys_
                count[i] += 1
                params[i] += block_complexity(spec).params
        return total, filled, count, params

    def weight_mib(self, params: np.ndarray) -> np.ndarray:
        """Summed parameters -> weight MiB at the table's precision (the same figure as
        `lutnas.space.complexity.weight_mib` over the subnet's blocks)."""
        return np.asarray(params, dtype=float) * bytes_per_param(self.table_.precision) / MIB

    def _correct(self, total: np.ndarray, blocks: np.ndarray, params: np.ndarray) -> np.ndarray:
        """The table's correction applied, with each subnet's weight MiB when it has a weight term."""
        weights = self.weight_mib(params) if self.correction_.weight_ms_per_mib else None
        return self.correction_.apply(total, blocks, weights)

    @property
    def wants_calibration(self) -> bool:
        return False  # its correction is the table's, fitted by `build-table --calibrate`

    def calibrate(self, configs: Sequence[SubnetConfig], measured_ms: Sequence[float],
                  invoke_ms: float | None = None, precision: str | None = None) -> LutPredictor:
        """Fit the whole-model correction and keep it in the table's metadata (save to persist).
        `precision` is ignored: the table's own prices the weights.

        Each subnet's weight MiB (at the table's precision) makes the weight term a candidate;
        `Correction.fit` keeps it only when it lowers the leave-one-out error. PredictorError for
        mismatched lengths or a block the table lacks."""
        check_fitted(self)
        configs = list(configs)
        measured = np.asarray(measured_ms, dtype=float)
        if len(configs) != len(measured) or not configs:
            raise PredictorError(f"calibrate needs one measured latency per config, got "
                                 f"{len(configs)} configs and {len(measured)} latencies")
        sums, _, blocks = self.block_sums(configs)  # a missing key: the error naming it
        params = self._sums(configs)[3]
        self.correction_ = Correction.fit(sums, measured, blocks, invoke_ms,
                                          subnets=[subnet_key(self.space_, c) for c in configs],
                                          weight_mib=self.weight_mib(params))
        self.table_.set_correction(self.correction_.to_dict())
        return self

    def as_corrected(self) -> LutPredictor:
        """The same index with the fitted correction applied (the grids are not rebuilt)."""
        if not self.table_.correction:
            raise PredictorError("no correction fitted yet; call calibrate() or use --calibrate K")
        twin = object.__new__(LutPredictor)
        twin.__dict__.update(self.__dict__)
        twin.corrected = True
        twin.correction_ = Correction.from_dict(self.table_.correction)
        return twin

    # -------------------------------------------------------------- prediction
    def block_sums(self, configs: Sequence[SubnetConfig]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per config: the table sum (ms), its spread (0: measured figures) and its block count;
        a missing key is a PredictorError naming it."""
        check_fitted(self)
        configs = list(configs)
        total, _, blocks, _ = self._sums(configs)
        holes = np.flatnonzero(np.isnan(total))
        if holes.size:
            raise PredictorError(self._missing_message(holes.size, len(configs),
                                                       [configs[i] for i in holes]))
        return total, np.zeros_like(total), blocks

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        return self._predict(configs, self.corrected).ms

    def predict_detailed(self, configs: Sequence[SubnetConfig]) -> Prediction:
        return self._predict(configs, self.corrected)

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Fast path for search: configs already encoded with `self.index_.encode`."""
        check_fitted(self)
        total, blocks, params = self.index_.sum_for_correction(encoded)
        if np.isnan(total).any():
            raise PredictorError(self._missing_message(int(np.isnan(total).sum()), len(total), None))
        return self._correct(total, blocks, params) if self.corrected else total

    def _predict_blocks(self, specs: list[BlockSpec], use_measured: bool) -> tuple[np.ndarray, np.ndarray]:
        latency = self.latency_
        missing = [s.key for s in specs if s.key not in latency or not np.isfinite(latency[s.key])]
        if missing:
            raise PredictorError(f"{len(missing)} blocks are not in the table of "
                                 f"{self.table_.device.device_id} (e.g. {missing[0]}); profile them "
                                 f"or give a fallback predictor")
        ms = np.array([latency[s.key] for s in specs], dtype=float)
        # Table figures are measurements (spread 0); what the fallback filled has unknown spread.
        spread = np.array([np.nan if s.key in self.filled_keys_ else 0.0 for s in specs])
        return ms, spread

    def _predict(self, configs: Sequence[SubnetConfig], corrected: bool) -> Prediction:
        check_fitted(self)
        configs = list(configs)
        total, filled, blocks, params = self._sums(configs)
        used = filled > 0
        out = self._correct(total, blocks, params) if corrected else total.copy()
        holes = np.flatnonzero(np.isnan(total))
        if holes.size:
            if self.fallback is None or isinstance(self.fallback, BlockPredictor):
                raise PredictorError(self._missing_message(holes.size, len(configs),
                                                           [configs[i] for i in holes]))
            # A whole-subnet fallback prices these configs entirely; its numbers are not LUT sums,
            # so they get no LUT correction.
            out[holes] = np.asarray(self.fallback.predict([configs[i] for i in holes]), dtype=float)
            used[holes] = True
        return Prediction(out, used)

    def missing_keys(self, configs: Sequence[SubnetConfig] | None = None) -> list[str]:
        """Keys the table lacks: among `configs`' blocks, or among the whole space's."""
        check_fitted(self)
        if configs is None:
            return sorted(self.index_.missing)
        present = self.table_.lookup()
        keys = {b.key for c in configs for b in self.space_.blocks_of(c)}
        return sorted(k for k in keys if k not in present and k not in self.filled_keys_)

    def _missing_message(self, holes: int, total: int, configs: list[SubnetConfig] | None) -> str:
        keys = self.missing_keys(configs) if configs is not None else self.missing_keys()
        kinds = Counter(k.partition(":")[0] for k in keys)
        kinds_text = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        examples = ", ".join(keys[:3])
        return (f"{holes} of {total} subnets need {len(keys)} block keys missing from the table of "
                f"{self.table_.device.device_id} ({kinds_text}), e.g. {examples}; profile them with "
                f"profile-device or give a fallback predictor")

    def explain(self, config: SubnetConfig) -> pd.DataFrame:
        """The subnet's blocks in execution order with each one's latency and where it came from."""
        check_fitted(self)
        present = self.table_.frame
        fallback = getattr(self.fallback, "name", "fallback")
        rows = []
        for position, spec in enumerate(self.space_.blocks_of(config)):
            row = {"position": position, "key": spec.key, "kind": spec.kind, "ms": np.nan,
                   "cv": np.nan, "flag": "missing", "source": "missing"}
            if spec.key in present.index:
                entry = present.loc[spec.key]
                row.update(ms=float(entry["median_ms"]), cv=float(entry["cv"]), flag=entry["flag"],
                           source=entry["source"])
            elif spec.key in self.filled_keys_:
                row.update(ms=float(self.latency_[spec.key]), flag="estimated",
                           source=f"predicted:{fallback}")
            rows.append(row)
        return pd.DataFrame(rows)
