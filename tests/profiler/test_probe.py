# ruff: noqa: F811 - pytest fixtures imported from tests.adbd.fixtures are redefined as arguments
"""`profile-device --dry-run --probe`: the projection from costs measured on the device.

The probe times trials of one, k and k + 1 copies of a model (k: the models of one runner session);
the tests pin what it measures and how the estimate uses it, not how fast this host is."""

from __future__ import annotations

import pytest

from lutnas.device_agents.base import DeviceAgent, DeviceInfo, Measurement, ModelFile, RunnerInfo, RunSettings
from lutnas.device_agents.local import LocalAgent
from lutnas.errors import DeviceError
from lutnas.profiler.export import ModelCache, export_empty, export_spec
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
    base = estimate_plan(plan, "onnx", lambda key: True, 2, 2, 1, 5, reference_every=8, batch_size=8,
                         process_start_s=0.0, invoke_ms=0.0)
    costs = InvocationCosts(per_batch_s=0.5, per_key_s=0.1, run_ms=0.0)
    measured = estimate_plan(plan, "onnx", lambda key: True, 2, 2, 1, 5, reference_every=8, batch_size=8,
                             process_start_s=costs.per_batch_s, per_key_s=costs.per_key_s, invoke_ms=0.0)
    runs = _key_runs(plan, 8)  # the drift reference opens each batch and follows every 8th key
    assert sum(runs) > keys + len(runs)
    extra_s = 2 * (len(runs) * 0.5 + sum(runs) * 0.1)  # 2 trials
    assert (measured.device_minutes_min - base.device_minutes_min) * 60 == pytest.approx(extra_s)


