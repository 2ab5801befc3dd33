"""Issue 6's commands as a user runs them: build-table --predictor, predict --predictor, evaluate
listing every predictor, and profile-device --adaptive --table-out, on real host measurements."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lutnas.cli import main
from lutnas.predictors.serialize import predictor_path, read_predictor_file
from lutnas.profiler.plan import make_plan
from lutnas.space import SearchSpace
from lutnas.tables.table import LatencyTable

FAST = ["--space", "tiny", "--runtime", "onnxruntime", "--resolution", "32", "--trials", "2",
        "--runs", "5", "--warmup", "2", "--export-workers", "1"]
NUMBER_MS = r"(\d+\.\d+) ms"


def _predicted_ms(out: str, name: str) -> float:
    match = re.search(rf"^{name}: {NUMBER_MS}", out, flags=re.MULTILINE)
    assert match, out
    return float(match.group(1))


def test_build_table_predictor_all_then_predict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store, table = tmp_path / "m.sqlite", tmp_path / "tiny.parquet"
    assert main(["profile-device", *FAST, "--limit", "12", "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["build-table", "--store", str(store), "--out", str(table), "--predictor", "all"]) == 0
    printed = capsys.readouterr().out
    for name in ("learned", "analytic"):
        path = predictor_path(table, name)
        assert str(path) in printed.replace("\n", "")
        document, _ = read_predictor_file(path)  # verified: digest, dtypes, format
        assert document["predictor"] == name and document["extra"]["table"] == str(table)

    figures = {}
    for name in ("learned", "analytic"):
        assert main(["predict", "--table", str(table), "--predictor", name, "--config", "smallest"]) == 0
        figures[name] = _predicted_ms(capsys.readouterr().out, name)
        assert figures[name] > 0
    # The table holds 12 blocks at 32 px: the LUT cannot price the largest subnet (48 px), the
    # fitted predictors can.
    assert main(["predict", "--table", str(table), "--config", "largest"]) == 2
    capsys.readouterr()
    assert main(["predict", "--table", str(table), "--predictor", "analytic", "--config", "largest",
                 "--explain"]) == 0
    out = capsys.readouterr().out
    assert _predicted_ms(out, "analytic") > figures["analytic"]  # largest costs more than smallest
    assert "bound" in out and re.search(r"\b(compute|memory|overhead)\b", out)

    # A predictor that was never saved: one line naming the command that makes it, exit 2.
    assert main(["build-table", "--store", str(store), "--out", str(tmp_path / "bare.parquet")]) == 0
    capsys.readouterr()
    assert main(["predict", "--table", str(tmp_path / "bare.parquet"), "--predictor", "learned",
                 "--config", "smallest"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "build-table" in err and "--predictor learned" in err


def test_adaptive_profile_completes_a_table_that_predict_and_evaluate_use(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The error bound is loose so the run stops after its first prequential check (initial
    covering sample + one batch); were the host so noisy that it did not, the 0.5-minute budget
    still stops it before all 50 blocks (about a second each here)."""
    store, table_path = tmp_path / "m.sqlite", tmp_path / "adaptive.parquet"
    assert main(["profile-device", *FAST, "--adaptive", "--budget-minutes", "0.5", "--error-bound",
                 "0.9", "--store", str(store), "--table-out", str(table_path)]) == 0
    printed = capsys.readouterr().out
    assert "stopped:" in printed
    table = LatencyTable.load(table_path)
    plan = make_plan(SearchSpace.load("tiny"), [32]).blocks
    assert set(table.keys) == {s.key for s in plan}
    sources = table.frame["source"].value_counts()
    assert 0 < sources["measured"] < len(plan)
    assert sources["predicted:learned"] == len(plan) - sources["measured"]
    assert (table.frame["median_ms"] > 0).all()
    assert table.metadata["adaptive"]["measured"] == sources["measured"]
    assert predictor_path(table_path, "learned").is_file()

    assert main(["predict", "--table", str(table_path), "--predictor", "learned", "--config",
                 "smallest", "--explain"]) == 0
    assert _predicted_ms(capsys.readouterr().out, "learned") > 0

    out_json = tmp_path / "eval.json"
    assert main(["evaluate", "--device", "local", "--table", str(table_path), "--samples", "3",
                 "--trials", "2", "--store", str(store), "--json", str(out_json),
                 "--plot", str(tmp_path / "eval.png")]) == 0
    printed = capsys.readouterr().out
    assert "learned" in printed and "analytic" in printed
    reports = {r["predictor"]: r for r in json.loads(out_json.read_text())["reports"]}
    assert {"LUT", "FLOPs-linear", "learned", "analytic"} <= set(reports)
    assert all(r["n"] == 3 for r in reports.values())


@pytest.mark.parametrize("extra,needle", [
    (["--adaptive"], "--budget-minutes"),
    (["--adaptive", "--budget-minutes", "0"], "positive"),
    (["--adaptive", "--budget-minutes", "1", "--error-bound", "2"], "--error-bound"),
    (["--adaptive", "--budget-minutes", "1", "--limit", "3"], "--limit"),
    (["--budget-minutes", "1"], "--adaptive"),
    (["--table-out", "t.parquet"], "--adaptive"),
])
def test_adaptive_flags_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            extra: list[str], needle: str) -> None:
    store = tmp_path / "m.sqlite"
    assert main(["profile-device", *FAST, "--store", str(store), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not store.exists()


def _choices(argv: list[str], option: str) -> tuple[str, ...]:
    from lutnas.cli import build_parser

    parser = build_parser(argv)
    command = next(a for a in parser._subparsers._group_actions[0].choices.items()  # noqa: SLF001
                   if a[0] == argv[0])[1]
    return tuple(next(a for a in command._actions if option in a.option_strings).choices)  # noqa: SLF001


def test_predictor_choices_come_from_the_one_registry() -> None:
    from lutnas.predictors.registry import fittable_names, saved_names
    from lutnas.search.pipeline import FILLS, PREDICTORS

    assert _choices(["predict"], "--predictor") == ("lut", *saved_names())
    assert _choices(["build-table"], "--predictor") == (*fittable_names(), "all")
    assert _choices(["search"], "--predictor") == PREDICTORS == ("lut", *fittable_names())
    assert _choices(["search"], "--fill") == FILLS == (*fittable_names(), "none")


def test_predictor_commands_import_no_heavy_module_at_start_up() -> None:
    """evaluate, predict and transfer import none of pandas, torch, scikit-learn, scipy or
    rich.progress until their command runs (a fresh interpreter: other tests imported them here)."""
    import subprocess
    import sys

    heavy = ("torch", "pandas", "sklearn", "scipy", "onnxruntime", "rich.progress")
    probe = ("import sys, lutnas.cli.evaluate, lutnas.cli.predict, lutnas.cli.transfer; "
             f"print([m for m in {heavy!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
