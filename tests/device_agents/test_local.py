"""The local agent on real exported blocks, with each runtime, in real worker processes."""

from __future__ import annotations

import json
import os

import pytest

from lutnas.device_agents.base import ModelFile, RunSettings
from lutnas.device_agents.local import LocalAgent, host_info
from lutnas.errors import BadInputError
from lutnas.profiler.export import ModelCache, export_many
from lutnas.profiler.plan import make_plan

RUNTIME_FORMAT = {"onnxruntime": "onnx", "tflite": "tflite", "torch": "torchscript"}
RUNNER_NAME = {"onnxruntime": "onnxruntime", "tflite": "ai_edge_litert", "torch": "torch"}


def _files(tiny_space, fmt: str, n: int) -> list[ModelFile]:
    plan = make_plan(tiny_space, limit=n, seed=1)
    entries = export_many(plan.blocks, fmt, ModelCache(), workers=1)
    return [ModelFile(e.path, k, e.sha256) for k, e in entries.items()]


@pytest.fixture(scope="module")
def onnx_files(tiny_space) -> list[ModelFile]:
    return _files(tiny_space, "onnx", 3)


@pytest.mark.parametrize("runtime,count", [("onnxruntime", 3), ("tflite", 2), ("torch", 2)])
def test_each_runtime_measures_real_blocks_in_the_order_given(tiny_space, runtime, count):
    files = _files(tiny_space, RUNTIME_FORMAT[runtime], count)[::-1]
    results = LocalAgent().measure_batch(files, RunSettings(runtime=runtime, warmup=2, runs=7), trial_index=3)
    assert [m.key for m in results] == [f.key for f in files]
    for m, f in zip(results, files):
        assert m.ok, m.status
        assert len(m.samples_ms) == 7 and m.min_ms <= m.median_ms <= m.p90_ms
        assert m.median_ms > 0 and m.model_sha256 == f.sha256 and m.trial_index == 3
        assert m.runner.name == RUNNER_NAME[runtime] and m.runner.version not in ("", "?")


def test_each_trial_is_a_fresh_process_and_cores_are_pinned(onnx_files):
    agent = LocalAgent()
    settings = RunSettings(runtime="onnxruntime", warmup=1, runs=3, cores=(0,))
    first = [json.loads(m.raw_output) for m in agent.measure_batch(onnx_files, settings, 0)]
    second = [json.loads(m.raw_output) for m in agent.measure_batch(onnx_files, settings, 1)]
    assert len({r["pid"] for r in first}) == 1 and len({r["pid"] for r in second}) == 1
    assert first[0]["pid"] != second[0]["pid"] != os.getpid()
    assert all(r["affinity"] == [0] for r in first + second)


def test_a_broken_file_fails_alone(onnx_files, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    files = [onnx_files[0], ModelFile.from_path(broken, "broken"), onnx_files[1]]
    results = LocalAgent().measure_batch(files, RunSettings(runtime="onnxruntime", warmup=1, runs=3), 0)
    assert [m.ok for m in results] == [True, False, True]
    assert results[1].status.startswith("error:") and results[1].median_ms is None


def test_onnxruntime_operator_breakdown(onnx_files):
    settings = RunSettings(runtime="onnxruntime", warmup=1, runs=5, op_profiling=True)
    m = LocalAgent().measure_batch(onnx_files[:1], settings, 0)[0]
    assert m.ok and m.operator_ms and "Conv" in m.operator_ms
    assert all(v >= 0 for v in m.operator_ms.values())


# Settings that are invalid anywhere are refused by RunSettings itself, the others by the agent.
@pytest.mark.parametrize("settings,word", [
    (dict(runtime="onnxruntime", cores=(os.cpu_count() + 7,)), "core"),
    (dict(runtime="onnxruntime", threads=0), "threads"),
    (dict(runtime="tensorrt"), "runtime"),
    (dict(runtime="onnxruntime", accelerator="gpu"), "CPU"),
])
def test_settings_the_host_cannot_honour_are_refused(settings, word):
    with pytest.raises(BadInputError, match=word) as info:
        LocalAgent().check_settings(RunSettings(**settings))
    assert "\n" not in str(info.value)


def test_host_info_is_stable_and_complete():
    a, b = host_info(), LocalAgent().info()
    assert a.device_id == b.device_id and a.device_id.startswith("host-")
    assert a.cores == os.cpu_count() and sum(len(c.cores) for c in a.clusters) == a.cores
    assert a.cpu_model and a.os_name and a.libraries["onnxruntime"] not in ("", "absent")


def test_paced_trials_carry_the_pace_model_timed_next_to_every_invoke(tiny_space):
    from lutnas.profiler.export import PACE_KEY, pace_file

    files = _files(tiny_space, "tflite", 2)
    pace = pace_file("tflite", "fp32", ModelCache())
    settings = RunSettings(runtime="tflite", warmup=2, runs=9, pace=True)
    results = list(LocalAgent().measure_stream(files, settings, 0, pace))
    assert pace.key == PACE_KEY and [m.key for m in results] == [f.key for f in files]
    for m in results:
        assert m.ok, m.status
        assert m.pace_ms is not None and m.pace_ms > 0 and m.pace_sha256 == pace.sha256
        assert json.loads(m.raw_output)["pace_ms"] == m.pace_ms
        # the median of per-run ratios: near, not equal to, the ratio of the two medians
        assert m.pace_ratio == json.loads(m.raw_output)["pace_ratio"]
        assert 0.5 < m.pace_ratio / (m.median_ms / m.pace_ms) < 2.0
    unpaced = LocalAgent().measure_batch(files, RunSettings(runtime="tflite", warmup=2, runs=9), 0)
    assert all(m.pace_ms is None and m.pace_sha256 == "" and m.pace_ratio is None for m in unpaced)


def test_the_paired_ratio_sets_each_run_against_its_own_pace_invoke():
    from lutnas.device_agents.local_worker import paired_ratio

    # runs of 1, 2 and 3 ms, each followed by a pace invoke of 1, 1 and 2 ms: ratios 1, 2 and 1.5
    assert paired_ratio([1.0, 2.0, 3.0], [1.0, 1.0, 2.0]) == 1.5  # the medians' ratio would be 2.0
    assert paired_ratio([1.0, 2.0], [1.0]) is None  # runs and pace invokes do not pair up
    assert paired_ratio([1.0, 2.0], [1.0, 0.0]) is None
    assert paired_ratio([], []) is None
