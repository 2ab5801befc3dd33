# ruff: noqa: F811 - pytest fixtures imported from tests.adbd.fixtures are redefined as arguments
"""`profile-device --dry-run --probe`: the projection from costs measured on the device.

The probe times trials of one and of two copies of an empty model; the tests pin what it measures
and how the estimate uses it, not how fast this host is."""

from __future__ import annotations

import pytest

from lutnas.device_agents.base import ModelFile, RunSettings
from lutnas.device_agents.local import LocalAgent
from lutnas.errors import DeviceError
from lutnas.profiler.export import ModelCache, export_empty
from lutnas.profiler.plan import estimate_plan, make_plan
from lutnas.profiler.probe import InvocationCosts, probe
from tests.adbd import SimulatedAdbd
from tests.adbd.fixtures import _session_adb_key, adb_key, phone, runner  # noqa: F401

SETTINGS = RunSettings(runtime="onnxruntime", warmup=1, runs=5, cache="cold-llc", pace=True)


@pytest.fixture(scope="module")
def empty() -> ModelFile:
    entry = export_empty(32, "onnx", ModelCache())
    return ModelFile(entry.path, "probe", entry.sha256)


def test_the_probe_measures_a_process_start_a_per_model_cost_and_a_run(empty: ModelFile) -> None:
    costs = probe(LocalAgent(), SETTINGS, empty, repeats=1)
    # the host worker is one Python process per trial batch: its start is most of a batch's cost
    assert costs.per_batch_s > 0.05
    assert costs.per_key_s >= 0.0 and 0.0 < costs.run_ms < 50.0
    assert "per trial batch" in costs.line("local")


def test_a_probe_whose_empty_model_cannot_run_is_a_device_error(tmp_path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(DeviceError, match="empty model did not run"):
        probe(LocalAgent(), SETTINGS, ModelFile(broken, "probe", "ab" * 32), repeats=1)


def test_the_estimate_charges_measured_costs_per_key_per_batch_and_the_reference(tiny_space) -> None:
    plan = make_plan(tiny_space, limit=16, seed=1)
    keys = len(plan.specs)
    base = estimate_plan(plan, "onnx", lambda key: True, 2, 2, 1, 5, reference_every=8,
                         process_start_s=0.0, invoke_ms=0.0)
    costs = InvocationCosts(per_batch_s=0.5, per_key_s=0.1, run_ms=0.0)
    measured = estimate_plan(plan, "onnx", lambda key: True, 2, 2, 1, 5, reference_every=8, batch_size=8,
                             process_start_s=costs.per_batch_s, per_key_s=costs.per_key_s, invoke_ms=0.0)
    batches, references = -(-keys // 8), -(-keys // 8)
    extra_s = 2 * (batches * 0.5 + (keys + references) * 0.1)  # 2 trials
    assert (measured.device_minutes_min - base.device_minutes_min) * 60 == pytest.approx(extra_s)


def test_a_phone_probe_prices_its_runner_sessions(phone: SimulatedAdbd, runner, tmp_path) -> None:
    from lutnas.device_agents.factory import AgentOptions, open_agent
    from lutnas.device_agents.remote import MODELS_PER_SESSION, RemoteOptions

    entry = export_empty(32, "tflite", ModelCache(tmp_path / "cache"))
    empty = ModelFile(entry.path, "probe", entry.sha256)
    with open_agent(f"adb:{phone.address}", AgentOptions(remote=RemoteOptions(runner=runner))) as agent:
        costs = probe(agent, RunSettings(warmup=1, runs=3), empty, repeats=1)
    # a phone runs MODELS_PER_SESSION models per shell session: one more model opens a second one
    assert costs.session_size == MODELS_PER_SESSION and costs.per_session_s >= 0.0
    assert costs.per_key_s > 0.0  # every model starts benchmark_model on the phone
    assert f"per session of {MODELS_PER_SESSION} models" in costs.line("phone")


def test_the_estimate_charges_every_session_after_a_batchs_first(tiny_space) -> None:
    plan = make_plan(tiny_space, limit=16, seed=1)
    keys = len(plan.specs)
    common = dict(reference_every=8, batch_size=64, process_start_s=0.0, invoke_ms=0.0)
    one_session = estimate_plan(plan, "onnx", lambda key: True, 2, 2, 1, 5, **common)
    sessions = estimate_plan(plan, "onnx", lambda key: True, 2, 2, 1, 5, **common, per_session_s=0.3,
                             session_size=4)
    key_runs = keys + -(-keys // 8)  # the drift reference every 8 keys runs in the sessions too
    extra_s = 2 * 0.3 * (-(-key_runs // 4) - 1)  # 2 trials of one batch
    assert (sessions.device_minutes_min - one_session.device_minutes_min) * 60 == pytest.approx(extra_s)


def test_the_dry_run_prints_what_it_measured_on_the_device(tmp_path, capsys) -> None:
    from lutnas.cli import main

    assert main(["profile-device", "--space", "tiny", "--runtime", "onnxruntime", "--limit", "4",
                 "--dry-run", "--probe", "--warmup", "1", "--runs", "3",
                 "--store", str(tmp_path / "m.sqlite")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("measured on local: ") and "device time: ~" in out
    assert not (tmp_path / "m.sqlite").exists()  # a dry run stores nothing