class ClockedDevice(DeviceAgent):
    """A device whose trials take known seconds on a fake clock: `batch_s` a batch (with its first
    session), `key_s` a model beyond its timed runs, `session_s` each further session of `session`
    models; models time `ms` a run. With `push` (s a check, s a folder, s a file, s a MiB) it
    copies the files it lacks first, each device path (digest and name) once; without, it reads
    them in place."""

    def __init__(self, clock: list[float], session: int, batch_s: float, key_s: float,
                 session_s: float, ms: float = 0.5,
                 push: tuple[float, float, float, float] | None = None) -> None:
        self.clock, self.session = clock, session
        self.batch_s, self.key_s, self.session_s, self.ms = batch_s, key_s, session_s, ms
        self.push, self.held, self.pushes_files = push, set(), push is not None

    @staticmethod
    def _where(file: ModelFile) -> tuple[str, str]:
        return file.sha256, file.path.name

    def missing_files(self, files) -> list[ModelFile]:
        return [f for f in files if self._where(f) not in self.held] if self.push else []

    def push_files(self, files) -> None:
        if not self.push:
            return
        check_s, folder_s, file_s, mib_s = self.push
        missing = {self._where(f): f for f in self.missing_files(files)}
        self.clock[0] += check_s + (folder_s if missing else 0.0)
        for where, file in missing.items():
            self.clock[0] += file_s + mib_s * file.path.stat().st_size / 2**20
            self.held.add(where)

    def forget_files(self, files) -> None:
        self.held -= {self._where(f) for f in files}

    def info(self) -> DeviceInfo:
        return DeviceInfo(device_id="clocked", kind="simulated", model="clocked")

    def models_per_session(self, settings: RunSettings) -> int:
        return self.session

    def measure_batch(self, files, settings, trial_index) -> list[Measurement]:
        n = len(files)
        sessions = -(-n // self.session) if self.session else 1
        timed_s = n * (settings.warmup + settings.runs) * self.ms / 1000.0
        self.clock[0] += self.batch_s + n * self.key_s + (sessions - 1) * self.session_s + timed_s
        self.push_files(files)
        return [Measurement(f.key, f.sha256, trial_index, RunnerInfo("clocked", "1"),
                            samples_ms=[self.ms] * settings.runs).fill_stats_from_samples() for f in files]


@pytest.mark.parametrize("session", [0, 1, 4])
def test_the_probe_recovers_batch_model_and_session_costs(monkeypatch, tmp_path, session: int) -> None:
    import lutnas.profiler.probe as probe_module

    clock = [0.0]
    monkeypatch.setattr(probe_module.time, "perf_counter", lambda: clock[0])
    path = tmp_path / "m.tflite"
    path.write_bytes(b"model")
    model = ModelFile.from_path(path, "m")
    device = ClockedDevice(clock, session, batch_s=0.5, key_s=0.3, session_s=0.35)
    costs = probe(device, RunSettings(warmup=1, runs=3), model, repeats=1)
    assert costs.run_ms == pytest.approx(0.5)
    if session == 1:  # a session per model is part of each model's cost, the first one too
        assert costs.per_key_s == pytest.approx(0.3 + 0.35) and costs.session_size == 0
        assert costs.per_batch_s == pytest.approx(0.5 - 0.35)
    else:
        assert costs.per_batch_s == pytest.approx(0.5) and costs.per_key_s == pytest.approx(0.3)
        assert costs.session_size == session
        assert costs.per_session_s == pytest.approx(0.35 if session else 0.0)


def test_the_probe_recovers_what_a_push_costs_a_file_and_a_mib(monkeypatch, tmp_path) -> None:
    import lutnas.profiler.probe as probe_module

    clock = [0.0]
    monkeypatch.setattr(probe_module.time, "perf_counter", lambda: clock[0])
    (tmp_path / "empty.tflite").write_bytes(b"e" * 1024)
    (tmp_path / "block.tflite").write_bytes(b"b" * (3 * 2**20 + 1024))  # 3 MiB more
    empty, block = (ModelFile.from_path(tmp_path / f"{n}.tflite", n) for n in ("empty", "block"))
    device = ClockedDevice(clock, 4, batch_s=0.5, key_s=0.3, session_s=0.35,
                           push=(0.03, 0.1, 0.2, 0.05))
    costs = probe(device, RunSettings(warmup=1, runs=3), empty, block, repeats=1)
    assert costs.per_push_s == pytest.approx(0.2 + 0.05 / 1024)  # the empty file's KiB
    assert costs.push_s_per_mib == pytest.approx(0.05)
    assert costs.push_batch_s == pytest.approx(0.1)  # the folder, not the check every batch pays
    assert costs.per_key_s == pytest.approx(0.3)  # copies of one file are pushed once, untimed
    assert "per pushed file" in costs.line("clocked")
    assert not device.held - {(empty.sha256, "empty.tflite"), (block.sha256, "block.tflite")}
    reads_in_place = probe(ClockedDevice(clock, 4, 0.5, 0.3, 0.35), RunSettings(warmup=1, runs=3),
                           empty, block, repeats=1)
    assert (reads_in_place.per_push_s, reads_in_place.push_s_per_mib) == (0.0, 0.0)


def test_the_estimate_charges_pushes_once_not_per_trial(tiny_space) -> None:
    plan = make_plan(tiny_space, limit=16, seed=1)
    common = dict(reference_every=8, batch_size=8, process_start_s=0.0, invoke_ms=0.0)
    for trials in (2, 5):
        base = estimate_plan(plan, "onnx", lambda key: True, trials, trials, 1, 5, **common)
        pushed = estimate_plan(plan, "onnx", lambda key: True, trials, trials, 1, 5, **common,
                               push=(16, 4.0), per_push_s=0.25, push_s_per_mib=0.5, push_batch_s=0.1)
        extra_s = 16 * 0.25 + 4.0 * 0.5 + 0.1 * -(-len(plan.specs) // 8)  # the first trial's batches
        assert (pushed.device_minutes_min - base.device_minutes_min) * 60 == pytest.approx(extra_s)
        assert (pushed.device_minutes_max - base.device_minutes_max) * 60 == pytest.approx(extra_s)
    assert any(line.startswith("pushes: 16 files (4.0 MiB)") for line in pushed.lines())
    assert not any(line.startswith("pushes") for line in base.lines())


def test_a_phone_is_pushed_what_it_lacks_once_and_the_dry_run_counts_it(phone: SimulatedAdbd, runner,
                                                                        tmp_path, monkeypatch,
                                                                        tiny_space) -> None:
    from lutnas.device_agents.factory import AgentOptions, open_agent
    from lutnas.device_agents.remote import RemoteOptions
    from lutnas.profiler.probe import files_to_push

    cache = ModelCache(tmp_path / "cache")
    entry = export_empty(32, "tflite", cache)
    model = ModelFile(entry.path, "probe", entry.sha256)
    with open_agent(f"adb:{phone.address}", AgentOptions(remote=RemoteOptions(runner=runner))) as agent:
        pushes = []
        push = agent.transport.push
        monkeypatch.setattr(agent.transport, "push", lambda *a, **k: (pushes.append(a), push(*a, **k)))
        assert agent.missing_files([model]) == [model]
        results = agent.measure_batch([model, model, model], RunSettings(warmup=1, runs=3), 0)
        models = [path for _, path in pushes if "/models/" in path]  # not the runner's push
        assert all(m.ok for m in results) and len(models) == 1  # listed three times, pushed once
        assert agent.missing_files([model]) == []
        agent.forget_files([model])
        assert agent.missing_files([model]) == [model]
        plan = make_plan(tiny_space, limit=3, seed=1)
        files, mib = files_to_push(agent, plan, "tflite", cache, "fp32")
        assert files == 3 and mib > 0.0  # none exported yet: each file's weights
        block = export_spec(plan.specs[0], "tflite", cache)
        assert files_to_push(agent, plan, "tflite", cache, "fp32")[0] == 3  # exported, not pushed
        agent.push_files([ModelFile(block.path, plan.specs[0].key, block.sha256)])
        assert files_to_push(agent, plan, "tflite", cache, "fp32")[0] == 2  # on the phone now
    assert files_to_push(LocalAgent(), plan, "tflite", cache, "fp32") == (0, 0.0)


def test_a_phone_probe_times_a_second_session(phone: SimulatedAdbd, runner, tmp_path) -> None:
    from lutnas.device_agents.factory import AgentOptions, open_agent
    from lutnas.device_agents.remote import MODELS_PER_SESSION, RemoteOptions

    entry = export_empty(32, "tflite", ModelCache(tmp_path / "cache"))
    empty = ModelFile(entry.path, "probe", entry.sha256)
    with open_agent(f"adb:{phone.address}", AgentOptions(remote=RemoteOptions(runner=runner))) as agent:
        costs = probe(agent, RunSettings(warmup=1, runs=3), empty, repeats=1)
    # a phone runs MODELS_PER_SESSION models per shell session: one more model opens a second one
    assert costs.session_size == MODELS_PER_SESSION
    assert costs.per_key_s > 0.0  # every model starts benchmark_model on the phone
    assert costs.per_push_s > 0.0  # the empty model pushed again after forget_files
    assert f"per session of {MODELS_PER_SESSION} models" in costs.line("phone")


def _key_runs(plan, batch_size: int, every: int = 8) -> list[int]:
    """Models each trial batch runs, counted from the profiling loop's own order."""
    from lutnas.profiler.run import _with_references

    keys = [spec.key for spec in plan.specs]
    return [len(_with_references(keys[i:i + batch_size], "ref", every))
            for i in range(0, len(keys), batch_size)]


def test_the_estimate_charges_every_session_after_a_batchs_first(tiny_space) -> None:
    plan = make_plan(tiny_space, limit=16, seed=1)
    common = dict(reference_every=8, batch_size=6, process_start_s=0.0, invoke_ms=0.0)
    one_session = estimate_plan(plan, "onnx", lambda key: True, 2, 2, 1, 5, **common)
    sessions = estimate_plan(plan, "onnx", lambda key: True, 2, 2, 1, 5, **common, per_session_s=0.3,
                             session_size=4)
    extra_s = 2 * 0.3 * sum(-(-runs // 4) - 1 for runs in _key_runs(plan, 6))  # 2 trials
    assert (sessions.device_minutes_min - one_session.device_minutes_min) * 60 == pytest.approx(extra_s)


def test_the_dry_run_prints_what_it_measured_on_the_device(tmp_path, capsys) -> None:
    from lutnas.cli import main

    assert main(["profile-device", "--space", "tiny", "--runtime", "onnxruntime", "--limit", "4",
                 "--dry-run", "--probe", "--warmup", "1", "--runs", "3",
                 "--store", str(tmp_path / "m.sqlite")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("measured on local: ") and "device time: ~" in out
    assert not (tmp_path / "m.sqlite").exists()  # a dry run stores nothing
