"""`lutnas build-table` and `lutnas table ...` as a user runs them, on a store of synthetic trials
(the table math is tested elsewhere; here: what a rebuild keeps, exports, and a fast start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lutnas.cli import main
from lutnas.device_agents.base import RunSettings
from lutnas.tables.frame import COLUMNS
from lutnas.tables.store import MeasurementStore
from lutnas.tables.table import LatencyTable
from tests.tables.synthetic import KEY_A, KEY_B, add_trials, device

CORRECTION = {"scale": 1.1, "intercept": 0.02, "n": 4, "rmse_ms": 0.001}


def _store(path: Path, b_medians: list[float]) -> Path:
    with MeasurementStore(path) as store:
        settings = RunSettings(runtime="tflite", threads=1)
        store.upsert_device(device())
        run = store.start_run("host-test", settings, "tiny", "block", ["test"])
        add_trials(store, run, "host-test", settings, KEY_A, [1.0, 1.1])
        add_trials(store, run, "host-test", settings, KEY_B, b_medians)
    return path


def test_rebuild_keeps_the_correction_and_predictor_files_and_says_what_changed(tmp_path, capsys):
    store, out = _store(tmp_path / "m.sqlite", [0.5]), tmp_path / "t.parquet"
    assert main(["build-table", "--store", str(store), "--out", str(out)]) == 0
    assert "rebuilt" not in capsys.readouterr().out  # a first build has nothing to compare
    table = LatencyTable.load(out)
    table.set_correction(CORRECTION)  # as `--calibrate K` leaves it
    table.save(out)
    predictor = tmp_path / "t.learned.predictor.npz"
    predictor.write_bytes(b"fitted on the previous rows")
    _store(store, [0.6])  # another trial of KEY_B moves its median
    assert main(["build-table", "--store", str(store), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 keys added, 0 removed, 1 changed (up to 10.0%); correction kept" in printed
    assert "t.learned.predictor.npz (fitted on the previous rows)" in printed
    assert LatencyTable.load(out).correction == CORRECTION and predictor.is_file()
    assert main(["table", "show", str(out)]) == 0
    assert "correction: 1.1000 x block sum +0.0200 ms" in capsys.readouterr().out
    assert main(["build-table", "--store", str(store), "--out", str(out), "--fresh"]) == 0
    printed = capsys.readouterr().out
    assert "correction dropped" in printed and "removed t.learned.predictor.npz" in printed
    assert LatencyTable.load(out).correction is None and not predictor.exists()


def test_show_prints_every_term_of_the_correction_as_predict_does(tmp_path, capsys):
    from lutnas.predictors.correction import Correction

    store, out = _store(tmp_path / "m.sqlite", [0.5]), tmp_path / "t.parquet"
    assert main(["build-table", "--store", str(store), "--out", str(out)]) == 0
    correction = Correction(scale=0.7851, weight_ms_per_mib=0.0209, invoke_ms=0.004,
                            terms=("scale", "weight_ms_per_mib"), n=6, rel_sigma=0.031)
    table = LatencyTable.load(out)
    table.set_correction(correction.to_dict())
    table.save(out)
    capsys.readouterr()
    assert main(["table", "show", str(out)]) == 0
    printed = capsys.readouterr().out
    # build-table --calibrate and predict print Correction.describe(); show prints the same line.
    assert f"correction: {correction.describe()}" in printed.replace("\n", " ")
    assert "+0.0209 ms x weight MiB" in printed and "ms x blocks" in printed
    table.set_correction({"scale": "not a number"})
    table.save(out)
    assert main(["table", "show", str(out)]) == 0  # the rest of the table is still shown
    assert "correction: unreadable: whole-model correction record is malformed" in capsys.readouterr().out


def test_rebuild_over_a_file_that_is_not_a_table_warns_and_writes(tmp_path, capsys):
    store, out = _store(tmp_path / "m.sqlite", [0.5]), tmp_path / "t.parquet"
    out.write_text("not a table")
    assert main(["build-table", "--store", str(store), "--out", str(out)]) == 0
    assert "not a readable table" in capsys.readouterr().err
    assert len(LatencyTable.load(out)) == 2


def test_export_writes_a_plain_csv_and_the_metadata_beside_it(tmp_path, capsys):
    store, out = _store(tmp_path / "m.sqlite", [0.5]), tmp_path / "t.parquet"
    assert main(["build-table", "--store", str(store), "--out", str(out)]) == 0
    csv_path, json_path = tmp_path / "e" / "t.csv", tmp_path / "e" / "t.json"
    assert main(["table", "export", str(out), "--csv", str(csv_path), "--json", str(json_path)]) == 0
    read = pd.read_csv(csv_path)
    assert list(read.columns) == ["key", *COLUMNS] and sorted(read["key"]) == sorted([KEY_A, KEY_B])
    assert read.set_index("key").loc[KEY_A, "median_ms"] == pytest.approx(1.05)
    meta = json.loads((tmp_path / "e" / "t.meta.json").read_text())
    assert meta["device"]["device_id"] == "host-test" and meta["settings"]["runtime"] == "tflite"
    assert json.loads(json_path.read_text())["metadata"]["space"] == "tiny"
    assert "t.meta.json" in capsys.readouterr().out


def test_import_ofa_writes_a_table(tmp_path, capsys):
    sample = Path(__file__).parent / "data" / "ofa_note10_160_sample.yaml"
    out = tmp_path / "ofa.parquet"
    assert main(["table", "import-ofa", str(sample), "--out", str(out), "--device-id", "note10"]) == 0
    assert "4 had no lutnas counterpart" in capsys.readouterr().out
    table = LatencyTable.load(out)
    assert table.device.device_id == "note10" and set(table.frame["flag"]) == {"imported"}


_NO_HEAVY_IMPORTS = """
import sys
from lutnas.cli import build_parser
for argv in (["table", "show", "x"], ["runs"], ["measurements"], ["build-table", "--out", "x"]):
    build_parser(argv).parse_args(argv)
heavy = sorted(m for m in ("pandas", "pyarrow", "torch", "lutnas.tables.table", "lutnas.tables.store",
                           "lutnas.profiler", "lutnas.predictors") if m in sys.modules)
print(heavy)
sys.exit(1 if heavy else 0)
"""


def test_table_and_store_commands_parse_without_pandas_or_torch():
    result = subprocess.run([sys.executable, "-c", _NO_HEAVY_IMPORTS], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stdout + result.stderr


_TABLES_ALONE = """
import sys
import lutnas.tables.diff, lutnas.tables.export, lutnas.tables.ofa, lutnas.tables.store
import lutnas.tables.table
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("lutnas.predictors",
                                                                        "lutnas.profiler")))
print(loaded)
sys.exit(1 if loaded else 0)
"""


def test_every_tables_module_imports_without_torch_predictors_or_profiler():
    result = subprocess.run([sys.executable, "-c", _TABLES_ALONE], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stdout + result.stderr
