"""Every runner output of ../shared/runner-output (copied into data/ and data/field/) gives the right
result listed in its README, through the parsers and the runner records that turn them into
Measurement fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from lutnas.device_agents.base import RunSettings
from lutnas.device_agents.policy import is_deterministic
from lutnas.device_agents.runner_output import (
    STAT_AVERAGE,
    STAT_RUNNER_MEDIAN,
    failure_line,
    is_deterministic_failure,
    parse_benchmark_model,
    parse_delegation_line,
    parse_onnxruntime_perf_test,
    strip_prefixes,
    to_us,
)
from lutnas.device_agents.runners import benchmark_model_stats, perf_test_stats
from lutnas.errors import RunnerOutputError

DATA = Path(__file__).parent / "data"
FIELD = DATA / "field"
CPU = RunSettings()
GPU = RunSettings(accelerator="gpu")


def read(name: str) -> str:
    return (FIELD / name).read_text()


def test_every_field_file_is_covered():
    covered = {"info-prefixed.txt", "gpu-delegate-not-applied.txt", "missing-builtin-op.txt",
               "litert-compiled-model.txt", "tf1-summary.txt", "op-profiling-tf24.txt",
               "ort-perf-test-1.3.txt", "runner-wrong-abi.sh", "README.md"}
    assert {p.name for p in FIELD.iterdir()} == covered


def test_info_prefixed_stores_the_timed_runs_median_not_the_average():
    stats = benchmark_model_stats(read("info-prefixed.txt"), CPU)
    assert stats["median_ms"] == pytest.approx(0.205)
    assert stats["std_ms"] == pytest.approx(0.038) and stats["min_ms"] == pytest.approx(0.188)
    assert stats["mean_ms"] == pytest.approx(0.2237)
    assert stats["statistic"] == STAT_RUNNER_MEDIAN and stats["flags"] == []


def test_gpu_delegate_not_applied_fails_quoting_the_runner_and_will_not_be_retried():
    with pytest.raises(RunnerOutputError) as info:
        benchmark_model_stats(read("gpu-delegate-not-applied.txt"), GPU)
    message = str(info.value)
    assert "gpu delegate was not applied" in message
    assert "Though GPU delegate is explicitly applied" in message and "\n" not in message
    assert is_deterministic(message)
    # The same output asked for the CPU is a CPU figure (the GPU lines do not concern it).
    assert benchmark_model_stats(read("gpu-delegate-not-applied.txt"), CPU)["median_ms"] == 6.12


def test_missing_builtin_op_quotes_the_error_line_and_is_deterministic():
    text = read("missing-builtin-op.txt")
    assert failure_line(text).startswith("Didn't find op for builtin opcode 'MUL' version '5'")
    assert is_deterministic_failure(text, 1)
    with pytest.raises(RunnerOutputError, match="no timings"):
        parse_benchmark_model(text)


def test_litert_compiled_model_in_ms_becomes_the_classic_units():
    out = parse_benchmark_model(read("litert-compiled-model.txt"))
    assert out.format == "litert-compiled-model"
    assert out.stats.count == 10
    assert out.stats.values_us == pytest.approx({"avg": 7430, "min": 7410, "max": 7450, "std": 10})
    assert out.init_us == pytest.approx(23740) and out.warmup_avg_us == pytest.approx(7440)
    stats = benchmark_model_stats(read("litert-compiled-model.txt"), CPU)
    assert stats["median_ms"] == pytest.approx(7.43) and stats["min_ms"] == pytest.approx(7.41)
    assert stats["statistic"] == STAT_AVERAGE and "average-as-median" in stats["flags"]


def test_tf1_summary_line():
    out = parse_benchmark_model(read("tf1-summary.txt"))
    assert out.format == "tf1" and out.stats.count == 15
    assert out.inference_avg_us == pytest.approx(66767.6) and out.warmup_avg_us == pytest.approx(76605.9)
    assert out.init_us == 9933
    assert benchmark_model_stats(read("tf1-summary.txt"), CPU)["min_ms"] == pytest.approx(66.699)


def test_op_profiling_tf24_breakdown_and_peak_memory():
    text = read("op-profiling-tf24.txt")
    out = parse_benchmark_model(text)
    assert out.node_type_ms() == {"CONV_2D": 31.3, "DEPTH_TO_SPACE": 1.8}
    assert out.node_ms() == {"CONV_2D [conv1]:0": 20.5, "DEPTH_TO_SPACE [d2s]:1": 1.8,
                             "CONV_2D [conv2]:2": 10.8}
    stats = benchmark_model_stats(text, RunSettings(op_profiling=True))
    assert stats["operator_ms"] == {"CONV_2D": 31.3, "DEPTH_TO_SPACE": 1.8}
    assert stats["peak_mem_mb"] == pytest.approx(12.8672)
    assert stats["median_ms"] == pytest.approx(33.2094)


def test_ort_perf_test_1_3():
    out = parse_onnxruntime_perf_test(read("ort-perf-test-1.3.txt"))
    assert out.runs == 10 and out.avg_us == pytest.approx(84320)
    assert out.session_creation_us == pytest.approx(60900)
    assert out.peak_memory_mb == pytest.approx(158171136 / 2**20)
    stats = perf_test_stats(read("ort-perf-test-1.3.txt"), CPU)
    assert stats["median_ms"] == pytest.approx(84.32) and stats["statistic"] == STAT_AVERAGE


def test_runner_for_another_abi_is_deterministic_and_quoted():
    line = "/system/bin/sh: /data/local/tmp/lutnas/benchmark_model: not executable: 64-bit ELF file"
    assert line in read("runner-wrong-abi.sh")
    assert is_deterministic_failure(line, 126) and failure_line(line) == line


@pytest.mark.parametrize("name", ["android-cpu-4threads-tail.txt", "android-nnapi-gpu-tail.txt",
                                  "logcat-prefixed-percentiles.txt", "op-profiling-linux-4threads.txt"])
def test_shared_samples_record_their_statistic(name: str):
    stats = benchmark_model_stats((DATA / name).read_text(), CPU)
    expected = STAT_RUNNER_MEDIAN if "percentiles" in name else STAT_AVERAGE
    assert stats["statistic"] == expected
    if name == "android-cpu-4threads-tail.txt":
        assert stats["peak_mem_mb"] == pytest.approx(138.809)
    if name == "logcat-prefixed-percentiles.txt":
        assert stats["median_ms"] == pytest.approx(141.253) and stats["peak_mem_mb"] is None


def test_nnapi_tail_without_delegation_lines_is_kept_and_flagged():
    stats = benchmark_model_stats((DATA / "android-nnapi-gpu-tail.txt").read_text(),
                                  RunSettings(accelerator="nnapi"))
    assert stats["median_ms"] == pytest.approx(156.669) and "delegation-unreported" in stats["flags"]


@pytest.mark.parametrize("line", [
    "INFO: count=3 avg=5", "I tflite  : count=3 avg=5",
    "06-01 12:00:00.123  123  456 I tflite  : count=3 avg=5",
    "2024-06-01 12:00:00.123 INFO: count=3 avg=5", "INFO: [benchmark.cc:12] count=3 avg=5",
    "I/tflite  ( 1234): count=3 avg=5"])
def test_every_prefix_is_stripped(line: str):
    assert strip_prefixes(line) == "count=3 avg=5"


def test_units_are_normalised_in_one_place():
    assert to_us(1.5, "ms") == 1500 and to_us(2, "s") == 2e6 and to_us(7, "us") == 7
    with pytest.raises(RunnerOutputError, match="unknown time unit"):
        to_us(1, "fortnights")


def test_an_unknown_timing_line_is_an_error_naming_it():
    text = ("count=5 first=10 curr=10 min=9 max=11 avg=10 std=1\n"
            "Inference timings in us: Init: 5, First inference: 12, Warmup (avg): 11, Inference (avg): 10\n"
            "Inference latency (trimmed mean): 9.5 ms\n")
    with pytest.raises(RunnerOutputError, match=r"Inference latency \(trimmed mean\)"):
        parse_benchmark_model(text)
    with pytest.raises(RunnerOutputError, match="Median latency: 3 ms"):
        parse_onnxruntime_perf_test("Average inference time cost: 1 ms\nMedian latency: 3 ms\n")


def test_partial_delegation_is_kept_with_its_share_and_flagged():
    text = ("INFO: Created TensorFlow Lite delegate for GPU.\n"
            "INFO: Replacing 12 out of 40 node(s) with delegate (TfLiteGpuDelegateV2) node, "
            "yielding 3 partitions for the whole graph.\n"
            "count=10 first=10 curr=10 min=9 max=11 avg=10 std=1 p5=9 median=10 p95=11\n")
    stats = benchmark_model_stats(text, GPU)
    assert (stats["delegated_nodes"], stats["total_nodes"], stats["partitions"]) == (12, 40, 3)
    assert "partial-delegation" in stats["flags"]


def test_op_profile_of_only_a_delegate_is_opaque():
    text = ("Explicitly applied GPU delegate, and the model graph will be completely executed by the "
            "delegate.\n"
            "count=10 first=10 curr=10 min=9 max=11 avg=10 std=1\n"
            "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
            "============================== Summary by node type ==============================\n"
            "\t[Node type]\t[count]\t[avg ms]\t[avg %]\t[cdf %]\t[mem KB]\t[times called]\n"
            "\tTfLiteGpuDelegateV2\t1\t0.010\t100%\t100%\t0.0\t1\n")
    stats = benchmark_model_stats(text, RunSettings(accelerator="gpu", op_profiling=True))
    assert stats["operator_ms"] is None and "opaque-op-profile" in stats["flags"]


def test_delegation_lines():
    assert parse_delegation_line("Created 0 GPU delegate kernels.").applied is False
    nnapi = parse_delegation_line("Explicitly applied NNAPI delegate, and the model graph will be partially "
                                  "executed by the delegate w/ 2 delegate kernels.")
    assert nnapi.delegate == "NNAPI" and nnapi.applied is True
    assert parse_delegation_line("Failed to apply NNAPI delegate.").applied is False
    assert parse_delegation_line("Loaded model x") is None
