"""FeatureLatencyModel on synthetic but realistic whole-network latencies (issue 17).

The data imitate NAS-Bench-201 cells measured end to end on a phone: 6 edges, each one of 5
operations (one-hot features, 30 columns); latency = a fixed overhead + the sum of per-edge operation
costs (each edge position has its own cost, as feature-map sizes differ) + interactions between
edges that feed the same node (two convolutions into one node contend for cache, a pooling next to
a convolution fuses) + log-normal noise of a few percent. For 900 and 10,000 training networks the
script prints, for every candidate and for the automatically chosen one, the share of held-out
networks within +-5% and +-10%, MAPE, Spearman's rank correlation, the empirical coverage of the
90% interval and the fit time; the table and a JSON file go to benchmarks/results/.

    .venv/bin/python benchmarks/feature_model.py            # ~ a few minutes on 2 shared cores
    .venv/bin/python benchmarks/feature_model.py --sizes 900 --test 2000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from lutnas.predictors import FeatureLatencyModel
from lutnas.predictors.feature_model import CANDIDATES

OPS = ("none", "skip", "conv1x1", "conv3x3", "avgpool")
OP_MS = {"none": 0.0, "skip": 0.04, "conv1x1": 0.55, "conv3x3": 1.6, "avgpool": 0.28}
NODE_OF_EDGE = (1, 2, 2, 3, 3, 3)  # NAS-Bench-201: node 1 <- e0; node 2 <- e1, e2; node 3 <- e3..e5


def synthetic_networks(n: int, seed: int, noise: float = 0.03) -> tuple[pd.DataFrame, np.ndarray]:
    """(one-hot frame of n cells, latency ms); the device (costs) is fixed, the cells vary by seed."""
    device = np.random.default_rng(12345)
    edge_factor = device.uniform(0.6, 1.5, size=len(NODE_OF_EDGE))
    cost = np.array([[OP_MS[op] * f for op in OPS] for f in edge_factor])
    rng = np.random.default_rng(seed)
    choice = rng.integers(0, len(OPS), size=(n, len(NODE_OF_EDGE)))
    latency = 3.0 + cost[np.arange(len(NODE_OF_EDGE)), choice].sum(axis=1)
    conv = np.isin(choice, [2, 3])
    pool = choice == 4
    for i in range(len(NODE_OF_EDGE)):
        for j in range(i + 1, len(NODE_OF_EDGE)):
            if NODE_OF_EDGE[i] != NODE_OF_EDGE[j]:
                continue
            latency += 0.35 * (conv[:, i] & conv[:, j])  # cache contention
            latency -= 0.12 * ((conv[:, i] & pool[:, j]) | (pool[:, i] & conv[:, j]))  # fusion
    latency *= np.exp(noise * rng.standard_normal(n))
    frame = pd.DataFrame({f"e{e}={op}": (choice[:, e] == k).astype(float)
                          for e in range(len(NODE_OF_EDGE)) for k, op in enumerate(OPS)})
    return frame, latency


def score(predicted: np.ndarray, lower: np.ndarray, upper: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    error = np.abs(predicted / truth - 1.0)
    return {"within5": float(np.mean(error <= 0.05)), "within10": float(np.mean(error <= 0.10)),
            "mape": float(np.mean(error)), "spearman": float(spearmanr(predicted, truth)[0]),
            "coverage90": float(np.mean((lower <= truth) & (truth <= upper))),
            "width90": float(np.mean((upper - lower) / predicted))}


def run_size(n: int, test: tuple[pd.DataFrame, np.ndarray], seed: int) -> list[dict[str, Any]]:
    """Every candidate and the automatic choice, fitted on n networks and scored on `test`."""
    train_x, train_y = synthetic_networks(n, seed)
    rows = []
    for method in ["auto", *CANDIDATES]:
        start = time.perf_counter()
        model = FeatureLatencyModel(method=method, n_jobs=1).fit(train_x, train_y)
        fit_s = time.perf_counter() - start
        predicted, lower, upper = model.predict(test[0], interval=0.9)
        row = {"train": n, "method": method, "chosen": model.method_, "fit_s": fit_s,
               "cv_within10": model.cv_[model.method_]["within10"],
               **score(predicted, lower, upper, test[1])}
        rows.append(row)
        print(f"{n:>6} {method:<13} {model.method_:<13} {row['within5']:6.1%} {row['within10']:6.1%} "
              f"{row['mape']:6.2%} {row['spearman']:6.3f} {row['coverage90']:6.1%} "
              f"{row['width90']:6.1%} {row['cv_within10']:6.1%} {fit_s:6.1f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[900, 10_000])
    parser.add_argument("--test", type=int, default=5000, help="held-out networks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "feature_model")
    args = parser.parse_args()
    test = synthetic_networks(args.test, seed=10_000 + args.seed)
    print(f"{'train':>6} {'method':<13} {'chosen':<13} {'+-5%':>6} {'+-10%':>6} {'MAPE':>6} "
          f"{'rho':>6} {'cov90':>6} {'width':>6} {'cv10':>6} {'fit s':>6}")
    rows = []
    for n in args.sizes:
        rows += run_size(n, test, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    args.out.with_suffix(".txt").write_text(table.to_string(index=False, float_format="%.4f") + "\n")
    meta = {"test_rows": args.test, "noise": 0.03, "seed": args.seed,
            "load_avg": os.getloadavg()[0], "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {args.out.with_suffix('.json')} and .txt")


if __name__ == "__main__":
    main()
