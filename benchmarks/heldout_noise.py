"""How much of a proof's error is the held-out subnets' own measurement noise.

A held-out subnet's figure is the median of its trials, so it carries a standard error of its own;
a perfect predictor scored against it still misses ±5% whenever that noise does. From a
`predictor_accuracy.py` result and the store it measured into (its --work folder), this gives:

- each held-out figure's relative standard error (bootstrap of the median over its trials, with
  the pace units the table uses: scipy.stats.bootstrap, chosen over a hand-rolled resampler as the
  maintained, tested implementation);
- the share within ±5% a perfect predictor would reach against figures that noisy (normal errors
  with those standard errors: mean of erf(0.05 / (SE sqrt 2)));
- the predictor's own spread once that noise is taken out: sqrt(var(error) - mean(SE²)).

    .venv/bin/python benchmarks/heldout_noise.py \
        benchmarks/results/predictor_accuracy_elasticvit-onnxruntime-t1-r160-coldllc-paced_2026-12-03.json \
        --work /tmp/pa160

Writes results/heldout_noise_<result file's stem>.json and prints a table. Reads only: nothing is
measured.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from predictor_accuracy import parse_args, result_tag  # the script whose results this reads
from rich.console import Console
from rich.table import Table
from scipy.stats import bootstrap

from lutnas.profiler.subnets import pace_scales
from lutnas.space import SubnetConfig, subnet_key
from lutnas.tables.store import MeasurementStore
from lutnas.tables.table import LatencyTable

RESULTS = Path(__file__).parent / "results"
PREDICTOR = "LUT + correction"
BOUND = 0.05  # the issue's ±5% target


def relative_standard_errors(trials: list[list[float]], seed: int = 0) -> np.ndarray:
    """Bootstrap standard error of each list's median, divided by that median (a fraction)."""
    out = []
    for values in trials:
        data = np.asarray(values, dtype=float)
        if data.size < 2:
            out.append(np.nan)
            continue
        result = bootstrap((data,), np.median, n_resamples=4000, method="percentile",
                           random_state=np.random.default_rng(seed))
        out.append(float(result.standard_error) / float(np.median(data)))
    return np.asarray(out, dtype=float)


def noise_report(errors: np.ndarray, rel_se: np.ndarray) -> dict[str, Any]:
    """Observed ±5% share and spread of `errors` (predicted / measured - 1) against what the
    figures' own noise `rel_se` allows."""
    ok = np.isfinite(rel_se)
    ceiling = float(np.mean([math.erf(BOUND / (se * math.sqrt(2))) for se in rel_se[ok]]))
    own = math.sqrt(max(float(np.var(errors[ok]) - np.mean(rel_se[ok] ** 2)), 0.0))
    return {
        "subnets": int(ok.sum()),
        "within_5_observed": float(np.mean(np.abs(errors) < BOUND)),
        "within_5_perfect_predictor": ceiling,
        "error_mean_pct": 100 * float(np.mean(errors)), "error_sd_pct": 100 * float(np.std(errors)),
        "figure_se_median_pct": 100 * float(np.median(rel_se[ok])),
        "figure_se_mean_pct": 100 * float(np.mean(rel_se[ok])),
        "figure_se_p90_pct": 100 * float(np.quantile(rel_se[ok], 0.9)),
        "predictor_own_sd_pct": 100 * own,
    }


@dataclass
class Proof:
    """What a predictor_accuracy result measured, read once: its table, the held-out configs and
    the trial figures (pace units applied) of the held-out subnets and of their blocks."""

    result: dict[str, Any]
    table: LatencyTable
    configs: list[SubnetConfig]
    subnet_trials: list[list[float]]
    block_trials: dict[str, list[float]]

    @classmethod
    def load(cls, result: dict[str, Any], work: Path, tag: str | None = None) -> "Proof":
        """`tag`: the store's and table's name in `work` (default: from the result's command)."""
        tag = tag or result_tag(parse_args(result["command"].split()[1:]))
        table = LatencyTable.load(work / f"{tag}.parquet")
        space = table.load_space()
        configs = [SubnetConfig.from_dict(s["config"]) for s in result["subnets"]]
        subnets = [subnet_key(space, c) for c in configs]
        blocks = sorted({b.key for c in configs for b in space.blocks_of(c)})
        with MeasurementStore(work / f"{tag}.sqlite") as store:
            done = store.trial_medians(table.device.device_id, table.run_settings(), subnets + blocks,
                                       scales=pace_scales(table))
        return cls(result, table, configs, [list(done.get(k, [])) for k in subnets],
                   {k: list(done.get(k, [])) for k in blocks})

    @property
    def predicted(self) -> np.ndarray:
        return np.asarray([s[PREDICTOR] for s in self.result["subnets"]], dtype=float)

    @property
    def errors(self) -> np.ndarray:
        """predicted / measured - 1 of each held-out subnet under PREDICTOR."""
        measured = np.asarray([s["measured_ms"] for s in self.result["subnets"]], dtype=float)
        return self.predicted / measured - 1


