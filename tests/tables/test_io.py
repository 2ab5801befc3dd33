"""Tables on disk: refusal of files lutnas does not understand, exports, and OFA YAML imports."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from lutnas.device_agents.base import DeviceInfo
from lutnas.errors import TableError
from lutnas.space import BlockSpec
from lutnas.tables.export import export_csv, export_json
from lutnas.tables.frame import COLUMNS
from lutnas.tables.ofa import import_ofa_yaml, ofa_key_to_lutnas
from lutnas.tables.parquet import METADATA_KEY
from lutnas.tables.table import LatencyTable, make_frame

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "ofa_note10_160_sample.yaml"
WITH_VAR = DATA / "ofa_style_with_var.yaml"
SHARED_OFA = Path(__file__).resolve().parents[3] / "shared" / "tables" / "ofa-note10"


def small_table() -> LatencyTable:
    rows = {
        "conv:hw=32,cin=3,cout=8,k=3,s=2,act=hswish": {
            "median_ms": 0.2, "mean_ms": 0.21, "std_ms": 0.01, "min_ms": 0.19, "p90_ms": 0.22,
            "trials": 5, "cv": 0.05, "flag": "settled", "kind": "conv", "source": "measured",
            "operator_ms": json.dumps({"CONV_2D": 0.15})},
        "head:hw=2,cin=64,cmid=384,chid=128,ncls=10,act=hswish": {
            "median_ms": 0.1, "mean_ms": 0.1, "std_ms": 0.0, "min_ms": 0.1, "p90_ms": math.nan,
            "trials": 1, "cv": math.nan, "flag": "unrated", "kind": "head", "source": "measured",
            "operator_ms": None},
    }
    device = DeviceInfo("host-x", "host", "test")
    settings = {"device_id": "host-x", "runtime": "tflite", "threads": 1, "core_mask": "0x1",
                "accelerator": "cpu", "warmup": 10, "runs": 50}
    return LatencyTable(make_frame(rows), device, settings, "tiny", {"correction": None})


def test_round_trip_keeps_nan_and_none(tmp_path: Path) -> None:
    table = small_table()
    loaded = LatencyTable.load(table.save(tmp_path / "t.parquet"))
    assert loaded.frame.equals(table.frame)
    assert loaded.frame.iloc[1]["operator_ms"] is None


def test_foreign_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.parquet"
    pq.write_table(pa.Table.from_pandas(pd.DataFrame({"key": ["a"], "median_ms": [1.0]})), path)
    with pytest.raises(TableError, match="not a lutnas latency table"):
        LatencyTable.load(path)


@pytest.mark.parametrize("content", [b"", b"not parquet at all", b"PAR1" + b"\x00" * 64 + b"PAR1"])
def test_corrupt_bytes_are_refused_in_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    with pytest.raises(TableError) as error:
        LatencyTable.load(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_truncated_table_is_refused(tmp_path: Path) -> None:
    path = small_table().save(tmp_path / "t.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TableError, match="not a readable Parquet file"):
        LatencyTable.load(path)


def _rewrite_metadata(path: Path, change: dict) -> None:
    arrow = pq.read_table(path)
    meta = dict(arrow.schema.metadata)
    data = json.loads(meta[METADATA_KEY])
    data.update(change)
    meta[METADATA_KEY] = json.dumps(data)
    pq.write_table(arrow.replace_schema_metadata(meta), path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = small_table().save(tmp_path / "t.parquet")
    _rewrite_metadata(path, {"schema_version": 99})
    with pytest.raises(TableError, match="schema 99, newer than.*upgrade lutnas"):
        LatencyTable.load(path)


def test_damaged_metadata_is_refused(tmp_path: Path) -> None:
    path = small_table().save(tmp_path / "t.parquet")
    arrow = pq.read_table(path)
    meta = dict(arrow.schema.metadata)
    meta[METADATA_KEY] = b"{not json"
    pq.write_table(arrow.replace_schema_metadata(meta), path)
    with pytest.raises(TableError, match="metadata is damaged"):
        LatencyTable.load(path)


def test_missing_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="build-table"):
        LatencyTable.load(tmp_path / "absent.parquet")


def test_csv_and_json_exports(tmp_path: Path) -> None:
    table = small_table()
    csv_path, meta_path = export_csv(table, tmp_path / "t.csv")
    lines = csv_path.read_text().splitlines()
    # Issue 20: the CSV is plain (no `#` line); the context is in the sidecar beside it.
    assert lines[0].startswith("key,median_ms,")
    assert meta_path == tmp_path / "t.meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["device"]["device_id"] == "host-x" and meta["settings"]["runtime"] == "tflite"
    rows = list(csv.DictReader(lines))
    assert [r["key"] for r in rows] == table.keys
    assert float(rows[0]["median_ms"]) == 0.2
    data = json.loads(export_json(table, tmp_path / "t.json").read_text())
    assert data["metadata"]["device"]["device_id"] == "host-x"
    assert data["metadata"]["schema_version"] == 1
    entry = data["entries"]["conv:hw=32,cin=3,cout=8,k=3,s=2,act=hswish"]
    assert entry["operator_ms"] == {"CONV_2D": 0.15} and entry["trials"] == 5
    assert data["entries"]["head:hw=2,cin=64,cmid=384,chid=128,ncls=10,act=hswish"]["cv"] is None


def test_ofa_key_mapping() -> None:
    key = "expanded_conv-input:80x80x24-output:40x40x32-expand:144-kernel:3-stride:2-idskip:0-se:0-hs:0"
    mapped = ofa_key_to_lutnas(key)
    assert BlockSpec.parse(mapped) == BlockSpec.make("mbconv", hw=80, cin=24, cout=32, k=3, s=2, e=6,
                                                     se=0, act="relu")
    assert ofa_key_to_lutnas("Conv-input:160x160x3-output:80x80x24") == \
        "conv:hw=160,cin=3,cout=24,k=3,s=2,act=hswish"
    assert ofa_key_to_lutnas("Logits-input:1x1x1536-output:1000") is None
    assert ofa_key_to_lutnas(key.replace("expand:144", "expand:100")) is None  # not a ratio


def test_ofa_import_of_the_real_sample(tmp_path: Path) -> None:
    raw = yaml.safe_load(SAMPLE.read_text())
    table = import_ofa_yaml([SAMPLE])
    assert len(table) == len(raw)
    assert table.metadata["unmapped_keys"] == 4  # Conv_1, Conv_2, Logits, AvgPool2D
    key = "mbconv:hw=10,cin=136,cout=136,k=5,s=1,e=3,se=1,act=hswish"
    entry = raw["expanded_conv-input:10x10x136-output:10x10x136-expand:408-kernel:5-stride:1-"
                "idskip:1-se:1-hs:1"]
    assert table.latency_ms(key) == entry["mean"]
    assert table.frame.loc[key, "trials"] == entry["count"]
    assert table.frame.loc[key, "std_ms"] == entry["std"]
    assert table.frame.loc["Logits-input:1x1x1536-output:1000", "kind"] == "foreign"
    assert set(table.frame["flag"]) == {"imported"}
    loaded = LatencyTable.load(table.save(tmp_path / "ofa.parquet"))
    assert loaded.frame.equals(table.frame)
    dropped = import_ofa_yaml([SAMPLE], keep_unmapped=False)
    assert len(dropped) == len(raw) - 4


def test_ofa_import_keeps_the_spread_of_a_variance_and_states_no_activation_it_lacks() -> None:
    """ProxylessNAS-style keys: `var` is a variance and no activation is stated, so none is assumed."""
    with pytest.raises(TableError, match=r"states no activation.*--activation"):
        import_ofa_yaml([WITH_VAR])
    table = import_ofa_yaml([WITH_VAR], activation="relu6")
    stem = "conv:hw=224,cin=3,cout=32,k=3,s=2,act=relu6"
    assert table.frame.loc[stem, "std_ms"] == pytest.approx(0.2)  # sqrt(0.040)
    assert table.frame.loc[stem, "cv"] == pytest.approx(0.2 / 1.2)
    # ProxylessNAS's expand is the ratio, and its blocks have no SE
    block = "mbconv:hw=7,cin=192,cout=320,k=5,s=1,e=6,se=0,act=relu6"
    assert table.latency_ms(block) == 5.26
    assert table.frame.loc[block, "std_ms"] == pytest.approx(math.sqrt(0.195))
    assert not any("hswish" in key for key in table.keys)
    assert table.metadata["activation_unstated_keys"] == "relu6"
    assert table.metadata["mbconv_without_shortcut"] == 2  # idskip:0: no residual, unlike lutnas's


def test_ofa_activation_from_the_file_and_unknown_ones(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("activation: relu6\n" + WITH_VAR.read_text())
    assert "conv:hw=224,cin=3,cout=32,k=3,s=2,act=relu6" in import_ofa_yaml([path]).keys
    with pytest.raises(TableError, match="is not one of"):
        import_ofa_yaml([WITH_VAR], activation="swish7")


def test_ofa_import_with_a_custom_key_map() -> None:
    table = import_ofa_yaml([SAMPLE], key_map=lambda k: "ofa:" + k.split("-")[0] if k[0] == "C" else None,
                            keep_unmapped=False)
    assert set(table.keys) == {"ofa:Conv", "ofa:Conv_1", "ofa:Conv_2"}


def test_not_an_ofa_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\n")
    with pytest.raises(TableError, match="count, mean, std"):
        import_ofa_yaml([path])


@pytest.mark.skipif(not SHARED_OFA.is_dir(), reason="../shared/tables/ofa-note10 not beside the clone")
def test_ofa_import_of_all_published_note10_tables() -> None:
    paths = sorted(SHARED_OFA.glob("*_lookup_table.yaml"))
    table = import_ofa_yaml(paths)
    entries = sum(len(yaml.safe_load(p.read_text())) for p in paths)
    assert len(paths) == 5
    # Resolutions differ, so keys do not collide across files except for the shared head parts.
    assert len(table) + table.metadata["duplicate_keys"] == entries
    kinds = table.frame["kind"].value_counts()
    assert kinds["mbconv"] > 400 and kinds["conv"] == 5
    assert (table.frame["median_ms"] > 0).all()


def test_csv_export_is_read_by_pandas_with_the_tables_columns(tmp_path: Path) -> None:
    table = small_table()
    csv_path, _ = export_csv(table, tmp_path / "out" / "t.csv")
    read = pd.read_csv(csv_path)
    assert list(read.columns) == ["key", *COLUMNS]
    assert list(read["key"]) == table.keys
    assert read["median_ms"].tolist() == table.frame["median_ms"].tolist()
    assert read["trials"].tolist() == [5, 1] and read["kind"].tolist() == ["conv", "head"]
    assert math.isnan(read.loc[1, "cv"]) and math.isnan(read.loc[1, "operator_ms"])
    assert json.loads(read.loc[0, "operator_ms"]) == {"CONV_2D": 0.15}


def test_import_ofa_command_asks_for_an_unstated_activation(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    from lutnas.cli import main

    out = tmp_path / "proxyless.parquet"
    assert main(["table", "import-ofa", str(WITH_VAR), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--activation" in err and len(err.splitlines()) == 1 and not out.exists()
    assert main(["table", "import-ofa", str(WITH_VAR), "--activation", "relu6", "--out", str(out)]) == 0
    assert "2 MBConv entries have no residual" in capsys.readouterr().out
    assert LatencyTable.load(out).frame["std_ms"].iloc[0] == pytest.approx(0.2)
