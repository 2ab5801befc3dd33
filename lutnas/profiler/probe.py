"""What one trial costs on a device beyond its timed runs, measured before a long profile.

A plan's device time is mostly not the models' latency: a phone starts `benchmark_model` once per
model and a shell session per few models, the host worker starts one Python process per batch, and
every run of every model pays the runner's per-invoke cost. `profile-device --dry-run --probe`
measures those on the device with one of the plan's blocks and an (almost) empty model
(`export_empty`), so the projection (`plan.estimate_plan`) rests on the device's own numbers instead
of constants. Nothing is stored.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lutnas.device_agents.base import DeviceAgent, ModelFile, RunSettings
from lutnas.errors import DeviceError
from lutnas.space.complexity import MIB, weight_mib

MIN_PUSH_MIB = 0.05  # files closer in size than this cannot separate a per-MiB cost from noise

if TYPE_CHECKING:
    from lutnas.profiler.export import ModelCache
    from lutnas.profiler.plan import Plan


@dataclass(frozen=True)
class InvocationCosts:
    """Seconds a trial costs beyond the models' timed runs (measured by `probe`).

    per_batch_s: one call of the agent's trial loop (a worker or runner session start).
    per_key_s: each model in a batch, beyond its warm-up and timed runs (a runner start on a phone,
        loading the model).
    run_ms: one run of the empty model: the per-invoke cost every run of every model pays.
    per_session_s: each runner session after a batch's first (a phone's shell session of
        `session_size` models and the cool-down read before it); per_batch_s holds the first.
    session_size: models per runner session (`DeviceAgent.models_per_session`); 0: one a batch.
    per_push_s: copying one model file the device lacks (a run's first trial pushes them), timed
        with copies of the empty model; 0 where the device reads the host's files in place.
    push_s_per_mib: what each MiB of a pushed file adds (the median block's push against the
        empty model's); 0 when the two files are about the same size.
    push_batch_s: what a batch that pushes pays once before its pushes (making the folder).
    """

    per_batch_s: float
    per_key_s: float
    run_ms: float
    per_session_s: float = 0.0
    session_size: int = 0
    per_push_s: float = 0.0
    push_s_per_mib: float = 0.0
    push_batch_s: float = 0.0

    def line(self, device: str) -> str:
        session = (f", {self.per_session_s:.2f} s per session of {self.session_size} models"
                   if self.session_size else "")
        push = (f", {self.per_push_s:.2f} s per pushed file + {self.push_s_per_mib:.2f} s per MiB"
                if self.per_push_s or self.push_s_per_mib else "")
        return (f"measured on {device}: {self.per_batch_s:.2f} s per trial batch, {self.per_key_s:.3f} s "
                f"per model{session}, {self.run_ms:.3f} ms per run of an empty model{push}")


def probe_files(plan: "Plan", fmt: str, cache: "ModelCache",
                resolutions: Sequence[int] | None = None) -> tuple[ModelFile, ModelFile]:
    """(the empty model at the smallest resolution, the plan's median block by MACs) exported into
    `cache` (ExportError as any export): what `probe` times."""
    from lutnas.profiler.export import export_empty, export_spec
    from lutnas.space import block_complexity

    empty = export_empty(min(resolutions or plan.space.resolutions), fmt, cache)
    specs = sorted(plan.specs, key=lambda spec: block_complexity(spec).macs)
    sample = export_spec(specs[len(specs) // 2], fmt, cache) if specs else empty
    return (ModelFile(empty.path, "probe", empty.sha256),
            ModelFile(sample.path, "probe-sample", sample.sha256))


def files_to_push(agent: DeviceAgent, plan: "Plan", fmt: str, cache: "ModelCache",
                  precision: str) -> tuple[int, float]:
    """(files, MiB) a run of `plan` would first copy to the device: the exported files it lacks
    (`DeviceAgent.missing_files`, their sizes) and every file not exported yet (its weights at
    `precision`, `space.complexity.weight_mib`: an int8 file's biases and scales are left out);
    (0, 0.0) where the device reads files in place. The run's agent removes what it pushed when it
    closes (unless --keep-files), so a rerun pushes again. DeviceError as the device's shell
    raises; OSError when a cached file cannot be read."""
    if not agent.pushes_files:
        return 0, 0.0
    exported, pending = [], []
    for spec in plan.specs:
        model = cache.get(spec.key, fmt)
        if model is None:
            pending.append(spec)
        else:
            exported.append(ModelFile(model.path, spec.key, model.sha256))
    missing = agent.missing_files(exported)
    mib = sum(Path(f.path).stat().st_size for f in missing) / MIB + weight_mib(pending, precision)
    return len(missing) + len(pending), mib


def _timed_push(agent: DeviceAgent, files: list[ModelFile]) -> float:
    start = time.perf_counter()
    agent.push_files(files)
    return time.perf_counter() - start


def _push_costs(agent: DeviceAgent, empty: ModelFile, sample: ModelFile,
                repeats: int) -> tuple[float, float, float]:
    """(s per pushed file, s per MiB, s per batch that pushes) from pushes of probe-only copies
    (the user's files on the device are never removed): one and two copies of the empty model
    (the slope is a file; the rest, less a check of files already there, the folder a batch makes
    before pushing) and one of the sample (its extra MiB)."""
    with tempfile.TemporaryDirectory(prefix="lutnas-probe-push-") as tmp:
        copies = []
        for name, source in (("e1", empty), ("e2", empty), ("s1", sample)):
            path = Path(tmp) / f"probe-push-{name}-{Path(source.path).name}"
            shutil.copyfile(source.path, path)
            copies.append(ModelFile(path, f"probe:push:{name}", source.sha256))
        e1, e2, s1 = copies
        one, present, two, big = [], [], [], []
        for _ in range(max(1, repeats)):
            agent.forget_files(copies)
            one.append(_timed_push(agent, [e1]))
            present.append(_timed_push(agent, [e1]))  # only the device's check: nothing pushed
            agent.forget_files([e1])
            two.append(_timed_push(agent, [e1, e2]))
            big.append(_timed_push(agent, [s1]))
        agent.forget_files(copies)
        per_file = max(0.0, statistics.median(two) - statistics.median(one))
        per_batch = max(0.0, statistics.median(one) - per_file - statistics.median(present))
        mib = (Path(s1.path).stat().st_size - Path(e1.path).stat().st_size) / MIB
        extra = statistics.median(big) - statistics.median(one)
    return per_file, (max(0.0, extra) / mib if mib >= MIN_PUSH_MIB else 0.0), per_batch


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


def probe(agent: DeviceAgent, settings: RunSettings, empty: ModelFile, sample: ModelFile | None = None,
          repeats: int = 3, copies: int = 8) -> InvocationCosts:
    """Time trials of one and of `copies` copies of `sample` (one of the plan's own models; the
    empty model when None), after one untimed trial that pushes the files and connects: the slope
    is one model's cost beyond its timed runs, the rest the batch's; the empty model's median is the
    per-run cost. Where the agent runs `models_per_session` models per runner session, `copies` is
    that many (one session) and a trial of one more (two sessions) prices a session (a simulated
    phone: 0.09 s per further session of 4 models; with it and the batch-opening reference charged,
    its projection moved from -22.4% to -20.5% of the run, benchmarks/results/dry_run_projection.json).
    The copies are one of the plan's own models: a real model costs more to load than the empty
    one. Where batches are one session (the host worker), `copies` (8) keeps the slope above the
    host's noise (4 copies probed 0.001-0.060 s a model on this host). Each wall time is the median
    of `repeats`: the profile pays the typical cost, and on a shared host one timing moves by tens
    of percent. Probed warm and unpaced: the estimate adds the eviction and pace model per run
    itself (`plan.run_overhead_ms`). Where the agent copies files to its device (`pushes_files`),
    pushes of probe-only copies are timed too (`_push_costs`): a simulated phone's run pushed every
    file once, ~0.1 s a model the projection had missed (-20.5% before, benchmarks/results/
    dry_run_projection.json for after).
    Raises DeviceError as the agent does, or when a probe model fails."""
    settings = dataclasses.replace(settings, cache="warm", pace=False)
    sample = sample or empty
    session = agent.models_per_session(settings)
    session = session if session >= 2 else 0  # one model a session: in per_key_s
    copies = session or max(2, copies)
    files = [ModelFile(sample.path, f"probe:{i}", sample.sha256) for i in range(copies + 1)]
    empty_file = ModelFile(empty.path, "probe:empty", empty.sha256)
    _timed_trial(agent, [empty_file, files[0]], settings)
    walls: dict[int, list[float]] = {1: [], copies: [], copies + 1: []}
    runs_ms, sample_ms = [], []
    for _ in range(max(1, repeats)):
        runs_ms.append(_timed_trial(agent, [empty_file], settings)[1])
        wall, ms = _timed_trial(agent, files[:1], settings)
        walls[1].append(wall)
        sample_ms.append(ms)
        walls[copies].append(_timed_trial(agent, files[:copies], settings)[0])
        if session:
            walls[copies + 1].append(_timed_trial(agent, files, settings)[0])
    timed_s = (settings.warmup + settings.runs) * statistics.median(sample_ms) / 1000.0
    one, many = statistics.median(walls[1]), statistics.median(walls[copies])
    per_key_total = max(0.0, (many - one) / (copies - 1))
    per_session = max(0.0, statistics.median(walls[copies + 1]) - many - per_key_total) if session else 0.0
    pushes = _push_costs(agent, empty_file, files[0], repeats) if agent.pushes_files else (0.0, 0.0, 0.0)
    return InvocationCosts(per_batch_s=max(0.0, one - per_key_total),  # includes its first session
                           per_key_s=max(0.0, per_key_total - timed_s), run_ms=statistics.median(runs_ms),
                           per_session_s=per_session, session_size=session, per_push_s=pushes[0],
                           push_s_per_mib=pushes[1], push_batch_s=pushes[2])