def lut_sum_standard_errors(proof: Proof) -> np.ndarray:
    """Relative standard error of each held-out subnet's corrected prediction from its blocks' own
    noise: each block figure's bootstrap SE (as `relative_standard_errors`, times the table's
    figure), added in quadrature with the block's multiplicity in the subnet (block trials are
    independent processes), times the correction's scale (the only term the block sum passes
    through), over the prediction."""
    keys = list(proof.block_trials)
    figures = proof.table.frame["median_ms"].reindex(keys).to_numpy(dtype=float)
    se = dict(zip(keys, relative_standard_errors([proof.block_trials[k] for k in keys]) * figures))
    space = proof.table.load_space()
    scale = float(proof.result["correction_full"]["scale"])
    out = []
    for config, predicted in zip(proof.configs, proof.predicted):
        blocks = collections.Counter(b.key for b in space.blocks_of(config))
        out.append(scale * math.sqrt(sum((n * se[k]) ** 2 for k, n in blocks.items())) / predicted)
    return np.asarray(out, dtype=float)


def correction_standard_errors(proof: Proof) -> np.ndarray:
    """Relative standard error of each held-out prediction from the correction's fitted terms
    (`Correction.std_ms`: their covariance from the calibration subnets' residuals)."""
    from lutnas.predictors.correction import Correction
    from lutnas.predictors.lut import LutPredictor

    sums, _, blocks = LutPredictor(proof.table.load_space()).fit(proof.table).block_sums(proof.configs)
    std = Correction.from_dict(proof.result["correction_full"]).std_ms(sums, blocks)
    return np.asarray(std, dtype=float) / proof.predicted


def analyse(result: dict[str, Any], work: Path, tag: str | None = None) -> dict[str, Any]:
    """`noise_report` of a predictor_accuracy result, with the trials per held-out subnet and how
    much of the predictor's own spread the block figures' noise and the correction's fitted terms
    explain."""
    proof = Proof.load(result, work, tag)
    report = noise_report(proof.errors, relative_standard_errors(proof.subnet_trials))
    lut_se = lut_sum_standard_errors(proof)
    own, lut = report["predictor_own_sd_pct"], 100 * float(np.sqrt(np.mean(lut_se ** 2)))
    fit = 100 * float(np.sqrt(np.nanmean(correction_standard_errors(proof) ** 2)))
    return report | {
        "predictor": PREDICTOR,
        "trials_per_subnet_median": float(np.median([len(t) for t in proof.subnet_trials])),
        "lut_sum_se_median_pct": 100 * float(np.median(lut_se)), "lut_sum_se_rms_pct": lut,
        "correction_fit_se_rms_pct": fit,
        # what neither the held-out figures' nor the blocks' noise nor the correction's fitted
        # terms explain: what a corrected sum of isolated blocks misses about a whole model
        "unexplained_sd_pct": math.sqrt(max(own ** 2 - lut ** 2 - fit ** 2, 0.0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="a predictor_accuracy_*.json")
    parser.add_argument("--work", type=Path, required=True, help="its --work folder (store, table)")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    report = analyse(result, args.work) | {"result": args.result.name}
    table = Table(title=f"held-out noise of {args.result.name} ({PREDICTOR})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in report.items():
        table.add_row(key.replace("_", " "), f"{value:.3g}" if isinstance(value, float) else str(value))
    Console(highlight=False).print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"heldout_noise_{args.result.stem}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
