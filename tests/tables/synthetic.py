"""Synthetic trials in a real MeasurementStore, shared by the table tests."""

from __future__ import annotations

from lutnas.device_agents.base import DeviceInfo, Measurement, RunnerInfo, RunSettings
from lutnas.tables.store import MeasurementStore

RUNNER = RunnerInfo("ai_edge_litert", "2.3.0")
KEY_A = "conv:hw=32,cin=3,cout=8,k=3,s=2,act=hswish"
KEY_B = "mbconv:hw=16,cin=8,cout=8,k=3,s=1,e=1,se=0,act=hswish"


def device(device_id: str = "host-test") -> DeviceInfo:
    return DeviceInfo(device_id=device_id, kind="host", model="test host", cores=2,
                      libraries={"ai-edge-litert": "2.3.0"})


def add_trials(store: MeasurementStore, run_id: int, device_id: str, settings: RunSettings, key: str,
               trial_medians: list[float], kind: str | None = None,
               operator_ms: list[dict[str, float]] | None = None) -> None:
    for index, median in enumerate(trial_medians):
        samples = [median * f for f in (0.98, 1.0, 1.0, 1.03, 1.1)]
        m = Measurement(key=key, model_sha256="0" * 64, trial_index=index, runner=RUNNER,
                        samples_ms=samples,
                        operator_ms=operator_ms[index] if operator_ms else None).fill_stats_from_samples()
        m.median_ms = median  # exact figure under test
        store.add_measurement(run_id, device_id, settings, kind or key.partition(":")[0], m)
