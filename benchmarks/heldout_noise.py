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
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.stats import bootstrap

from lutnas.profiler.subnets import pace_scales
from lutnas.space import SearchSpace, SubnetConfig, subnet_key
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


def held_out_trials(result: dict[str, Any], work: Path,
                    tag: str | None = None) -> tuple[list[list[float]], np.ndarray]:
    """Each held-out subnet's trial figures (pace units applied) and its error under PREDICTOR;
    `tag`: the store's and table's name in `work` (default: rebuilt from the result)."""
    tag = tag or _tag_from(result)
    table = LatencyTable.load(work / f"{tag}.parquet")
    space: SearchSpace = table.load_space()
    keys = [subnet_key(space, SubnetConfig.from_dict(s["config"])) for s in result["subnets"]]
    with MeasurementStore(work / f"{tag}.sqlite") as store:
        done = store.trial_medians(table.device.device_id, table.run_settings(), keys,
                                   scales=pace_scales(table))
    errors = np.asarray([s[PREDICTOR] / s["measured_ms"] - 1 for s in result["subnets"]], dtype=float)
    return [list(done.get(k, [])) for k in keys], errors


def _tag_from(result: dict[str, Any]) -> str:
    """The store/table name predictor_accuracy.py gave this result (its `tag`)."""
    s, words = result["settings"], result.get("command", "").split()
    given = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--resolution"]
    res = f"-r{'-'.join(given)}" if given else ""
    return (f"{result['space']}-{s['runtime']}-t{s['threads']}{res}"
            + ("-" + s["cache"].replace("-", "") if s["cache"] != "warm" else "")
            + (f"-{s['precision']}" if s["precision"] != "fp32" else "") + ("-paced" if s["pace"] else ""))


def lut_sum_standard_errors(result: dict[str, Any], work: Path, tag: str | None = None) -> np.ndarray:
    """Relative standard error of each held-out subnet's corrected prediction from its blocks' own
    noise: each block figure's bootstrap SE (as `relative_standard_errors`), added in quadrature
    with the block's multiplicity in the subnet (block trials are independent processes), times
    the correction's scale (the only term the block sum passes through), over the prediction."""
    tag = tag or _tag_from(result)
    table = LatencyTable.load(work / f"{tag}.parquet")
    space: SearchSpace = table.load_space()
    configs = [SubnetConfig.from_dict(s["config"]) for s in result["subnets"]]
    keys = sorted({b.key for c in configs for b in space.blocks_of(c)})
    with MeasurementStore(work / f"{tag}.sqlite") as store:
        done = store.trial_medians(table.device.device_id, table.run_settings(), keys,
                                   scales=pace_scales(table))
    figure = {k: float(np.median(done[k])) for k in keys if done.get(k)}  # the table's statistic
    se = dict(zip(keys, relative_standard_errors([done.get(k, []) for k in keys]) *
                  np.asarray([figure.get(k, np.nan) for k in keys])))
    scale = float(result["correction_full"]["scale"])
    out = []
    for config, subnet in zip(configs, result["subnets"]):
        blocks = [b.key for b in space.blocks_of(config)]
        variance = sum((blocks.count(k) * se[k]) ** 2 for k in set(blocks))
        out.append(scale * math.sqrt(variance) / float(subnet[PREDICTOR]))
    return np.asarray(out, dtype=float)


def correction_standard_errors(result: dict[str, Any], work: Path, tag: str | None = None) -> np.ndarray:
    """Relative standard error of each held-out prediction from the correction's fitted terms
    (`Correction.std_ms`: their covariance from the calibration subnets' residuals)."""
    from lutnas.predictors.correction import Correction
    from lutnas.predictors.lut import LutPredictor

    table = LatencyTable.load(work / f"{tag or _tag_from(result)}.parquet")
    space = table.load_space()
    configs = [SubnetConfig.from_dict(s["config"]) for s in result["subnets"]]
    sums, _, blocks = LutPredictor(space).fit(table).block_sums(configs)
    std = Correction.from_dict(result["correction_full"]).std_ms(sums, blocks)
    return np.asarray(std, dtype=float) / np.asarray([s[PREDICTOR] for s in result["subnets"]], float)


def analyse(result: dict[str, Any], work: Path, tag: str | None = None) -> dict[str, Any]:
    """`noise_report` of a predictor_accuracy result, with the trials per held-out subnet and how
    much of the predictor's own spread the block figures' noise explains."""
    trials, errors = held_out_trials(result, work, tag)
    report = noise_report(errors, relative_standard_errors(trials))
    lut_se = lut_sum_standard_errors(result, work, tag)
    own, lut = report["predictor_own_sd_pct"], 100 * float(np.sqrt(np.mean(lut_se ** 2)))
    fit = 100 * float(np.sqrt(np.nanmean(correction_standard_errors(result, work, tag) ** 2)))
    return report | {
        "predictor": PREDICTOR,
        "trials_per_subnet_median": float(np.median([len(t) for t in trials])),
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
