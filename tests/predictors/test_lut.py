"""The LUT predictor: hand sums, agreement with `blocks_of`, missing keys, fallback, correction."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from lutnas.errors import ConfigError, PredictorError
from lutnas.predictors.base import Predictor
from lutnas.predictors.correction import Correction
from lutnas.predictors.lut import LutPredictor
from lutnas.space import BlockSpec, SearchSpace, SubnetConfig


def test_prediction_is_the_hand_sum_of_the_blocks(tiny_space: SearchSpace, make_table, values) -> None:
    table = make_table(tiny_space, values())
    config = tiny_space.smallest()
    blocks = tiny_space.blocks_of(config)
    hand = 0.0
    for spec in blocks:
        hand += table.latency_ms(spec.key)
    predicted = LutPredictor(tiny_space).fit(table).predict([config])
    assert predicted.shape == (1,) and predicted[0] == pytest.approx(hand, rel=1e-12)
    # a repeated block counts as often as it executes: depth 2 in stage 1 adds one more block
    deeper = SubnetConfig.from_dict(config.to_dict() | {
        "stages": [dict(config.to_dict()["stages"][0], depth=2)] + config.to_dict()["stages"][1:]})
    extra = tiny_space.blocks_of(deeper)[3]  # stem conv, stem mbconv, stage1 first, stage1 second
    assert len(tiny_space.blocks_of(deeper)) == len(blocks) + 1
    delta = LutPredictor(tiny_space).fit(table).predict([deeper])[0] - hand
    assert delta == pytest.approx(table.latency_ms(extra.key))


@pytest.mark.parametrize("space_name", ["tiny", "elasticvit"])
def test_vectorised_sum_equals_the_sum_over_blocks_of(space_name: str, make_table, values) -> None:
    space = SearchSpace.load(space_name)
    table = make_table(space, values(1))
    predictor = LutPredictor(space).fit(table)
    rng = random.Random(3)
    configs = [space.sample(rng) for _ in range(300)] + [space.smallest(), space.largest()]
    lookup = table.lookup()
    expected = [sum(lookup[b.key] for b in space.blocks_of(c)) for c in configs]
    np.testing.assert_allclose(predictor.predict(configs), expected, rtol=1e-12)
    encoded = predictor.index_.encode(configs)
    np.testing.assert_allclose(predictor.predict_encoded(encoded), expected, rtol=1e-12)


def test_config_outside_the_space_names_the_field(tiny_space: SearchSpace, make_table) -> None:
    predictor = LutPredictor(tiny_space).fit(make_table(tiny_space, lambda s: 1.0))
    data = tiny_space.smallest().to_dict()
    data["stages"][0]["width"] = 999
    with pytest.raises(ConfigError, match="stage1.*width=999"):
        predictor.predict([SubnetConfig.from_dict(data)])


def test_missing_keys_are_an_error_naming_count_and_kinds(tiny_space: SearchSpace, make_table) -> None:
    config = tiny_space.largest()
    drop = [b.key for b in tiny_space.blocks_of(config) if b.kind in ("attn", "head")]
    predictor = LutPredictor(tiny_space).fit(make_table(tiny_space, lambda s: 1.0, drop=drop))
    with pytest.raises(PredictorError) as error:
        predictor.predict([tiny_space.smallest(), config])
    message = str(error.value)
    unique = sorted(set(drop))
    assert f"need {len(unique)} block keys missing" in message
    assert "attn" in message and "head" in message and "fallback" in message
    assert predictor.missing_keys([config]) == unique


class ConstantBlocks:
    """A block-level fallback (the learned predictor's face) pricing every block at 0.5 ms."""

    name = "const"

    def predict_blocks(self, specs: Sequence[BlockSpec]) -> np.ndarray:
        return np.full(len(specs), 0.5)


class ConstantNets(Predictor):
    name = "const-net"

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        return np.full(len(configs), 42.0)


def test_block_fallback_fills_missing_keys_and_is_flagged(tiny_space: SearchSpace, make_table) -> None:
    config = tiny_space.largest()
    dropped = {b.key for b in tiny_space.blocks_of(config) if b.kind == "ffn"}
    table = make_table(tiny_space, lambda s: 1.0, drop=dropped)
    predictor = LutPredictor(tiny_space, fallback=ConstantBlocks()).fit(table)
    result = predictor.predict_detailed([config, tiny_space.smallest()])
    blocks = tiny_space.blocks_of(config)
    n_ffn = sum(b.kind == "ffn" for b in blocks)
    assert result.ms[0] == pytest.approx((len(blocks) - n_ffn) * 1.0 + n_ffn * 0.5)
    smallest_has_dropped = any(b.key in dropped for b in tiny_space.blocks_of(tiny_space.smallest()))
    assert list(result.used_fallback) == [True, smallest_has_dropped]
    explained = predictor.explain(config)
    assert set(explained[explained["kind"] == "ffn"]["source"]) == {"predicted:const"}
    assert explained["ms"].sum() == pytest.approx(result.ms[0])


def test_whole_net_fallback_prices_only_the_configs_with_holes(tiny_space: SearchSpace, make_table) -> None:
    config = tiny_space.largest()
    dropped = [tiny_space.blocks_of(config)[-1].key]  # its head
    table = make_table(tiny_space, lambda s: 1.0, drop=dropped)
    predictor = LutPredictor(tiny_space, fallback=ConstantNets()).fit(table)
    small = tiny_space.smallest()
    assert tiny_space.blocks_of(small)[-1].key not in dropped
    result = predictor.predict_detailed([config, small])
    assert result.ms[0] == 42.0 and result.ms[1] == len(tiny_space.blocks_of(small))
    assert list(result.used_fallback) == [True, False]


def test_correction_fit_recovers_scale_and_intercept() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(2.0, 10.0, 12)
    measured = 1.07 * raw + 0.35 + rng.normal(0, 0.01, 12)
    fit = Correction.fit(raw, measured)
    assert fit.scale == pytest.approx(1.07, abs=0.01)
    assert fit.intercept_ms == pytest.approx(0.35, abs=0.06)
    assert fit.n == 12 and fit.rmse_ms < 0.02
    with pytest.raises(PredictorError, match="at least 2"):
        Correction.fit(raw[:1], measured[:1])
    with pytest.raises(PredictorError, match="same LUT sum"):
        Correction.fit(np.ones(4), measured[:4])


def test_per_block_overhead_is_fitted_when_there_are_enough_subnets() -> None:
    rng = np.random.default_rng(1)
    raw = rng.uniform(2.0, 10.0, 10)
    blocks = rng.integers(10, 30, 10).astype(float)
    measured = 0.95 * raw - 0.01 * blocks + 0.2  # each isolated block over-counts 10 us
    fit = Correction.fit(raw, measured, blocks)
    assert fit.per_block_ms == pytest.approx(-0.01, abs=1e-9)
    assert fit.scale == pytest.approx(0.95) and fit.intercept_ms == pytest.approx(0.2)
    few = Correction.fit(raw[:4], measured[:4], blocks[:4])  # 3 parameters on 4 points: not fitted
    assert few.per_block_ms == 0.0


def test_fitted_correction_is_applied_and_saved_with_the_table(tiny_space: SearchSpace,
                                                              tmp_path: Path, make_table, values) -> None:
    table = make_table(tiny_space, values(2))
    predictor = LutPredictor(tiny_space).fit(table)
    rng = random.Random(0)
    configs = [tiny_space.sample(rng) for _ in range(8)]
    raw = predictor.predict(configs)
    predictor.calibrate(configs, 1.1 * raw + 0.2)
    corrected = predictor.as_corrected()
    held_out = [tiny_space.sample(rng) for _ in range(5)]
    np.testing.assert_allclose(corrected.predict(held_out), 1.1 * predictor.predict(held_out) + 0.2,
                               rtol=1e-9)
    assert corrected.correction_.per_block_ms == pytest.approx(0.0, abs=1e-9)
    assert corrected.label == "LUT + correction" and predictor.label == "LUT"
    path = table.save(tmp_path / "t.parquet")
    reloaded = LutPredictor.load(path, tiny_space, corrected=True)
    np.testing.assert_allclose(reloaded.predict(held_out), corrected.predict(held_out))
    assert len(reloaded.correction_.subnets) == 8
    with pytest.raises(PredictorError, match="--calibrate"):
        LutPredictor(tiny_space, corrected=True).fit(make_table(tiny_space, lambda s: 1.0))


def test_space_comes_from_the_table_when_not_given(tiny_space: SearchSpace, make_table) -> None:
    table = make_table(tiny_space, lambda s: 1.0)
    assert LutPredictor().fit(table).space_ == tiny_space


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_weight_term_is_applied_with_each_subnets_weight_mib(tiny_space: SearchSpace, make_table,
                                                              values, precision: str) -> None:
    """The weight MiB are the space's parameters x bytes of the table's precision, the same through
    the block-by-block path, the index, `predict_encoded` and search's cost model."""
    from lutnas.search.constraints import CostModel
    from lutnas.space.complexity import block_complexity, weight_mib

    table = make_table(tiny_space, values(4))
    table.settings["precision"] = precision
    table.set_correction(Correction(scale=1.1, overhead_ms=0.2, weight_ms_per_mib=0.5,
                                    terms=("scale", "weight_ms_per_mib", "overhead_ms"), n=9).to_dict())
    rng = random.Random(11)
    configs = [tiny_space.sample(rng) for _ in range(100)] + [tiny_space.largest()]
    lookup = table.lookup()
    size = {"fp32": 4, "fp16": 2}[precision]
    mib = [weight_mib(tiny_space.blocks_of(c), precision) for c in configs]
    params = sum(block_complexity(b).params for b in tiny_space.blocks_of(configs[-1]))
    assert mib[-1] == params * size / 2**20
    expected = [1.1 * sum(lookup[b.key] for b in tiny_space.blocks_of(c)) + 0.5 * m + 0.2
                for c, m in zip(configs, mib)]
    few = LutPredictor(tiny_space, corrected=True).fit(table)
    np.testing.assert_allclose(few.predict(configs[:5]), expected[:5], rtol=1e-12)  # block by block
    assert few.__dict__.get("_index") is None
    many = LutPredictor(tiny_space, corrected=True).fit(table)
    np.testing.assert_allclose(many.predict(configs), expected, rtol=1e-12)  # through the index
    np.testing.assert_allclose(many.predict_encoded(many.index_.encode(configs)), expected, rtol=1e-12)
    np.testing.assert_allclose(LutPredictor(tiny_space).fit(table).as_corrected().predict(configs[:3]),
                               expected[:3], rtol=1e-12)
    model = CostModel(tiny_space, many)
    assert model._encoded_latency is not None  # search prices encoded rows with the weight term
    costs = model.costs(configs)
    np.testing.assert_allclose(costs.latency_ms, expected, rtol=1e-12)


def test_calibrate_offers_the_weight_term_and_keeps_it_only_when_it_helps(tiny_space: SearchSpace,
                                                                          make_table, values) -> None:
    from lutnas.space.complexity import weight_mib

    table = make_table(tiny_space, values(5))
    predictor = LutPredictor(tiny_space).fit(table)
    rng = random.Random(2)
    configs = [tiny_space.sample(rng) for _ in range(10)]
    raw = predictor.predict(configs)
    mib = np.array([weight_mib(tiny_space.blocks_of(c)) for c in configs])
    predictor.calibrate(configs, 1.05 * raw + 0.1)  # a fixed overhead: weights explain nothing
    assert "weight_ms_per_mib" not in predictor.correction_.terms
    predictor.calibrate(configs, 1.05 * raw + 0.8 * mib)  # grows with the weights
    assert predictor.correction_.terms[:2] == ("scale", "weight_ms_per_mib")
    assert predictor.correction_.weight_ms_per_mib == pytest.approx(0.8, rel=1e-6)
    assert table.correction["weight_ms_per_mib"] == pytest.approx(0.8, rel=1e-6)
    np.testing.assert_allclose(predictor.as_corrected().predict(configs), 1.05 * raw + 0.8 * mib,
                               rtol=1e-9)
