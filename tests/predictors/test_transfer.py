import json

import numpy as np
import pytest

from lutnas.cli import main
from lutnas.errors import PredictorError
from lutnas.predictors.serialize import load_predictor_file, save_predictor
from lutnas.predictors.transfer import TransferPredictor, choose_samples, transfer_report
from lutnas.tables.table import LatencyTable
from tests.predictors.host_data import as_table, host_latencies


@pytest.fixture(scope="module")
def runtimes() -> tuple[dict[str, float], dict[str, float]]:
    """onnxruntime (device A) and torch (device B) on this host: two runtimes as two devices."""
    return host_latencies("onnxruntime"), host_latencies("torch")


def test_samples_span_kinds(runtimes) -> None:
    a, _ = runtimes
    samples = choose_samples(a, 12)
    assert len(samples) == 12
    assert {s.kind for s in samples} == {k.partition(":")[0] for k in a}
    with pytest.raises(PredictorError):
        choose_samples(a, 2)


def test_transfer_between_two_host_runtimes(runtimes) -> None:
    a, b = runtimes
    samples = choose_samples(a, 24, seed=0)
    predictor = TransferPredictor().fit(as_table(a, "onnxruntime"), {s.key: b[s.key] for s in samples})
    report = transfer_report(predictor, b)
    assert report["heldout"] == len(b) - 24
    # A single global scale B = A x median(B/A) is the naive transfer; the per-kind one must beat it.
    ratio = np.median([b[s.key] / a[s.key] for s in samples])
    held = [k for k in b if k not in predictor.measured_]
    naive = float(np.mean([abs(a[k] * ratio - b[k]) / b[k] for k in held]))
    # The claim is the comparison on the same measurements; the absolute bound only catches a broken
    # fit: these µs blocks, timed in-process, moved the MAPE to 25.4% in one quiet clean-clone CI run.
    assert report["mape"] < naive and report["mape"] < 0.5
    table = predictor.predict_table()
    assert (table["source"] == "measured").sum() == 24 and len(table) == len(a)


def test_round_trip_and_unknown_keys(runtimes, tmp_path) -> None:
    a, b = runtimes
    predictor = TransferPredictor().fit(a, {s.key: b[s.key] for s in choose_samples(a, 16)})
    loaded = load_predictor_file(save_predictor(predictor, tmp_path / "t.predictor.npz"))
    keys = sorted(a)
    assert np.array_equal(loaded.predict_blocks(keys), predictor.predict_blocks(keys))
    with pytest.raises(PredictorError, match="not in table A"):
        predictor.predict_blocks(["ffn:hw=64,c=256,r=4,act=hswish"])


def test_cli_transfer_to_a_measured_table(runtimes, tmp_path, capsys) -> None:
    a, b = runtimes
    as_table(a, "onnxruntime", "host-a").save(tmp_path / "a.parquet")
    as_table(b, "torch", "host-b").save(tmp_path / "b.parquet")
    code = main(["transfer", "--from", str(tmp_path / "a.parquet"), "--to-table",
                 str(tmp_path / "b.parquet"), "--samples", "20", "--out", str(tmp_path / "out.parquet"),
                 "--json", str(tmp_path / "report.json")])
    assert code == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "held-out error on 28 blocks" in out and '"mape"' not in out  # a table, not JSON too
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["heldout"] == 28 and set(report["by_kind"]) and 0 <= report["within_5pct"] <= 1
    table = LatencyTable.load(tmp_path / "out.parquet")
    assert table.device.device_id == "host-b" and len(table) == len(a)
    assert (table.frame["source"] == "measured").sum() == 20
    assert (tmp_path / "out.transfer.predictor.npz").is_file()
    assert main(["transfer", "--from", str(tmp_path / "nope.parquet"), "--to-table",
                 str(tmp_path / "b.parquet"), "--out", str(tmp_path / "x.parquet")]) == 2
