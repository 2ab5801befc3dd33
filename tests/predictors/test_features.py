import numpy as np
import pandas as pd
import pytest
import torch

from lutnas.errors import PredictorError
from lutnas.predictors.features import (
    ANALYTIC_COLUMNS,
    block_feature_frame,
    lane_utilisation,
    measured_latencies,
    output_elements,
    spec_columns,
)
from lutnas.space import SearchSpace, block_complexity
from lutnas.supernet.blocks import build_block, example_input


def test_output_elements_match_the_built_module(tiny_space: SearchSpace) -> None:
    for spec in tiny_space.unique_blocks()[::7]:
        with torch.no_grad():
            out = build_block(spec).eval()(example_input(spec))
        assert output_elements(spec) == out.numel(), spec.key


def test_frame_per_kind_has_the_kinds_columns_and_complexity(tiny_space: SearchSpace) -> None:
    specs = [s for s in tiny_space.unique_blocks() if s.kind == "mbconv"]
    frame = block_feature_frame(specs, "mbconv")
    assert list(frame.columns) == spec_columns("mbconv")
    assert set(ANALYTIC_COLUMNS) <= set(frame.columns)
    for spec in specs[:5]:
        cost = block_complexity(spec)
        row = frame.loc[spec.key]
        assert row["macs"] == cost.macs and row["bytes_read"] == cost.bytes_read
        assert row["cin"] == spec.cin and row["act=hswish"] == 1.0
    with pytest.raises(PredictorError):
        block_feature_frame(specs[:1], "attn")


def test_union_frame_fills_absent_fields_with_zero(tiny_space: SearchSpace) -> None:
    frame = block_feature_frame(tiny_space.unique_blocks())
    assert set(frame["kind"]) == {"conv", "mbconv", "attn", "ffn", "head"}
    assert not frame.drop(columns="kind").isna().any().any()
    assert (frame.loc[frame["kind"] == "attn", "cin"] == 0).all()


def test_lane_utilisation() -> None:
    assert lane_utilisation(8, 4) == 1.0
    assert lane_utilisation(5, 4) == pytest.approx(5 / 8)


def test_measured_latencies_keeps_only_measured_blocks() -> None:
    frame = pd.DataFrame({"median_ms": [1.0, 2.0, 3.0, -1.0],
                          "source": ["measured", "predicted:learned", "measured", "measured"]},
                         index=["conv:hw=32,cin=3,cout=8,k=3,s=2,act=hswish",
                                "conv:hw=48,cin=3,cout=8,k=3,s=2,act=hswish",
                                "subnet:tiny:r32:abc", "conv:hw=48,cin=3,cout=16,k=3,s=2,act=hswish"])
    series = measured_latencies(frame)
    assert list(series.index) == ["conv:hw=32,cin=3,cout=8,k=3,s=2,act=hswish"]
    assert np.isclose(measured_latencies({"a:x": 2.0})["a:x"], 2.0)
    with pytest.raises(PredictorError, match="median_ms"):
        measured_latencies(pd.DataFrame({"ms": [1.0]}))
