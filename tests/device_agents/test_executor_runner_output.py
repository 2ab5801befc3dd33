"""The pure parser of ExecuTorch's `executor_runner` log and the runner record built on it."""

from __future__ import annotations

import pytest

from lutnas.device_agents.base import RunSettings
from lutnas.device_agents.runner_output import STAT_AVERAGE, STAT_SAMPLE_MEDIAN, parse_executor_runner
from lutnas.device_agents.runners import EXECUTOR_RUNNER, SHELL_RUNNERS, executor_runner_args
from lutnas.errors import RunnerOutputError

# The format of examples/portable/executor_runner/executor_runner.cpp (ExecuTorch main, 2026) in the
# posix PAL's log format; the per-iteration lines are what releases after 1.x add.
NEW = """\
I 00:00:00.000512 executorch:executor_runner.cpp:339] Resetting threadpool with num threads = 1
I 00:00:00.001920 executorch:executor_runner.cpp:422] Model file /data/local/tmp/m.pte is loaded.
I 00:00:00.001933 executorch:executor_runner.cpp:468] Using method forward
I 00:00:00.001950 executorch:executor_runner.cpp:520] Setting up planned buffer 0, size 65600.
I 00:00:00.004211 executorch:executor_runner.cpp:603] Model loaded in 2.250000 ms.
I 00:00:00.005210 executorch:executor_runner.cpp:778] Iteration 1 of 4: 0.900000 ms
I 00:00:00.005520 executorch:executor_runner.cpp:778] Iteration 2 of 4: 0.300000 ms
I 00:00:00.005830 executorch:executor_runner.cpp:778] Iteration 3 of 4: 0.310000 ms
I 00:00:00.006150 executorch:executor_runner.cpp:778] Iteration 4 of 4: 0.320000 ms
I 00:00:00.006160 executorch:executor_runner.cpp:784] Model executed successfully 4 time(s) in 1.830000 ms.
I 00:00:00.006170 executorch:executor_runner.cpp:792] 1 outputs:
"""
# ExecuTorch 0.4-1.x: only the total.
OLD = """\
I 00:00:00.000466 executorch:executor_runner.cpp:82] Model file add.pte is loaded.
I 00:00:00.000476 executorch:executor_runner.cpp:91] Using method forward
I 00:00:00.000481 executorch:executor_runner.cpp:138] Setting up planned buffer 0, size 48.
I 00:00:00.000529 executorch:executor_runner.cpp:161] Method loaded.
I 00:00:00.000535 executorch:executor_runner.cpp:171] Inputs prepared.
I 00:00:00.012345 executorch:executor_runner.cpp:180] Model executed successfully 10 time(s) in 12.500000 ms.
I 00:00:00.012350 executorch:executor_runner.cpp:184] 1 outputs:
Output 0: tensor(sizes=[1], [2.])
"""


def test_new_format_gives_every_execution_and_the_load_time():
    parsed = parse_executor_runner(NEW)
    assert parsed.executions == 4 and parsed.total_us == pytest.approx(1830.0)
    assert parsed.iterations_us == pytest.approx((900.0, 300.0, 310.0, 320.0))
    assert parsed.load_us == pytest.approx(2250.0)


def test_old_format_gives_the_total_only():
    parsed = parse_executor_runner(OLD)
    assert parsed.executions == 10 and parsed.iterations_us == () and parsed.load_us is None
    assert parsed.mean_us == pytest.approx(1250.0)


def test_stats_drop_the_warmup_executions():
    stats = EXECUTOR_RUNNER.parse(NEW, RunSettings(runtime="executorch", warmup=1, runs=3))
    assert stats["samples_ms"] == pytest.approx([0.3, 0.31, 0.32])
    assert stats["median_ms"] == pytest.approx(0.31) and stats["min_ms"] == pytest.approx(0.3)
    assert stats["statistic"] == STAT_SAMPLE_MEDIAN and stats["flags"] == []


def test_a_total_only_runner_is_an_average_flagged():
    stats = EXECUTOR_RUNNER.parse(OLD, RunSettings(runtime="executorch", warmup=2, runs=8))
    assert stats["median_ms"] == pytest.approx(1.25) and stats["statistic"] == STAT_AVERAGE
    assert stats["flags"] == ["average-as-median", "warmup-included"]


def test_arguments_run_warmup_and_runs_as_one_count():
    args = executor_runner_args("/d/m.pte", RunSettings(runtime="executorch", warmup=3, runs=7, threads=2))
    assert args == ["--model_path=/d/m.pte", "--num_executions=10", "--cpu_threads=2", "--print_output=none"]
    assert SHELL_RUNNERS["executorch"] is EXECUTOR_RUNNER


@pytest.mark.parametrize("text,message", [
    ("", "posix PAL"),  # an android-PAL build logs to logcat: nothing on stdout/stderr
    ("Model executed successfully 3 times in 1 ms\n", "timing line lutnas does not read"),
    (NEW.replace("Iteration 3 of 4: 0.310000 ms", "Iteration 3 of 4: fast"), "does not read"),
    (NEW.replace("I 00:00:00.005830 executorch:executor_runner.cpp:778] Iteration 3 of 4: 0.310000 ms\n", ""),
     "3 iteration lines for 4 executions"),
    ("I 00:00:00.000466 executorch:executor_runner.cpp:82] Model file m.pte is loaded.\n"
     "F 00:00:00.000500 executorch:executor_runner.cpp:190] Execution of method forward failed with "
     "status 0x14\n", "no 'Model executed successfully' total"),
])
def test_unreadable_output_is_an_error_naming_why(text, message):
    with pytest.raises(RunnerOutputError, match=message):
        parse_executor_runner(text)
