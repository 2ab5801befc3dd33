"""What one trial costs on a device beyond its timed runs, measured before a long profile.

A plan's device time is mostly not the models' latency: a phone starts `benchmark_model` once per
model, the host worker starts one Python process per batch, and every run of every model pays the
runner's per-invoke cost. `profile-device --dry-run --probe` measures those three on the device with
an (almost) empty model (`export_empty`), so the projection (`plan.estimate_plan`) rests on the
device's own numbers instead of constants. Nothing is stored.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from lutnas.device_agents.base import DeviceAgent, ModelFile, RunSettings
from lutnas.errors import DeviceError


@dataclass(frozen=True)
class InvocationCosts:
    """Seconds a trial costs beyond the models' timed runs (measured by `probe`).

    per_batch_s: one call of the agent's trial loop (a worker or runner session start).
    per_key_s: each model in a batch, beyond its warm-up and timed runs (a runner start on a phone,
        loading the model).
    run_ms: one run of the empty model: the per-invoke cost every run of every model pays.
    """

    per_batch_s: float
    per_key_s: float
    run_ms: float

    def line(self, device: str) -> str:
        return (f"measured on {device}: {self.per_batch_s:.2f} s per trial batch, {self.per_key_s:.3f} s "
                f"per model, {self.run_ms:.3f} ms per run of an empty model")


def _timed_trial(agent: DeviceAgent, files: list[ModelFile], settings: RunSettings) -> tuple[float, float]:
    """(wall seconds of one trial over `files`, the empty model's median ms) ; DeviceError when it
    failed (a probe that cannot run the empty model cannot say anything of the plan)."""
    start = time.perf_counter()
    results = agent.measure_batch(files, settings, 0)
    wall = time.perf_counter() - start
    bad = [m.status for m in results if not m.ok]
    if bad:
        raise DeviceError(f"the probe's empty model did not run on the device: {bad[0]}; fix that "
                          f"first (the profile would fail the same way)")
    return wall, min(m.median_ms for m in results if m.median_ms is not None)


def probe(agent: DeviceAgent, settings: RunSettings, empty: ModelFile, repeats: int = 2) -> InvocationCosts:
    """Time trials of one and of two copies of `empty` (after one untimed trial that pushes the file
    and connects): the difference is one model's cost, the rest the batch's. Each is the fastest of
    `repeats` (a start-up cost is a floor; slower repeats are the host's noise). Raises DeviceError
    as the agent does, or when the empty model fails. Probed warm and unpaced: the estimate adds
    the eviction and pace model per run itself (`plan.run_overhead_ms`)."""
    settings = dataclasses.replace(settings, cache="warm", pace=False)
    one = [ModelFile(empty.path, "probe:1", empty.sha256)]
    two = one + [ModelFile(empty.path, "probe:2", empty.sha256)]
    _timed_trial(agent, one, settings)
    walls_one, walls_two, runs_ms = [], [], []
    for _ in range(max(1, repeats)):
        wall, ms = _timed_trial(agent, one, settings)
        walls_one.append(wall)
        runs_ms.append(ms)
        walls_two.append(_timed_trial(agent, two, settings)[0])
    run_ms = min(runs_ms)
    timed_s = (settings.warmup + settings.runs) * run_ms / 1000.0
    per_key_total = max(0.0, min(walls_two) - min(walls_one))
    return InvocationCosts(per_batch_s=max(0.0, min(walls_one) - per_key_total),
                           per_key_s=max(0.0, per_key_total - timed_s), run_ms=run_ms)
