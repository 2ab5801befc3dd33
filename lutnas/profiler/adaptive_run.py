"""Adaptive profiling on a device: measure a space-covering sample, fit, measure where least certain.

The selection and the stopping rule are pure (`lutnas.predictors.adaptive`); this module only moves
data between them and a measuring function. The measuring function is the profiling loop's
`measure_files` when one is passed (phones, fresh processes per trial, QC), or `measure_in_process`,
an in-process host timer that is good enough for development, tests and benchmarks on the host but
knows nothing of quality control: one process per runtime shares one offset across all blocks, so
its figures are consistent with each other but not with a fresh-process profile.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lutnas.errors import BadInputError, DeviceError
from lutnas.predictors.adaptive import AdaptiveSelector, StopDecision, StoppingRule
from lutnas.predictors.learned import LearnedPredictor
from lutnas.profiler.export import RUNTIME_FORMATS, ModelCache, export_many, format_for
from lutnas.space import BlockSpec
from lutnas.supernet.blocks import example_input

# keys -> median ms; may take any time; what it returns is what was measured.
MeasureFn = Callable[[Sequence[BlockSpec]], dict[str, float]]


# ------------------------------------------------------------------------------------------------
# In-process host timing.

def _runner_for(runtime: str, path: Path, spec: BlockSpec) -> Callable[[], Any]:
    example = example_input(spec)
    if runtime == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"input": example.numpy()}
        return lambda: session.run(None, feed)
    if runtime == "tflite":
        from lutnas.device_agents.runtimes import load_tflite_interpreter

        interpreter = load_tflite_interpreter(str(path), threads=1)
        interpreter.allocate_tensors()
        array = example.permute(0, 2, 3, 1).contiguous() if spec.record.spatial_input else example
        index = interpreter.get_input_details()[0]["index"]
        interpreter.set_tensor(index, array.numpy())
        return interpreter.invoke
    if runtime == "torch":
        import torch

        torch.set_num_threads(1)
        module = torch.jit.load(str(path)).eval()

        def run() -> Any:
            with torch.no_grad():
                return module(example)

        return run
    raise BadInputError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIME_FORMATS)}")


def measure_in_process(specs: Sequence[BlockSpec], runtime: str = "onnxruntime",
                       cache: ModelCache | None = None, runs: int = 15, rounds: int = 3,
                       warmup: int = 3, seed: int = 0, workers: int = 2) -> dict[str, float]:
    """key -> median over `rounds` of the median of `runs` timed calls, rounds interleaved across
    blocks in a shuffled order so a slow spell of the (shared) host hits every block alike."""
    cache = cache or ModelCache()
    fmt = RUNTIME_FORMATS.get(runtime)
    if fmt is None:
        raise BadInputError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIME_FORMATS)}")
    exported = export_many(list(specs), fmt, cache, workers=workers)
    runners = {s.key: _runner_for(runtime, exported[s.key].path, s) for s in specs}
    for run in runners.values():
        for _ in range(warmup):
            run()
    per_round: dict[str, list[float]] = {key: [] for key in runners}
    order = list(runners)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for key in order:
            run = runners[key]
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                run()
                samples.append((time.perf_counter() - start) * 1e3)
            per_round[key].append(statistics.median(samples))
    return {key: statistics.median(values) for key, values in per_round.items()}


def store_measurer(agent: Any, settings: Any, trials: int, store: Any,
                   cache: ModelCache | None = None, run_id: int | None = None) -> MeasureFn:
    """A MeasureFn over the profiling loop's `measure_files`: fresh-process trials, QC, resume, and
    every measurement committed to `store` (what `profile-device --adaptive` should use)."""
    from lutnas.device_agents.base import ModelFile
    from lutnas.profiler.run import measure_files

    cache = cache or ModelCache()
    fmt = format_for(settings.runtime, settings.precision)

    def measure(specs: Sequence[BlockSpec]) -> dict[str, float]:
        exported = export_many(list(specs), fmt, cache)
        figures: dict[str, float] = {}
        for kind in sorted({s.kind for s in specs}):
            files = [ModelFile(exported[s.key].path, s.key, exported[s.key].sha256)
                     for s in specs if s.kind == kind]
            figures.update(measure_files(agent, files, kind, settings, trials, store, run_id))
        return figures

    return measure


def in_process_measurer(runtime: str = "onnxruntime", cache: ModelCache | None = None,
                        **kwargs: Any) -> MeasureFn:
    return lambda specs: measure_in_process(specs, runtime, cache, **kwargs)


# ------------------------------------------------------------------------------------------------
# The adaptive loop.

@dataclass
class AdaptiveResult:
    measured: dict[str, float]
    predictor: LearnedPredictor
    decision: StopDecision
    history: list[dict[str, float]] = field(default_factory=list)

    def table_frame(self, specs: Sequence[BlockSpec]) -> pd.DataFrame:
        """Every spec of the plan: measured entries as measured, the rest predicted and marked so."""
        predicted, spread = self.predictor.predict_blocks(specs, return_spread=True, use_measured=False)
        rows = []
        for spec, ms, sd in zip(specs, predicted, spread):
            if spec.key in self.measured:
                rows.append({"key": spec.key, "kind": spec.kind, "median_ms": self.measured[spec.key],
                             "spread_ms": 0.0, "source": "measured"})
            else:
                rows.append({"key": spec.key, "kind": spec.kind, "median_ms": float(ms),
                             "spread_ms": float(sd), "source": "predicted:learned"})
        return pd.DataFrame(rows).set_index("key")


def run_adaptive(specs: Sequence[BlockSpec], measure: MeasureFn, budget_minutes: float,
                 error_bound: float = 0.05, initial: int | None = None, batch: int | None = None,
                 seed: int = 0, clock: Callable[[], float] = time.monotonic,
                 on_step: Callable[[dict[str, float]], None] | None = None) -> AdaptiveResult:
    """Measure until the budget is spent or the held-out block error is below `error_bound`.

    The held-out error is prequential: each batch is predicted before it is measured, so its error is
    that of blocks the predictor had not seen (pessimistic, since the batch was chosen where the
    predictor was least sure).
    """
    specs = list(specs)
    if not specs:
        raise BadInputError("adaptive profiling needs a non-empty plan")
    selector = AdaptiveSelector(specs, initial=initial, batch=batch, seed=seed)
    rule = StoppingRule(budget_s=budget_minutes * 60.0, error_bound=error_bound)
    start = clock()
    measured: dict[str, float] = {}
    predictor = LearnedPredictor(random_state=seed)
    history: list[dict[str, float]] = []
    heldout_error: float | None = None
    proposal = selector.initial_sample()
    while True:
        if proposal:
            before = None
            if measured:
                before = predictor.predict_blocks(proposal, use_measured=False)
            got = measure(proposal)
            if not got:
                raise DeviceError("the measuring function returned nothing for a batch of "
                                  f"{len(proposal)} blocks; check the device")
            measured.update(got)
            if before is not None:
                truth = np.array([got.get(s.key, np.nan) for s in proposal])
                ok = np.isfinite(truth)
                heldout_error = float(np.mean(np.abs(before[ok] - truth[ok]) / truth[ok]))
            predictor = LearnedPredictor(random_state=seed).fit(measured)
        elapsed = clock() - start
        step = {"measured": float(len(measured)), "elapsed_s": elapsed,
                "heldout_mape": float("nan") if heldout_error is None else heldout_error}
        history.append(step)
        if on_step:
            on_step(step)
        remaining = [s for s in specs if s.key not in measured]
        decision = rule.check(elapsed, heldout_error, len(remaining),
                              per_block_s=elapsed / max(1, len(measured)))
        if decision.stop:
            return AdaptiveResult(measured, predictor, decision, history)
        proposal = selector.next_batch(predictor, remaining, decision.max_next)


# ------------------------------------------------------------------------------------------------
# One call for `profile-device --adaptive --budget-minutes M` (cli/profile.py wires the flags).

def profile_adaptive(agent: Any, space: Any, settings: Any, store: Any, budget_minutes: float,
                     error_bound: float = 0.05, trials: int = 5, resolutions: Sequence[int] | None = None,
                     cache: ModelCache | None = None, seed: int = 0, argv: Sequence[str] = (),
                     on_step: Callable[[dict[str, float]], None] | None = None) -> AdaptiveResult:
    """Adaptive profiling of `space` on `agent`, every measurement committed to `store` under one
    run; the returned result holds the fitted learned predictor and what was measured."""
    from lutnas.profiler.plan import make_plan

    plan = make_plan(space, resolutions)
    info = agent.info()
    store.upsert_device(info)
    run_id = store.start_run(info.device_id, settings, space, "block", list(argv))  # keeps its YAML
    measure = store_measurer(agent, settings, trials, store, cache, run_id)
    result: AdaptiveResult | None = None
    try:
        result = run_adaptive(list(plan.blocks), measure, budget_minutes, error_bound, seed=seed,
                              on_step=on_step)
        return result
    finally:
        summary: dict[str, Any] = {"adaptive": True, "budget_minutes": budget_minutes}
        if result is not None:
            summary.update(measured=len(result.measured), plan=len(plan.blocks),
                           stop=result.decision.reason)
        store.finish_run(run_id, summary)


def completed_table(table: Any, result: AdaptiveResult, specs: Sequence[BlockSpec]) -> Any:
    """`table` (built from the store: measured rows) plus every other plan block, predicted by the
    adaptive run's learned predictor and marked `source = predicted:learned`."""
    missing = [s for s in specs if not table.has(s.key)]
    if not missing:
        return table
    ms, spread = result.predictor.predict_blocks(missing, return_spread=True, use_measured=False)
    predicted = pd.DataFrame({"median_ms": ms, "mean_ms": ms, "std_ms": spread},
                             index=[s.key for s in missing])
    full = table.completed_with(predicted, source="predicted:learned")
    full.metadata["adaptive"] = {"measured": len(result.measured), "predicted": len(missing),
                                 "stop": result.decision.reason}
    return full
