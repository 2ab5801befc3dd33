"""`profile-device`, `lutnas runs`, `lutnas measurements` as a user runs them, real processes included."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lutnas.cli import main
from lutnas.tables.store import MeasurementStore

SMALL = ["--space", "tiny", "--limit", "4", "--trials", "2", "--runs", "5", "--warmup", "2",
         "--export-workers", "1"]
SCRIPTS = Path(sys.executable).parent


def _default_stop_signals() -> None:
    # A test run started in the background of a non-interactive shell inherits SIGINT ignored, and
    # Python keeps an ignored SIGINT: give the child the defaults so Ctrl-C and SIGTERM reach it as
    # a user's would. Unblocked too: the mask is inherited, and a pytest-xdist worker can spawn from
    # a thread that blocks them.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _profile(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([str(SCRIPTS / "profile-device"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_stop_signals, **kwargs)


@pytest.mark.parametrize("args,word", [
    (["--runtime", "tensorrt"], "unknown runtime"),
    (["--cores", "97"], "core"),
    (["--threads", "0"], "--threads"),
    (["--store", "/no/such/dir/m.sqlite"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, word):
    argv = ["profile-device", "--device", "local", *SMALL, "--store", str(tmp_path / "m.sqlite"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert word in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.sqlite").exists() or "--store" in args


def test_a_file_that_is_not_a_store_is_refused_untouched(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n" * 100)
    before = path.read_bytes()
    assert main(["profile-device", *SMALL, "--runtime", "onnxruntime", "--store", str(path)]) == 2
    assert "not a lutnas measurement store" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_profile_then_list_runs_and_export_csv(tmp_path, capsys):
    store = tmp_path / "m.sqlite"
    process = _profile("--device", "local", *SMALL, "--runtime", "onnxruntime", "--store", str(store))
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "profiled into" in out and "re-measured" in out
    assert main(["runs", "--store", str(store)]) == 0
    listing = capsys.readouterr().out
    assert "onnxruntime" in listing and "tiny" in listing
    (device,) = [d.device_id for d in MeasurementStore(store).devices()]
    assert main(["measurements", "--store", str(store), "--device", device]) == 0
    assert "median of trial medians" in capsys.readouterr().out
    csv = tmp_path / "m.csv"
    assert main(["measurements", "--store", str(store), "--device", device, "--csv", str(csv)]) == 0
    rows = pd.read_csv(csv)
    assert len(rows) == len(MeasurementStore(store).measurements_frame()) and rows["key"].nunique() == 4
    assert main(["measurements", "--store", str(store), "--device", "nope"]) == 2


def test_tflite_profile_in_process(tmp_path):
    store = tmp_path / "m.sqlite"
    argv = ["profile-device", "--space", "tiny", "--limit", "2", "--trials", "2", "--runs", "5",
            "--warmup", "2", "--seed", "1", "--runtime", "tflite", "--cores", "0", "--store", str(store)]
    assert main(argv) == 0
    frame = MeasurementStore(store).measurements_frame()
    assert set(frame["runner_name"]) == {"ai_edge_litert"} and set(frame["core_mask"]) == {"0x1"}
    assert frame["key"].nunique() == 2


def test_never_settled_blocks_get_one_line_of_advice(tmp_path, capsys):
    """A bound no two trials can meet flags every block never-settled; the summary then says what
    to do (README's QC table: quiet the device, more trials, or a looser --ci-bound)."""
    store = tmp_path / "m.sqlite"
    argv = ["profile-device", "--space", "tiny", "--limit", "2", "--trials", "2", "--max-trials", "2",
            "--ci-bound", "0.00001", "--runs", "5", "--warmup", "2", "--seed", "1", "--runtime",
            "onnxruntime", "--store", str(store)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    (advice,) = [line for line in out.splitlines() if "never settled" in line]
    assert "2 block(s) never settled (95% interval wider than ±0.001% after up to 2 trials)" in advice
    # ±0.001% would take millions of trials: the advice does not offer more trials
    for words in ("quiet the device", "rerun the same command: more trials will not settle"):
        assert words in advice
    assert "larger --trials" not in advice


def test_no_advice_without_flagged_blocks():
    from lutnas.cli.profile import qc_advice
    from lutnas.profiler.run import KeysResult, QualitySettings

    assert qc_advice("host", KeysResult("host", measured=4, below_resolution=2), QualitySettings()) is None
    advice = qc_advice("host", KeysResult("host", measured=4, flagged=1), QualitySettings(ci_bound=0.05))
    assert advice is not None and advice.startswith("host: 1 block(s) never settled (95% interval wider "
                                                    "than ±5% after up to 20 trials): quiet the device")
    assert "\n" not in advice
    noisy = KeysResult("host", measured=4, flagged=2, flagged_cvs=[0.05, 0.06])
    advice = qc_advice("host", noisy, QualitySettings(ci_bound=0.02))
    # the median CV of the flagged keys (upper median of two: 6%) sets the trials the bound needs
    assert "their trials vary by 6.0% (median CV), so ±2% needs ~58 trials" in advice
    for words in ("larger --trials", "--max-trials", "looser --ci-bound"):
        assert words in advice
    # 29% would need ~800 trials a block: quieting the device is the advice, not more trials
    advice = qc_advice("host", KeysResult("host", measured=4, flagged=1, flagged_cvs=[0.29]),
                       QualitySettings(ci_bound=0.02))
    assert "more trials will not settle" in advice and "larger --trials" not in advice


def _wait_for_measurements(store: Path, count: int, process: subprocess.Popen, limit_s: float = 240) -> int:
    deadline = time.time() + limit_s
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()
        if store.exists():
            try:
                conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
                (n,) = conn.execute("SELECT COUNT(*) FROM measurements").fetchone()
                conn.close()
                if n >= count:
                    return n
            except sqlite3.Error:
                pass
        time.sleep(0.1)
    raise AssertionError("no measurements appeared")


@pytest.mark.slow
def test_kill_9_loses_at_most_the_measurement_in_flight_and_a_rerun_finishes(tmp_path):
    store = tmp_path / "m.sqlite"
    args = ["--device", "local", "--space", "tiny", "--limit", "4", "--trials", "6", "--runs", "20",
            "--warmup", "2", "--runtime", "onnxruntime", "--export-workers", "1", "--cv-bound", "10",
            "--store", str(store)]
    process = _profile(*args)
    _wait_for_measurements(store, 6, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    conn = sqlite3.connect(store)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    survived = conn.execute("SELECT measurement_id, key, median_ms FROM measurements ORDER BY 1").fetchall()
    assert len(survived) >= 6 and all(m is not None for _, _, m in survived)
    conn.close()
    rerun = _profile(*args)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    after = MeasurementStore(store)
    # Every row, not only ok ones: the rerun may rightly mark rows next to a drifted reference.
    frame = after.measurements_frame(ok_only=False)
    kept = frame[frame.measurement_id <= survived[-1][0]][["measurement_id", "key", "median_ms"]]
    assert [tuple(r) for r in kept.itertuples(index=False)] == survived  # nothing taken was lost
    ok = frame[frame.status == "ok"]
    assert ok.groupby("key").size().tolist() == [6] * 4  # the rerun measured only what was missing
    assert len(after.quality_frame()) == 4


@pytest.mark.slow
@pytest.mark.parametrize("how,code", [
    ("ctrl-c", 130),  # SIGINT to profile-device alone: it stops its worker itself
    ("sigterm-group", 143),  # SIGTERM to the whole process group, as systemd and `kill -TERM -PGID` send it
])
def test_a_stopped_run_ends_cleanly_and_says_how_to_resume(tmp_path, how, code):
    store = tmp_path / "m.sqlite"
    planned = 4 * 400  # minutes of work: a poller starved by the other test process still finds it early
    process = _profile("--space", "tiny", "--limit", "4", "--trials", "400", "--runs", "20",
                       "--warmup", "2", "--runtime", "onnxruntime", "--export-workers", "1",
                       "--store", str(store))
    try:
        seen = _wait_for_measurements(store, 3, process)
        assert seen < planned / 2, f"the run was nearly done ({seen} of {planned}) before it was stopped"
        if how == "ctrl-c":
            process.send_signal(signal.SIGINT)
        else:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            raise AssertionError(f"{how}: profile-device went on measuring for 60 s after the signal: "
                                 f"{err[-1500:]}") from None
    finally:  # never leave a 1,600-measurement run behind on a 2-core machine
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == code, err[-1500:]
    assert "run the same command again" in err
    with MeasurementStore(store) as after:
        assert after.runs_frame().iloc[0].summary["interrupted"] is True
        statuses = after.measurements_frame(ok_only=False)["status"]
    # The worker the signal ended is not a file that failed.
    assert not statuses.str.contains("worker died").any(), statuses.value_counts()


@pytest.mark.slow
def test_two_profile_device_processes_share_one_store(tmp_path):
    store = tmp_path / "m.sqlite"
    common = ["--device", "local", *SMALL, "--runtime", "onnxruntime", "--store", str(store)]
    first = _profile(*common, "--cores", "0")
    second = _profile(*common, "--threads", "1")
    results = [p.communicate(timeout=300) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], results
    s = MeasurementStore(store)
    frame = s.measurements_frame(ok_only=False)
    runs = s.runs_frame()
    for run in runs.itertuples():
        assert (frame.run_id == run.run_id).sum() == run.summary["measurements"]
    assert set(frame["core_mask"]) == {"0x1", "all"}
    assert len(s.quality_frame()) == 8
