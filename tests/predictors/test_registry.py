"""The predictor contract (scikit-learn's shape) held for every registered predictor, and the one
registry that build, save, load and the CLI read."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

from lutnas.errors import PredictorError
from lutnas.predictors import registry
from lutnas.predictors.base import Predictor, check_fitted
from lutnas.predictors.blocksum import BlockSumPredictor
from lutnas.predictors.lut import LutPredictor
from lutnas.space import SearchSpace


def test_names_follow_from_the_classes() -> None:
    assert registry.saved_names() == ("analytic", "learned", "transfer")
    assert registry.fittable_names() == ("analytic", "learned")
    assert registry.entry("lut+correction").params == {"corrected": True}
    with pytest.raises(PredictorError, match="unknown predictor 'nope'; known: lut, lut\\+correction"):
        registry.entry("nope")
    with pytest.raises(PredictorError, match="already registered"):
        registry.register_predictor("lut", LutPredictor)
    with pytest.raises(PredictorError, match="not fitted from one table"):
        registry.fit_for_table("transfer", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(registry._REGISTRY))
def test_hyper_parameters_are_stored_unchanged_and_nothing_is_learned_in_init(
        name: str, tiny_space: SearchSpace) -> None:
    item = registry.entry(name)
    predictor = item.create(tiny_space)
    assert isinstance(predictor, Predictor) and predictor.name == item.cls.name
    for param in inspect.signature(item.cls.__init__).parameters.values():
        if param.name == "self":
            continue
        expected = tiny_space if param.name == "space" else item.params.get(param.name, param.default)
        assert getattr(predictor, param.name) is expected or getattr(predictor, param.name) == expected
    learned = [k for k in vars(predictor) if k.endswith("_") and not k.startswith("_")]
    assert not learned, f"{name} learns in its constructor: {learned}"
    with pytest.raises(PredictorError, match=f"not fitted; call {re.escape(item.cls.fit_hint)} first"):
        check_fitted(predictor)
    with pytest.raises(PredictorError, match="not fitted"):
        predictor.predict([tiny_space.smallest()])
    if isinstance(predictor, BlockSumPredictor):
        with pytest.raises(PredictorError, match="not fitted"):
            predictor.predict_blocks([b.key for b in tiny_space.blocks_of(tiny_space.smallest())])


def test_fit_returns_self_and_blocks_have_one_face(tiny_space: SearchSpace, make_table, values) -> None:
    table = make_table(tiny_space, values(7))
    config = tiny_space.largest()
    specs = tiny_space.blocks_of(config)
    for name in ("lut", "flops-linear", "analytic", "learned"):
        predictor = registry.entry(name).create(tiny_space)
        assert predictor.fit(table) is predictor
        ms = predictor.predict([config])
        assert ms.shape == (1,) and ms.dtype == np.float64 and ms[0] > 0
        if isinstance(predictor, BlockSumPredictor):
            blocks, spread = predictor.predict_blocks(specs, return_spread=True)
            assert blocks.shape == spread.shape == (len(specs),)
            np.testing.assert_allclose(predictor.predict_blocks(specs), blocks)
            assert predictor.predict([config])[0] == pytest.approx(blocks.sum())  # not calibrated
