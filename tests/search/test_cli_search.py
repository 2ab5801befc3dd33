"""`lutnas search` end to end through the CLI entry point (real table files, real supernet, real
exports and, in the slow test, a real host measurement)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lutnas.cli import main
from lutnas.space import SearchSpace, SubnetConfig

FAST = ["--population", "32", "--generations", "4", "--parents", "16", "--mutations", "8",
        "--crossovers", "8", "--seed", "1"]


def _middle_target(table: Path, space: SearchSpace) -> tuple[float, float]:
    from lutnas.predictors.lut import LutPredictor

    predictor = LutPredictor.load(table, space)
    lo, hi = predictor.predict([space.smallest(), space.largest()])
    return float(lo + 0.5 * (hi - lo)), float(0.1 * (hi - lo))


def test_proxy_search_writes_labelled_outputs(tmp_path: Path, tiny_table: Path,
                                              tiny_space: SearchSpace) -> None:
    target, window = _middle_target(tiny_table, tiny_space)
    out = tmp_path / "out"
    code = main(["search", "--space", "tiny", "--table", str(tiny_table), "--target-ms", f"{target}",
                 "--window-ms", f"{window}", "--max-params", "5M", "--max-mmacs", "150",
                 "--no-export", "--out", str(out), *FAST])
    assert code == 0
    best = json.loads((out / "best.json").read_text())
    assert "accuracy_top1" not in best and best["objective"]["is_proxy"] is True
    assert "proxy" in best["objective"]["label"] and "not accuracy" in best["objective"]["label"]
    assert target - window <= best["predicted_ms"] <= target
    config = tiny_space.validate(SubnetConfig.from_dict(best["config"]))
    assert best["params"] == tiny_space.complexity(config).params
    with open(out / "candidates.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert "proxy_mmacs" in rows[0] and "top1" not in rows[0]
    assert all(target - window <= float(r["latency_ms"]) <= target for r in rows)
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_several_targets_one_plot(tmp_path: Path, tiny_table: Path, tiny_space: SearchSpace) -> None:
    from lutnas.predictors.lut import LutPredictor

    lo, hi = LutPredictor.load(tiny_table, tiny_space).predict([tiny_space.smallest(),
                                                                tiny_space.largest()])
    targets = [lo + f * (hi - lo) for f in (0.3, 0.6, 0.9)]
    out = tmp_path / "multi"
    code = main(["search", "--space", "tiny", "--table", str(tiny_table), "--targets",
                 ",".join(f"{t:.4f}" for t in targets), "--window-ms", f"{0.1 * (hi - lo)}",
                 "--no-export", "--out", str(out), *FAST])
    assert code == 0
    winners = json.loads((out / "winners.json").read_text())
    assert [w["target_ms"] for w in winners] == [float(f"{t:.4f}") for t in targets]
    assert all(w["predicted_ms"] <= w["target_ms"] for w in winners)
    assert (out / "pareto.png").is_file()
    assert len(list(out.glob("target-*/best.json"))) == 3


def test_impossible_target_is_one_line_exit_2(tmp_path: Path, tiny_table: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lutnas", "search", "--space", "tiny", "--table", str(tiny_table),
         "--target-ms", "0.001", "--out", str(tmp_path / "x"), *FAST],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    # The proxy notice may come first (rich wraps it at the terminal's width); the error is one line.
    lines = [ln for ln in result.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and lines[0].startswith("lutnas search: error:"), result.stderr
    assert "below the fastest subnet" in lines[0] and "achievable range" in lines[0]
    assert not (tmp_path / "x" / "best.json").exists()


def test_supernet_search_uses_its_accuracy(tmp_path: Path, tiny_table: Path, tiny_space: SearchSpace,
                                           tiny_supernet: Path, one_torch_thread: None) -> None:
    from lutnas.profiler.subnets import export_winner
    from lutnas.search.constraints import CostModel
    from lutnas.search.evolution import EvolutionSettings
    from lutnas.search.objectives import supernet_objective
    from lutnas.search.pipeline import SearchJob, load_latency_model, winner_module
    from lutnas.supernet.checkpoint import load_supernet
    from lutnas.supernet.data import calibration_loader, eval_loader, load_data
    from lutnas.supernet.train import evaluate_top1

    target, window = _middle_target(tiny_table, tiny_space)
    out = tmp_path / "acc"
    code = main(["search", "--space", "tiny", "--table", str(tiny_table), "--target-ms", f"{target}",
                 "--window-ms", f"{window}", "--supernet", str(tiny_supernet), "--calib-batches", "1",
                 "--no-export", "--out", str(out), "--population", "8", "--generations", "2",
                 "--parents", "4", "--mutations", "2", "--crossovers", "2"])
    assert code == 0
    best = json.loads((out / "best.json").read_text())
    assert best["objective"]["is_proxy"] is False and "proxy" not in best
    config = SubnetConfig.from_dict(best["config"])
    # Recompute the winner's accuracy independently from the checkpoint: the same number.
    space, supernet = load_supernet(tiny_supernet)
    splits = load_data("builtin:digits", max(space.resolutions), space.num_classes)
    top1 = evaluate_top1(supernet, config, eval_loader(splits.heldout, 64),
                         calibration_loader(splits.train, 64, 1, seed=0), 1)
    assert best["accuracy_top1"] == pytest.approx(100 * top1)
    with open(out / "candidates.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert "top1" in rows[0] and all(0 <= float(r["top1"]) <= 100 for r in rows)
    assert len({r["top1"] for r in rows}) > 1  # subnets differ, so the objective is not a constant
    # Top-1 over 360 held-out digits ties often; no candidate as accurate may be faster than the winner.
    as_good = [r for r in rows if float(r["top1"]) >= float(f"{best['accuracy_top1']:.6g}")]
    assert min(float(r["latency_ms"]) for r in as_good) == pytest.approx(best["predicted_ms"], abs=1e-6)

    # The exported winner carries the supernet's weights, not the static model's seeded ones.
    bundle = supernet_objective(str(tiny_supernet), "builtin:digits", tiny_space, calib_batches=1)
    predictor, _, _ = load_latency_model(tiny_table, "lut", tiny_space)
    job = SearchJob(tiny_space, CostModel(tiny_space, predictor), bundle.objective,
                    EvolutionSettings(8, 1, 4, 2, 2), window, None, None, "t", bundle)
    files = export_winner(tiny_space, config, tmp_path / "export", winner_module(job, config),
                          formats=["onnx"])
    import onnxruntime

    x = torch.randn(2, 3, config.resolution, config.resolution)
    bundle.recalibrate(config)
    expected = bundle.supernet.extract(config).eval()(x).detach().numpy()
    session = onnxruntime.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    produced = np.concatenate([session.run(None, {"input": x[i:i + 1].numpy()})[0] for i in range(2)])
    assert np.allclose(produced, expected, atol=1e-4)


@pytest.mark.slow
def test_verify_on_local_end_to_end(tmp_path: Path) -> None:
    """Profile part of tiny on this host, build the table, search, export and measure the winner."""
    store, table = tmp_path / "store.sqlite", tmp_path / "tiny.parquet"
    assert main(["profile-device", "--device", "local", "--space", "tiny", "--runtime", "onnxruntime",
                 "--trials", "2", "--runs", "5", "--warmup", "2", "--limit", "24",
                 "--drift-bound", "1.0", "--store", str(store)]) == 0
    assert main(["build-table", "--store", str(store), "--out", str(table)]) == 0
    space = SearchSpace.load("tiny")
    from lutnas.search.pipeline import load_latency_model

    predictor, _, _ = load_latency_model(table, "lut", space)
    lo, hi = predictor.predict([space.smallest(), space.largest()])
    target = float(lo + 0.5 * (hi - lo))
    out = tmp_path / "search"
    assert main(["search", "--space", "tiny", "--table", str(table), "--target-ms", f"{target}",
                 "--window-ms", f"{0.2 * (hi - lo)}", "--out", str(out), "--verify-on", "local",
                 "--verify-trials", "2", *FAST]) == 0
    best = json.loads((out / "best.json").read_text())
    check = best["verification"]
    assert check["same_device"] is True and check["runtime"] == "onnxruntime"
    assert check["measured_ms"] > 0 and check["predicted_ms"] == pytest.approx(best["predicted_ms"])
    assert (out / "best.onnx").is_file() and (out / "best.tflite").is_file()
    # Measured as evaluate measures subnets: the table's reference block and an empty model ran in
    # the same processes (the host check), and the figure is the raw one divided by its ratio
    # when the host moved beyond 3%.
    from lutnas.tables.store import MeasurementStore

    with MeasurementStore(out / "verify.sqlite") as verify_store:
        keys = set(verify_store.measurements_frame()["key"])
    assert any(k.startswith("hostref:") for k in keys) and any(k.startswith("invoke:") for k in keys)
    host = check["host_check"]  # None where the reference block is under HOST_CHECK_MIN_MS (tiny)
    ratio = host["ratio"] if host and host["normalised"] else 1.0
    assert check["measured_ms"] == pytest.approx(check["raw_ms"] / ratio)


def test_population_alone_and_an_imported_phone_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Issue 13's done-when on a small budget: ElasticViT's Pixel 1 table (nn-Meter excerpt, the rest
    priced by the analytic fill), `--population` without the other counts, a monotone-width winner,
    and its MMACs printed next to the released model of nearest latency."""
    excerpt = Path(__file__).resolve().parents[1] / "tables" / "data" / "nnmeter_pixel1_excerpt.json"
    table = tmp_path / "pixel1.parquet"
    assert main(["table", "import-nnmeter", str(excerpt), "--space", "elasticvit", "--device-name",
                 "pixel1", "--runtime", "tflite", "--out", str(table)]) == 0
    capsys.readouterr()
    out = tmp_path / "s40"
    assert main(["search", "--space", "elasticvit", "--table", str(table), "--target-ms", "40",
                 "--population", "32", "--generations", "3", "--no-export", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.replace("\n", " ")
    assert "nearest released model by latency: elastic_S1" in printed
    best = json.loads((out / "best.json").read_text())
    assert best["search"]["parents"] == 16 and best["search"]["crossovers"] == 8
    space = SearchSpace.load("elasticvit")
    config = space.validate(SubnetConfig.from_dict(best["config"]))
    widths = space.width_chain(config)
    assert widths == sorted(widths) and 39.5 <= best["predicted_ms"] <= 40.0
    assert f"winner {best['mmacs']:.1f} MMACs" in printed


@pytest.mark.parametrize("ratios, expected", [
    ((1.01,), "1 reference block of the table (a) ran x1.010 of its table figure (within ±3%, "
              "not normalised)"),
    ((1.1, 1.2), "2 reference blocks of the table (a; b) ran x1.150 of their table figures "
                 "(median; normalised from 2.300 ms)"),
])
def test_the_host_check_line_reads_for_one_reference_and_for_several(capsys, ratios, expected):
    from types import SimpleNamespace

    from lutnas.cli.search import _print_verify_context
    from lutnas.profiler.subnets import HostCheck

    names = "; ".join("ab"[: len(ratios)])
    host = HostCheck(names, sum(ratios) / len(ratios), None, ratios=ratios)
    _print_verify_context(SimpleNamespace(host_check=host, raw_ms=2.3, static_ms=None))
    assert expected in " ".join(capsys.readouterr().out.split())
