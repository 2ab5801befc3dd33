"""The lookup-table predictor: a subnet's latency is the sum of its blocks' table latencies.

Search prices millions of subnets, so the sum is not taken block by block. A subnet's blocks in one
stage depend only on the resolution, the stage's input width (the previous stage's width choice)
and the stage's own choices, so each stage's summed latency is precomputed once into a dense grid
over those choices; a prediction is then one fancy-indexing lookup per stage on an integer encoding
of the configs. The grids are built from the space's own `stem_blocks` / `stage_blocks` /
`head_block`, the functions `blocks_of` composes, and a test holds the grid sum to the plain sum over
`blocks_of`, so the index can never drift from what a subnet executes.

The sum of isolated blocks misses per-inference overhead and cache effects between blocks; a
whole-model correction `scale * sum + intercept`, fitted by least squares on a few subnets measured
end to end, is stored in the table's metadata and applied when `corrected=True`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lutnas.errors import ConfigError, PredictorError
from lutnas.predictors.base import BlockPredictor, Predictor, PredictorContext, register_predictor
from lutnas.space import STEM_FIELDS, BlockSpec, SearchSpace, StageChoice, SubnetConfig, conv_out
from lutnas.tables.table import LatencyTable


@dataclass
class _Slot:
    """One part of every subnet (stem, a stage, head) and its summed latency over its choices."""

    name: str
    columns: tuple[int, ...]  # columns of the config encoding that index `grid`
    grid: np.ndarray  # summed ms; NaN where a block is missing
    filled: np.ndarray  # number of blocks priced by the fallback block predictor
    blocks: np.ndarray  # number of blocks executed (for the per-block overhead term)


class SpaceIndex:
    """Integer encoding of configs and per-slot latency grids for one space and one key pricing."""

    def __init__(self, space: SearchSpace, latency: dict[str, float], filled: set[str]) -> None:
        self.space = space
        self._latency, self._filled = latency, filled
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
    def _price(self, blocks: Sequence[BlockSpec]) -> tuple[np.ndarray, np.ndarray]:
        ms = np.empty(len(blocks))
        filled = np.zeros(len(blocks))
        for i, spec in enumerate(blocks):
            key = spec.key
            value = self._latency.get(key)
            if value is None or not np.isfinite(value):
                self.missing.add(key)
                ms[i] = np.nan
            else:
                ms[i] = value
                filled[i] = key in self._filled
        return ms, filled

    def _stage_hw(self, resolution: int) -> list[int]:
        hw = [conv_out(resolution, self.space.stem.stride)]
        for stage in self.space.stages:
            hw.append(conv_out(hw[-1], stage.stride))
        return hw

    def _stem_slot(self) -> _Slot:
        shape = tuple(len(self._choices[c]) for c in range(4))
        grid, filled, count = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        for idx in itertools.product(*(range(n) for n in shape)):
            res, width, depth, kernel = (self._choices[c][i] for c, i in enumerate(idx))
            ms, fl = self._price(self.space.stem_blocks(res, width, depth, kernel))
            grid[idx], filled[idx], count[idx] = ms.sum(), fl.sum(), len(ms)
        return _Slot("stem", (0, 1, 2, 3), grid, filled, count)

    def _stage_slot(self, index: int) -> _Slot:
        stage = self.space.stages[index]
        fields = stage.fields  # depth first
        cols = self._stage_cols[index]
        cin_col = 1 if index == 0 else self._stage_cols[index - 1]["width"]
        columns = (0, cin_col, *(cols[f] for f in fields))
        shape = tuple(len(self._choices[c]) for c in columns)
        grid, filled, count = np.zeros(shape), np.zeros(shape), np.zeros(shape)
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
                    ms, fl = self._price(deepest)
                    cum_ms, cum_fl = np.cumsum(ms), np.cumsum(fl)
                    for d, depth in enumerate(depths):
                        n = self._length(index, depth, hw, cin, values, deepest)
                        grid[(r, c, d, *rest)] = cum_ms[n - 1]
                        filled[(r, c, d, *rest)] = cum_fl[n - 1]
                        count[(r, c, d, *rest)] = n
        return _Slot(stage.name, columns, grid, filled, count)

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
        grid, filled, count = np.zeros(shape), np.zeros(shape), np.ones(shape)
        for r, res in enumerate(self.space.resolutions):
            hw = self._stage_hw(res)[-1]
            for w, width in enumerate(self._choices[last_col]):
                ms, fl = self._price([self.space.head_block(hw, width)])
                grid[r, w], filled[r, w] = ms.sum(), fl.sum()
        return _Slot("head", (0, last_col), grid, filled, count)

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


@dataclass(frozen=True)
class Prediction:
    """Predicted ms and, per config, whether a fallback predictor priced any part of it."""

    ms: np.ndarray
    used_fallback: np.ndarray


# Below this many calibration subnets only scale and intercept are fitted: three parameters on three
# points would fit the noise exactly.
MIN_FOR_PER_BLOCK = 5


def fit_correction(raw_ms: np.ndarray, measured_ms: np.ndarray,
                   blocks: np.ndarray | None = None) -> dict[str, float]:
    """Least squares `measured ~ scale * raw + per_block_ms * blocks + intercept`.

    Each block was measured alone, so each LUT entry carries one inference's fixed cost (interpreter
    invoke, input copy) that a whole model pays once: the sum over-counts it once per block. With
    block counts and at least MIN_FOR_PER_BLOCK subnets a per-block term models that (on this host,
    tiny, tflite: leave-one-out MAPE 4.1% -> 2.6% on 40 subnets); otherwise it is 0.
    """
    raw_ms, measured_ms = np.asarray(raw_ms, float), np.asarray(measured_ms, float)
    if raw_ms.shape != measured_ms.shape or raw_ms.ndim != 1:
        raise PredictorError(f"correction needs equal 1-D arrays, got {raw_ms.shape} and "
                             f"{measured_ms.shape}")
    ok = np.isfinite(raw_ms) & np.isfinite(measured_ms)
    if ok.sum() < 2:
        raise PredictorError(f"a scale and intercept need at least 2 measured subnets, got "
                             f"{int(ok.sum())}; use --calibrate 2 or more (5-10 is better)")
    x, y = raw_ms[ok], measured_ms[ok]
    if np.ptp(x) <= 1e-9 * max(1.0, float(np.abs(x).max())):
        raise PredictorError("the calibration subnets all have the same LUT sum; sample more "
                             "varied subnets (another --seed)")
    columns = [x, np.ones_like(x)]
    n = np.asarray(blocks, float)[ok] if blocks is not None else None
    use_blocks = n is not None and ok.sum() >= MIN_FOR_PER_BLOCK and np.ptp(n) > 0
    if use_blocks:
        columns.append(n)
    design = np.column_stack(columns)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return {"scale": float(coef[0]), "intercept": float(coef[1]),
            "per_block_ms": float(coef[2]) if use_blocks else 0.0, "n": int(ok.sum()),
            "rmse_ms": float(np.sqrt(np.mean(residual ** 2)))}


class LutPredictor(Predictor):
    """Sum of table latencies over `space.blocks_of(config)`, optionally corrected per device."""

    def __init__(self, table: LatencyTable, space: SearchSpace | None = None,
                 fallback: Predictor | BlockPredictor | None = None, corrected: bool = False) -> None:
        self.table = table
        self.space = space if space is not None else table.load_space()
        self.fallback = fallback
        self.corrected = corrected
        self.correction_: dict[str, Any] | None = table.correction
        if corrected and not self.correction_:
            raise PredictorError(f"table of {table.device.device_id} has no whole-model correction; "
                                 f"build it with --calibrate K or fit() on measured subnets")
        latency = dict(table.lookup())
        filled: set[str] = set()
        if fallback is not None and isinstance(fallback, BlockPredictor):
            wanted = [s for s in self.space.unique_blocks() if s.key not in latency]
            if wanted:
                values = np.asarray(fallback.predict_blocks(wanted), dtype=float)
                for spec, value in zip(wanted, values):
                    latency[spec.key] = float(value)
                    filled.add(spec.key)
        self.filled_keys = filled
        self.index = SpaceIndex(self.space, latency, filled)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "LUT + correction" if self.corrected else "LUT"

    @classmethod
    def load(cls, table_path: str | Path, space: SearchSpace | None = None,
             fallback: Predictor | BlockPredictor | None = None,
             corrected: bool = False) -> "LutPredictor":
        return cls(LatencyTable.load(table_path), space, fallback, corrected)

    # -------------------------------------------------------------- fitting
    def fit(self, configs: Sequence[SubnetConfig], measured_ms: Sequence[float]) -> "LutPredictor":
        """Fit the whole-model correction and keep it in the table's metadata (save to persist)."""
        raw = self.predict_raw(configs)
        blocks = self.index.sum_encoded_with_blocks(self.index.encode(list(configs)))[2]
        correction = fit_correction(raw, np.asarray(measured_ms, dtype=float), blocks)
        from lutnas.profiler.export import subnet_key

        correction["subnets"] = [subnet_key(self.space, c) for c in configs]
        self.correction_ = correction
        self.table.set_correction(correction)
        return self

    def as_corrected(self) -> "LutPredictor":
        """The same index with the fitted correction applied (the grids are not rebuilt)."""
        if not self.correction_:
            raise PredictorError("no correction fitted yet; call fit() or use --calibrate K")
        twin = object.__new__(LutPredictor)
        twin.__dict__.update(self.__dict__)
        twin.corrected = True
        return twin

    # -------------------------------------------------------------- prediction
    def predict_raw(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        """The plain sum of block latencies (no correction), missing keys handled as in predict."""
        return self._predict(configs, corrected=False).ms

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        return self._predict(configs, self.corrected).ms

    def predict_detailed(self, configs: Sequence[SubnetConfig]) -> Prediction:
        return self._predict(configs, self.corrected)

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Fast path for search: configs already encoded with `self.index.encode`."""
        total, _, blocks = self.index.sum_encoded_with_blocks(encoded)
        if np.isnan(total).any():
            raise PredictorError(self._missing_message(int(np.isnan(total).sum()), len(total), None))
        return self._apply(total, blocks) if self.corrected else total

    def _apply(self, raw: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        c = self.correction_ or {}
        return (c.get("scale", 1.0) * raw + c.get("per_block_ms", 0.0) * blocks
                + c.get("intercept", 0.0))

    def _predict(self, configs: Sequence[SubnetConfig], corrected: bool) -> Prediction:
        configs = list(configs)
        total, filled, blocks = self.index.sum_encoded_with_blocks(self.index.encode(configs))
        used = filled > 0
        holes = np.flatnonzero(np.isnan(total))
        if holes.size:
            if self.fallback is None or isinstance(self.fallback, BlockPredictor):
                raise PredictorError(self._missing_message(holes.size, len(configs),
                                                           [configs[i] for i in holes]))
            # A whole-subnet fallback prices these configs entirely; its numbers are not LUT sums,
            # so they get no LUT correction.
            estimate = np.asarray(self.fallback.predict([configs[i] for i in holes]), dtype=float)
            out = self._apply(total, blocks) if corrected else total.copy()
            out[holes] = estimate
            used[holes] = True
            return Prediction(out, used)
        return Prediction(self._apply(total, blocks) if corrected else total, used)

    def missing_keys(self, configs: Sequence[SubnetConfig] | None = None) -> list[str]:
        """Keys the table lacks: among `configs`' blocks, or among the whole space's."""
        if configs is None:
            return sorted(self.index.missing)
        present = self.table.lookup()
        keys = {b.key for c in configs for b in self.space.blocks_of(c)}
        return sorted(k for k in keys if k not in present and k not in self.filled_keys)

    def _missing_message(self, holes: int, total: int, configs: list[SubnetConfig] | None) -> str:
        keys = self.missing_keys(configs) if configs is not None else self.missing_keys()
        kinds = Counter(k.partition(":")[0] for k in keys)
        kinds_text = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        examples = ", ".join(keys[:3])
        return (f"{holes} of {total} subnets need {len(keys)} block keys missing from the table of "
                f"{self.table.device.device_id} ({kinds_text}), e.g. {examples}; profile them with "
                f"profile-device or give a fallback predictor")

    def explain(self, config: SubnetConfig) -> pd.DataFrame:
        """The subnet's blocks in execution order with each one's latency and where it came from."""
        present = self.table.frame
        rows = []
        for position, spec in enumerate(self.space.blocks_of(config)):
            if spec.key in present.index:
                row = present.loc[spec.key]
                rows.append({"position": position, "key": spec.key, "kind": spec.kind,
                             "ms": float(row["median_ms"]), "cv": float(row["cv"]),
                             "flag": row["flag"], "source": row["source"]})
            elif spec.key in self.filled_keys:
                rows.append({"position": position, "key": spec.key, "kind": spec.kind,
                             "ms": float(self.index._latency[spec.key]), "cv": np.nan,
                             "flag": "estimated",
                             "source": f"predicted:{getattr(self.fallback, 'name', 'fallback')}"})
            else:
                rows.append({"position": position, "key": spec.key, "kind": spec.kind,
                             "ms": np.nan, "cv": np.nan, "flag": "missing", "source": "missing"})
        return pd.DataFrame(rows)


def _lut_builder(context: PredictorContext) -> Predictor | None:
    return LutPredictor(context.table, context.space)


def _lut_corrected_builder(context: PredictorContext) -> Predictor | None:
    if context.table.correction:
        return LutPredictor(context.table, context.space, corrected=True)
    if len(context.calibration_configs) >= 2:
        return LutPredictor(context.table, context.space).fit(
            context.calibration_configs, context.calibration_ms).as_corrected()
    return None


register_predictor("lut", _lut_builder)
register_predictor("lut+correction", _lut_corrected_builder)
