"""`--pace` end to end on the host as a user runs it: profile, calibrate and evaluate all pace their
trials with the same pace model, and the table records that it is paced and in which unit."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from lutnas.cli import main
from lutnas.tables.store import MeasurementStore
from lutnas.tables.table import LatencyTable

TINY_32 = resources.files("lutnas.space.builtin").joinpath("tiny.yaml").read_text() \
    .replace("name: tiny", "name: tiny32").replace("resolutions: [32, 48]", "resolutions: [32]")


@pytest.mark.slow
def test_a_paced_store_calibrates_and_evaluates_paced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    space = tmp_path / "tiny32.yaml"
    space.write_text(TINY_32)
    assert "resolutions: [32]" in space.read_text()
    store, table = tmp_path / "m.sqlite", tmp_path / "t.parquet"
    assert main(["profile-device", "--space", str(space), "--runtime", "onnxruntime", "--pace",
                 "--trials", "2", "--max-trials", "2", "--runs", "5", "--warmup", "2",
                 "--export-workers", "1", "--store", str(store)]) == 0
    assert main(["build-table", "--store", str(store), "--out", str(table), "--calibrate", "3",
                 "--trials", "2"]) == 0
    loaded = LatencyTable.load(table)
    assert loaded.run_settings().pace is True and "paced=yes" in loaded.describe_settings()
    (sha,) = loaded.metadata["pace_scales_ms"]
    assert 0.5 <= loaded.correction["scale"] <= 2.0
    assert main(["evaluate", "--table", str(table), "--samples", "3", "--trials", "2", "--store",
                 str(store), "--plot", str(tmp_path / "e.png")]) == 0
    assert "paced=yes" in capsys.readouterr().out
    with MeasurementStore(store) as opened:
        frame = opened.measurements_frame()
    # blocks, calibration and held-out subnets and their host checks: every trial paced alike
    assert {"subnet", "hostcheck"} <= set(frame["kind"]) and len(frame["run_id"].unique()) == 3
    assert frame["pace_ms"].gt(0).all() and set(frame["pace_sha256"]) == {sha}
