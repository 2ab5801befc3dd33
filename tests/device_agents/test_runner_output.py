"""The runner parsers on every real benchmark_model sample (copied from ../shared/runner-output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lutnas.device_agents.runner_output import (
    parse_benchmark_model,
    parse_count_line,
    parse_onnxruntime_perf_test,
    parse_timings_line,
)
from lutnas.errors import RunnerOutputError

DATA = Path(__file__).parent / "data"
SAMPLES = sorted(DATA.glob("*.txt"))


def test_every_sample_is_present():
    assert {p.name for p in SAMPLES} >= {
        "android-cpu-4threads-tail.txt", "android-nnapi-gpu-tail.txt",
        "logcat-prefixed-percentiles.txt", "op-profiling-linux-4threads.txt"}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_every_sample_parses_to_consistent_numbers(path: Path):
    out = parse_benchmark_model(path.read_text())
    assert out.stats is not None and out.stats.count > 1
    stats = out.stats.values_us
    assert stats["min"] <= stats["avg"] <= stats["max"]
    # The timings line repeats the average of the count line (same run, same rounding).
    assert out.inference_avg_us == pytest.approx(stats["avg"], rel=1e-4)
    assert out.init_us is not None and out.init_us > 0


def test_cpu_tail_values():
    out = parse_benchmark_model((DATA / "android-cpu-4threads-tail.txt").read_text())
    assert out.stats.count == 50
    assert out.stats.values_us == {"first": 249042, "curr": 250889, "min": 247067, "max": 254474,
                                   "avg": 249684, "std": 1442}
    assert (out.init_us, out.first_inference_us, out.warmup_avg_us) == (16242, 360262, 304586)
    assert out.extra == {"memory_init_mb": 4.92969, "memory_overall_mb": 138.809}
    assert out.node_type_ms() is None


def test_logcat_prefix_and_percentiles():
    out = parse_benchmark_model((DATA / "logcat-prefixed-percentiles.txt").read_text())
    assert out.stats.count == 25
    assert out.stats.get("median") == 141253
    assert out.stats.get("p5") == 140545 and out.stats.get("p95") == 187533
    assert out.extra["memory_overall_mb"] == pytest.approx(73.4102)


def test_scientific_notation_and_warmup_line_skipped():
    out = parse_benchmark_model((DATA / "op-profiling-linux-4threads.txt").read_text())
    # "count=1 curr=3512391" (warm-up) and "Timings (microseconds): count=50 ..." are not the runs.
    assert out.stats.count == 50
    assert out.stats.get("avg") == pytest.approx(2.95034e6)
    assert out.warmup_avg_us == pytest.approx(3.51239e6)


def test_op_profiling_tables_read_by_header():
    out = parse_benchmark_model((DATA / "op-profiling-linux-4threads.txt").read_text())
    by_type = out.node_type_ms()
    assert by_type == {"CONV_2D": 2651.853, "DEPTHWISE_CONV_2D": 296.919, "AVERAGE_POOL_2D": 0.869,
                       "SOFTMAX": 0.232, "SQUEEZE": 0.016}
    # The initialization section's summary (AllocateTensors) is not the regular runs'.
    assert "AllocateTensors" not in by_type
    nodes = out.node_ms()
    assert nodes["CONV_2D [MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0"] == 60.957
    assert len(nodes) == 7
    titles = [t.title for t in out.tables]
    assert titles.count("Summary by node type") == 2


def test_table_without_start_column_and_names_with_spaces():
    text = ("count=5 first=10 curr=10 min=9 max=11 avg=10 std=1\n"
            "Inference timings in us: Init: 5, First inference: 12, Warmup (avg): 11, Inference (avg): 10\n"
            "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
            "============================== Run Order ==============================\n"
            "\t[node type]\t[first]\t[avg ms]\t[%]\t[cdf%]\t[mem KB]\t[times called]\t[Name]\n"
            "\tConvolution (NHWC, F32) IGEMM\t0.100\t0.090\t90%\t90%\t0.0\t1\t"
            "Delegate/Convolution (NHWC, F32) IGEMM:0\n"
            "\tTRANSPOSE\t0.010\t0.010\t10%\t100%\t0.0\t1\t[t]:1\n\n"
            "============================== Summary by node type ==============================\n"
            "\t[Node type]\t[count]\t[avg ms]\t[avg %]\t[cdf %]\t[mem KB]\t[times called]\n"
            "\tConvolution (NHWC, F32) IGEMM\t1\t0.090\t90%\t90%\t0.0\t1\n"
            "\tTRANSPOSE\t1\t0.010\t10%\t100%\t0.0\t1\n")
    out = parse_benchmark_model(text)
    assert out.node_type_ms() == {"Convolution (NHWC, F32) IGEMM": 0.09, "TRANSPOSE": 0.01}
    assert out.node_ms()["Convolution (NHWC, F32) IGEMM Delegate/Convolution (NHWC, F32) IGEMM:0"] == 0.09


def test_line_helpers():
    assert parse_count_line("hello") is None
    assert parse_count_line("count=3 avg=1.5e+03 std=2").values_us == {"avg": 1500.0, "std": 2.0}
    assert parse_timings_line("Inference timings in us: Init: 1, Inference (avg): 2.5") == {
        "init": 1.0, "inference (avg)": 2.5}


@pytest.mark.parametrize("text", ["", "ERROR: Could not open model\nAborted\n",
                                  "STARTING!\ncount=1 curr=5\n"])
def test_text_matching_nothing_is_an_error_with_its_first_lines(text: str):
    with pytest.raises(RunnerOutputError) as info:
        parse_benchmark_model(text)
    if text:
        assert text.splitlines()[0] in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_sample_still_parses_what_is_there():
    text = (DATA / "android-cpu-4threads-tail.txt").read_text()
    out = parse_benchmark_model(text[: text.index("Inference timings")])
    assert out.stats.count == 50 and out.inference_avg_us is None


PERF_TEST = """Setting intra_op_num_threads to 1
Session creation time cost: 0.0312 s
First inference time cost: 3 ms
Total inference time cost: 0.1234 s
Total inference requests: 100
Average inference time cost: 1.234 ms
Total inference run time: 0.1301 s
Number of inferences per second: 768.6
Avg CPU usage: 98 %
Peak working set size: 30629888 bytes
Runs:100
Min Latency: 0.00101 s
Max Latency: 0.00202 s
P50 Latency: 0.00120 s
P90 Latency: 0.00150 s
P95 Latency: 0.00160 s
P99 Latency: 0.00190 s
P999 Latency: 0.00202 s
"""


def test_onnxruntime_perf_test_documented_format():
    out = parse_onnxruntime_perf_test(PERF_TEST)
    assert out.runs == 100
    assert out.avg_us == pytest.approx(1234)
    assert out.min_us == pytest.approx(1010) and out.max_us == pytest.approx(2020)
    assert out.percentiles_us["p50"] == pytest.approx(1200)
    assert out.percentiles_us["p90"] == pytest.approx(1500)
    assert out.first_inference_us == pytest.approx(3000)
    with pytest.raises(RunnerOutputError, match="no latency"):
        parse_onnxruntime_perf_test("onnxruntime_perf_test: invalid model\n")
