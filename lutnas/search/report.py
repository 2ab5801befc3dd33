"""Search outputs: best.json, candidates.csv and the Pareto plots (matplotlib, Agg, PNG).

The objective's column and axis carry its own name: `top1` for supernet accuracy, `proxy_mmacs` /
`proxy_params` for a proxy, so nothing downstream can mistake a proxy for accuracy.
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lutnas.errors import ConfigError, LutnasError
from lutnas.fileio import atomic_write_text
from lutnas.plotting import pyplot, save_figure
from lutnas.search.constraints import CostModel
from lutnas.search.evolution import SearchResult, result_summary
from lutnas.space import SearchSpace, released_config, released_models


@dataclass(frozen=True)
class ReleasedNeighbour:
    """The released model whose predicted latency is nearest the winner's, priced the same way."""

    name: str
    latency_ms: float
    mmacs: float
    params: float


def nearest_released(space: SearchSpace, cost_model: CostModel,
                     latency_ms: float) -> ReleasedNeighbour | None:
    """Among ElasticViT's released models that are subnets of `space`, the one whose predicted
    latency (this search's cost model: same table, fill and correction) is nearest `latency_ms`;
    None when none fits the space or the table cannot price them."""
    configs = {}
    for name in released_models():
        try:
            configs[name] = released_config(name, space)
        except ConfigError:
            continue  # a released model this space cannot express
    if not configs:
        return None
    try:
        costs = cost_model.costs(list(configs.values()))
    except LutnasError:
        return None
    i = int(np.argmin(np.abs(costs.latency_ms - latency_ms)))
    return ReleasedNeighbour(list(configs)[i], float(costs.latency_ms[i]), float(costs.mmacs[i]),
                             float(costs.params[i]))


def write_best(result: SearchResult, path: Path, extra: dict[str, Any] | None = None) -> Path:
    body = result_summary(result)
    body.update(extra or {})
    atomic_write_text(path, json.dumps(body, indent=2, sort_keys=True, default=str) + "\n")
    return path


def write_candidates(result: SearchResult, path: Path) -> Path:
    """Every scored candidate; the objective column is named after the objective (e.g. top1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["generation", "latency_ms", "params", "mmacs", result.objective_name, "config"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for cand in result.candidates:
            row = cand.row()
            writer.writerow([row["generation"], f"{row['latency_ms']:.6f}", row["params"],
                             f"{row['mmacs']:.4f}", f"{row['score']:.6g}", row["config"]])
    return path


def plot_pareto(result: SearchResult, path: Path, title: str = "") -> Path:
    """Objective against predicted latency: every candidate, the Pareto front, window and winner."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    c = result.constraints
    ax.axvspan(c.low_ms, c.high_ms, color="tab:green", alpha=0.12, label="latency window")
    ax.axvline(c.target_ms, color="tab:green", lw=1.2, ls="--", label=f"target {c.target_ms:g} ms")
    xs = [cand.latency_ms for cand in result.candidates]
    ys = [cand.score for cand in result.candidates]
    gens = [cand.generation for cand in result.candidates]
    points = ax.scatter(xs, ys, c=gens, cmap="viridis", s=9, alpha=0.7, label="scored candidates")
    front = result.pareto_front()
    ax.plot([f.latency_ms for f in front], [f.score for f in front], color="tab:red", lw=1.3,
            marker="o", ms=3, label="Pareto front")
    ax.scatter([result.best.latency_ms], [result.best.score], marker="*", s=180, color="tab:red",
               edgecolor="black", zorder=5, label="winner")
    fig.colorbar(points, ax=ax, label="generation first scored")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel(result.objective_label)
    # Titles carry the device and settings, longer than the axes: wrap so none is cut off.
    ax.set_title(textwrap.fill(title or f"search under {c.target_ms:g} ms", 70), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def plot_winners(results: Sequence[SearchResult], path: Path, title: str = "") -> Path:
    """One point per target: the winner's objective against its predicted latency."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ordered = sorted(results, key=lambda r: r.constraints.target_ms)
    ax.plot([r.best.latency_ms for r in ordered], [r.best.score for r in ordered], color="tab:red",
            marker="*", ms=12, lw=1.2, label="winner per target")
    for r in ordered:
        c = r.constraints
        ax.axvspan(c.low_ms, c.high_ms, color="tab:green", alpha=0.08)
        ax.axvline(c.target_ms, color="tab:green", lw=1, ls="--")
        ax.annotate(f"{c.target_ms:g} ms", (r.best.latency_ms, r.best.score), fontsize=7,
                    xytext=(4, -10), textcoords="offset points")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel(ordered[0].objective_label if ordered else "objective")
    ax.set_title(textwrap.fill(title or "winners per latency target", 70), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)
