"""nn-Meter block tables (ElasticViT's phone tables) imported as ordinary lutnas tables: every key
mapped or reported with its reason, and the released models summing to the published figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lutnas.cli import main
from lutnas.errors import TableError
from lutnas.predictors.lut import LutPredictor
from lutnas.space import BlockSpec, SearchSpace, read_config
from lutnas.tables.nnmeter import import_nnmeter_json, map_entries, nnmeter_key_to_spec
from lutnas.tables.table import LatencyTable

EXCERPT = Path(__file__).parent / "data" / "nnmeter_pixel1_excerpt.json"
# ../shared/tables/nnmeter-pixel1/README.md: ElasticViT's block list summed on the full Pixel 1 table.
PUBLISHED_MS = {"elasticvit:T1": 13.42, "elasticvit:S1": 42.56}


@pytest.fixture(scope="module")
def elasticvit() -> SearchSpace:
    return SearchSpace.load("elasticvit")


@pytest.mark.parametrize("key, block", [
    ("firstconv_128_3_16_2_3", "conv:hw=128,cin=3,cout=16,k=3,s=2,act=hswish"),
    ("conv_64_16_24_3_2_hard_swish_3_nose", "mbconv:hw=64,cin=16,cout=24,k=3,s=2,e=3,se=0,act=hswish"),
    ("conv_16_32_32_3_1_hard_swish_3_se", "mbconv:hw=16,cin=32,cout=32,k=3,s=1,e=3,se=1,act=hswish"),
    ("transds_16_32_64_2_6", "mbconv:hw=16,cin=32,cout=64,k=3,s=2,e=6,se=1,act=hswish"),
    ("transds_8_64_96_1_6", "mbconv:hw=8,cin=64,cout=96,k=3,s=1,e=6,se=1,act=hswish"),
    ("transattn_8_64_hard_swish_2_ln", "attn:hw=8,c=64,hd=16,vs=2,act=hswish"),
    # 88 wide: 88 // 16 = 5 heads of 88 // 5 = 17 (nn-Meter's rule), lutnas's attn has 88 // 17 = 5
    ("transattn_32_88_hard_swish_2_ln", "attn:hw=32,c=88,hd=17,vs=2,act=hswish"),
    ("transffn_8_64_2_hard_swish_ln", "ffn:hw=8,c=64,r=2,act=hswish"),
    ("mbpool_2_272_1984_6_hard_swish", "head:hw=2,cin=272,cmid=1632,chid=1984,ncls=1000,act=hswish"),
])
def test_each_key_form_names_one_block(key: str, block: str) -> None:
    assert nnmeter_key_to_spec(key) == BlockSpec.parse(block)


def test_unmapped_keys_carry_their_reason_and_collisions_keep_the_first() -> None:
    entries = {
        "transds_16_32_64_2_6": 0.43,
        "conv_16_32_64_6_2_hard_swish_3_se": 0.50,  # the same MBConv, as a conv-stage key
        "layernorm_8_64": 0.1,
        "conv_1_2": 0.2,
        "transffn_8_64_2_hard_swish_bn": 0.3,
        "transffn_8_64_2_silu_ln": 0.3,
        "transattn_8_8_hard_swish_2_ln": 0.1,
        "firstconv_128_3_16_2_3": -1.0,
    }
    mapped = map_entries(entries, "hswish")
    key = "mbconv:hw=16,cin=32,cout=64,k=3,s=2,e=6,se=1,act=hswish"
    assert mapped.rows == {key: 0.43}
    assert mapped.collisions == {key: {"kept": "transds_16_32_64_2_6",
                                       "values": {"transds_16_32_64_2_6": 0.43,
                                                  "conv_16_32_64_6_2_hard_swish_3_se": 0.50}}}
    reasons = {k: v["reason"] for k, v in mapped.unmapped.items()}
    assert reasons == {
        "layernorm_8_64": "unknown key kind 'layernorm'",
        "conv_1_2": "conv key not of the form nn-Meter writes",
        "transffn_8_64_2_hard_swish_bn": "transformer block with norm 'bn' (lutnas's use LayerNorm, 'ln')",
        "transffn_8_64_2_silu_ln": "activation 'silu' has no lutnas counterpart",
        "transattn_8_8_hard_swish_2_ln": "attention narrower than one 16-wide head",
        "firstconv_128_3_16_2_3": "latency is not a positive number of ms",
    }
    assert mapped.unmapped["layernorm_8_64"]["ms"] == 0.1
    assert sum(mapped.reasons().values()) == 6


def test_released_models_sum_to_the_published_pixel1_figures(elasticvit: SearchSpace) -> None:
    table = import_nnmeter_json(EXCERPT, elasticvit, "pixel1", runtime="tflite")
    assert len(table) == 338 and table.metadata["unmapped"] == {} and table.metadata["collisions"] == {}
    assert set(table.frame["flag"]) == {"imported"}
    predictor = LutPredictor(elasticvit).fit(table)
    for name, published in PUBLISHED_MS.items():
        config = read_config(elasticvit, name)
        by_hand = sum(table.latency_ms(b.key) for b in elasticvit.blocks_of(config))
        assert by_hand == pytest.approx(published, abs=0.005)
        assert predictor.predict([config])[0] == pytest.approx(by_hand)
    # the whole-space index gives the same sums as the block-by-block path of single predictions
    index = predictor.index_
    configs = [read_config(elasticvit, n) for n in PUBLISHED_MS]
    assert index.sum_encoded(index.encode(configs))[0] == pytest.approx(predictor.predict(configs))


def test_a_file_that_is_not_an_nnmeter_table_is_refused(tmp_path: Path, elasticvit: SearchSpace) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"foo_1": 1.0, "bar": 2.0}))
    with pytest.raises(TableError, match="none of its 2 keys"):
        import_nnmeter_json(path, elasticvit, "d")
    path.write_text("[1, 2]")
    with pytest.raises(TableError, match="JSON object key -> ms"):
        import_nnmeter_json(path, elasticvit, "d")


def test_import_show_predict_export_diff_from_the_command_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "pixel1.json"
    entries = json.loads(EXCERPT.read_text())
    entries.update({"layernorm_8_64": 0.1, "transffn_8_64_2_silu_ln": 0.3, "transffn_8_96_2_gelu2_ln": 0.2})
    source.write_text(json.dumps(entries))
    out = tmp_path / "pixel1.parquet"
    assert main(["table", "import-nnmeter", str(source), "--space", "elasticvit",
                 "--device-name", "pixel1", "--runtime", "tflite", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "341 keys; 338 mapped" in printed and "112 of them blocks elasticvit uses" in printed
    assert "unmapped: 3:" in printed
    assert "1  unknown key kind 'layernorm'" in printed
    assert "1  activation 'silu' has no lutnas counterpart" in printed
    table = LatencyTable.load(out)
    assert set(table.metadata["unmapped"]) == {"layernorm_8_64", "transffn_8_64_2_silu_ln",
                                               "transffn_8_96_2_gelu2_ln"}
    assert table.settings["runtime"] == "tflite" and table.device.device_id == "pixel1"

    assert main(["table", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "nan" not in shown and "None" not in shown
    assert "slowest blocks elasticvit uses" in shown and "coverage of elasticvit: 112/" in shown
    used = {b.key for b in SearchSpace.load("elasticvit").unique_blocks()}
    listed = [line.split("│")[1].strip() for line in shown.splitlines() if line.startswith("│")]
    assert listed and all(key in used for key in listed)

    assert main(["predict", "--table", str(out), "--config", "elasticvit:S1"]) == 0
    assert "LUT sum: 42.56" in capsys.readouterr().out

    exported = tmp_path / "pixel1-export.json"
    assert main(["table", "export", str(out), "--json", str(exported)]) == 0
    meta = json.loads(exported.read_text())["metadata"]
    assert meta["unmapped"]["layernorm_8_64"] == {"reason": "unknown key kind 'layernorm'", "ms": 0.1}
    copy = tmp_path / "copy.parquet"
    shutil.copy(out, copy)
    assert main(["table", "diff", str(out), str(copy)]) == 0
    assert "common keys: 338" in capsys.readouterr().out


def test_token_maps_after_a_strided_transformer_stage_round_up(elasticvit: SearchSpace) -> None:
    """ElasticViT's network takes ceil(hw / 2) after a stride-2 stage (nn-Meter's own calculator
    floors, under-pricing 160/176/224 px); the keys lutnas asks the table for follow the network."""
    config = read_config(elasticvit, "elasticvit:T2")  # 160 px: 80, 40, 20, 10, 10, 5, then 3
    attn = [b.hw for b in elasticvit.blocks_of(config) if b.kind == "attn"]
    assert config.resolution == 160 and attn[-1] == 3 and 5 in attn
    assert nnmeter_key_to_spec("transattn_3_256_hard_swish_2_ln").hw == 3
