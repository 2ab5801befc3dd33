"""The profiling plan: every distinct block (and, on request, operator) a space needs.

Pure and cheap: it walks the space stage by stage (`SearchSpace.unique_blocks`) instead of
enumerating subnets, so the plan of `elasticvit` takes well under a second.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from lutnas.errors import BadInputError
from lutnas.space import BlockSpec, SearchSpace, block_complexity

GRANULARITIES = ("block", "op", "both")


@dataclass(frozen=True)
class Plan:
    space: SearchSpace
    blocks: tuple[BlockSpec, ...]
    operators: tuple[BlockSpec, ...]

    @property
    def specs(self) -> tuple[BlockSpec, ...]:
        """Everything to measure: blocks first, then operators not already listed."""
        return self.blocks + self.operators

    def counts_by_kind(self) -> dict[str, int]:
        return dict(Counter(spec.kind for spec in self.specs))


def make_plan(
    space: SearchSpace,
    resolutions: Iterable[int] | None = None,
    granularity: str = "block",
    limit: int | None = None,
    sample_fraction: float | None = None,
    seed: int = 0,
) -> Plan:
    """Unique blocks of `space` at `resolutions`, optionally cut to a reproducible subset.

    `limit` keeps the first N blocks in a seeded shuffle and `sample_fraction` a seeded share; both
    shuffle before cutting so a partial plan still spans every stage and kind.
    """
    if granularity not in GRANULARITIES:
        raise BadInputError(f"granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}")
    if limit is not None and sample_fraction is not None:
        raise BadInputError("give --limit or --sample, not both")
    blocks = list(space.unique_blocks(list(resolutions) if resolutions else None))
    if limit is not None or sample_fraction is not None:
        rng = random.Random(seed)
        rng.shuffle(blocks)
        if sample_fraction is not None:
            if not 0 < sample_fraction <= 1:
                raise BadInputError(f"--sample must be in (0, 1], got {sample_fraction}")
            limit = max(1, round(sample_fraction * len(blocks)))
        if limit is not None and limit < 1:
            raise BadInputError(f"--limit must be at least 1, got {limit}")
        blocks = sorted(blocks[:limit], key=lambda s: (s.kind, s.key))
    operators: list[BlockSpec] = []
    if granularity in ("op", "both"):
        seen: dict[str, BlockSpec] = {}
        for block in blocks:
            for op in block.operators():
                seen.setdefault(op.key, op)
        operators = list(seen.values())
    if granularity == "op":
        blocks = []
    return Plan(space, tuple(blocks), tuple(operators))


# Export seconds per block per worker measured on the 2-core development host (2 workers):
# litert-torch 1.4 s (2026-12-02 evening, export_throughput_2026-12-02_evening.json and the A/B
# files beside it: 78.9-97.1 blocks/min over three runs, mean 85.4 in a random sample and 88.4 in
# plan order), ONNX 0.1 s (1,064/min); TorchScript well under a second; ExecuTorch 2.6 s
# (46.5/min, export_throughput_pte.json).
EXPORT_S_PER_BLOCK = {"tflite": 1.4, "onnx": 0.1, "torchscript": 0.3, "pte": 2.6}


# One pass over an eviction buffer: 64 MiB took ~6.5 ms on the development host (local_worker's
# llc_evictor, measured 2026-12-01), ~0.1 ms per MiB.
EVICT_MS_PER_MIB = 0.1


def run_overhead_ms(cache: str, pace: bool, core: int = 0, gmacs_per_s: float = 5.0,
                    invoke_ms: float = 0.05) -> float:
    """ms each warm-up and timed run costs beyond the model itself on the host worker: the cache
    state's evictions (local_worker.eviction_bytes, at EVICT_MS_PER_MIB) and, paced, one invoke of
    the pace model (estimated from its MACs like a block). 0 for warm, unpaced."""
    from lutnas.device_agents.local_worker import eviction_bytes
    from lutnas.profiler.export import PACE_SPEC

    before, before_pace = eviction_bytes(cache, core)
    evicted_mib = (before + (before_pace if pace else 0)) / 2**20
    pace_ms = block_complexity(BlockSpec.parse(PACE_SPEC)).macs / (gmacs_per_s * 1e6) + invoke_ms
    return evicted_mib * EVICT_MS_PER_MIB + (pace_ms if pace else 0.0)


@dataclass(frozen=True)
class PlanEstimate:
    """What a plan will cost before it runs: files to export and device time (estimates)."""

    keys: int
    cached: int
    export_minutes: float
    measurements_min: int
    measurements_max: int
    device_minutes_min: float
    device_minutes_max: float
    latency_ms_total: float  # estimated one-run latency of every key together
    push_files: int = 0  # files the device lacks, copied once (included in device time)
    push_mib: float = 0.0
    push_minutes: float = 0.0

    def lines(self) -> list[str]:
        pushes = ([f"pushes: {self.push_files} files ({self.push_mib:.1f} MiB) the device lacks, "
                   f"~{_duration(self.push_minutes)}, once (in the device time)"] if self.push_files else [])
        return [f"plan: {self.keys} keys, {self.cached} already exported, {self.keys - self.cached} "
                f"to export (~{_duration(self.export_minutes)})",
                f"measurements: {self.measurements_min} ({self.measurements_max} if every key needs "
                f"--max-trials)", *pushes,
                f"device time: ~{_duration(self.device_minutes_min)} ({_duration(self.device_minutes_max)} "
                f"at --max-trials); estimated one run of every key: {self.latency_ms_total:.1f} ms"]


def _duration(minutes: float) -> str:
    seconds = minutes * 60
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if minutes < 2 else f"{minutes:.1f} min"


def batch_key_runs(keys: int, reference_every: int) -> int:
    """Models a trial batch of `keys` keys runs: the keys and the drift reference before the first,
    after every `reference_every` and after the last (as `run._with_references` orders them)."""
    return keys + 1 + -(-keys // max(1, reference_every)) if keys else 0


def estimate_plan(plan: Plan, fmt: str, is_cached: Callable[[str], bool], trials: int, max_trials: int,
                  warmup: int, runs: int, export_workers: int = 2, gmacs_per_s: float = 5.0,
                  invoke_ms: float = 0.05, process_start_s: float = 1.0,
                  batch_size: int = 64, run_overhead_ms: float = 0.0, per_key_s: float = 0.0,
                  reference_every: int = 8, per_session_s: float = 0.0, session_size: int = 0,
                  push: tuple[int, float] = (0, 0.0), per_push_s: float = 0.0,
                  push_s_per_mib: float = 0.0, push_batch_s: float = 0.0) -> PlanEstimate:
    """Export minutes left (cache aware) and projected device minutes of `plan`.

    A key's latency is estimated from its MACs at `gmacs_per_s` (a phone's big core runs ~5 GMAC/s
    fp32 on one thread) plus the per-invoke overhead `invoke_ms`; each trial of a key costs
    (warmup + runs) such runs plus `run_overhead_ms` each (the host worker's eviction and pace model:
    `run_overhead_ms()`) plus `per_key_s` (a phone's runner start); each batch of `batch_size` keys
    `process_start_s`, and each runner session of `session_size` keys after a batch's first
    `per_session_s` (a phone's shell session; 0: a batch is one session); and the drift reference
    (the 90th-percentile key) runs as `batch_key_runs` counts. Once per run, the `push` (files,
    MiB) the device lacks are copied to it at `per_push_s` a file and `push_s_per_mib`, and each
    batch of that first trial pays `push_batch_s` before its pushes (`probe.files_to_push`).
    `invoke_ms`, `per_key_s`, `process_start_s`, `per_session_s` and the push costs are measured
    on the device by `probe.probe` (`--dry-run --probe`); the defaults are guesses (no pushes: the
    host reads its files in place)."""
    specs = plan.specs
    cached = sum(1 for spec in specs if is_cached(spec.key))
    per_block_s = EXPORT_S_PER_BLOCK.get(fmt, EXPORT_S_PER_BLOCK["tflite"])
    export_s = (len(specs) - cached) * per_block_s / max(1, export_workers)
    latency = [block_complexity(spec).macs / (gmacs_per_s * 1e6) + invoke_ms for spec in specs]
    reference_ms = float(np.percentile(latency, 90)) if latency else 0.0
    size = max(1, batch_size)
    batch_runs = [batch_key_runs(min(size, len(specs) - start), reference_every)
                  for start in range(0, len(specs), size)] or [0]
    batches, key_runs = len(batch_runs), sum(batch_runs)
    references = key_runs - len(specs)
    sessions = sum(max(1, -(-runs_b // session_size)) for runs_b in batch_runs) if session_size > 0 \
        else batches  # every batch opens one session, an empty plan's too
    per_trial_s = ((sum(latency) + references * reference_ms + run_overhead_ms * key_runs)
                   * (warmup + runs) / 1000.0 + per_key_s * key_runs + process_start_s * batches
                   + per_session_s * (sessions - batches))
    push_s = (per_push_s * push[0] + push_s_per_mib * push[1]  # the first trial's pushes
              + (push_batch_s * batches if push[0] else 0.0))
    return PlanEstimate(len(specs), cached, export_s / 60.0, len(specs) * trials,
                        len(specs) * max(trials, max_trials), (per_trial_s * trials + push_s) / 60.0,
                        (per_trial_s * max(trials, max_trials) + push_s) / 60.0, sum(latency),
                        push[0], push[1], push_s / 60.0)
