"""Comparing two latency tables: B / A ratios (two devices, two runtimes), and what a rebuild changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lutnas.plotting import pyplot, readable_log_axes, save_figure
from lutnas.tables.table import IDENTITY, LatencyTable

# A key whose figure moved less than this between two builds of one table has not changed: the
# same trials aggregate to the same number, while new trials move it by percents.
CHANGE_TOLERANCE = 1e-9


@dataclass
class TableDiff:
    """B / A latency ratios of the keys two tables share (two devices, or two runtimes)."""

    per_key: pd.DataFrame  # index key; a_ms, b_ms, ratio, kind; sorted by ratio
    per_kind: pd.DataFrame  # index kind; keys, a_ms, b_ms, ratio_of_sums, median/min/max ratio
    only_a: int
    only_b: int


def diff_tables(a: LatencyTable, b: LatencyTable) -> TableDiff:
    """Per-key and per-kind B / A ratios over the keys both tables hold with a positive A figure."""
    common = a.frame.index.intersection(b.frame.index)
    per_key = pd.DataFrame({"a_ms": a.frame.loc[common, "median_ms"].astype(float),
                            "b_ms": b.frame.loc[common, "median_ms"].astype(float),
                            "kind": a.frame.loc[common, "kind"].astype(str)})
    per_key = per_key[(per_key["a_ms"] > 0) & np.isfinite(per_key["b_ms"])]
    per_key["ratio"] = per_key["b_ms"] / per_key["a_ms"]
    per_key = per_key.sort_values("ratio")
    grouped = per_key.groupby("kind")
    per_kind = pd.DataFrame({
        "keys": grouped.size(), "a_ms": grouped["a_ms"].sum(), "b_ms": grouped["b_ms"].sum(),
        "median_ratio": grouped["ratio"].median(), "min_ratio": grouped["ratio"].min(),
        "max_ratio": grouped["ratio"].max()})
    per_kind["ratio_of_sums"] = per_kind["b_ms"] / per_kind["a_ms"]
    return TableDiff(per_key, per_kind, len(a.frame.index.difference(common)),
                     len(b.frame.index.difference(common)))


def plot_diff(diff: TableDiff, path: str | Path, name_a: str = "A", name_b: str = "B") -> Path:
    """Per-key B against A on log axes (one colour per kind) and the per-kind ratio bars."""
    plt = pyplot()
    per_key, per_kind = diff.per_key, diff.per_kind
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5), dpi=110)
    for kind, group in per_key.groupby("kind"):
        left.scatter(group["a_ms"], group["b_ms"], s=12, alpha=0.8, label=str(kind))
    if len(per_key):
        low = float(min(per_key["a_ms"].min(), per_key["b_ms"].min())) * 0.8
        high = float(max(per_key["a_ms"].max(), per_key["b_ms"].max())) * 1.25
        left.plot([low, high], [low, high], color="black", linewidth=1)
        left.set_xlim(low, high)  # the same span on both axes: B = A is the diagonal
        left.set_ylim(low, high)
    readable_log_axes(left)
    left.set_xlabel(f"{name_a} (ms)")
    left.set_ylabel(f"{name_b} (ms)")
    left.set_title("per key")
    left.legend(fontsize=8)
    right.bar(per_kind.index.astype(str), per_kind["ratio_of_sums"], color="tab:blue", alpha=0.8)
    right.errorbar(per_kind.index.astype(str), per_kind["median_ratio"],
                   yerr=[per_kind["median_ratio"] - per_kind["min_ratio"],
                         per_kind["max_ratio"] - per_kind["median_ratio"]],
                   fmt="o", color="black", capsize=4, label="median (min-max) per key")
    right.axhline(1.0, color="grey", linewidth=1)
    right.set_ylabel(f"{name_b} / {name_a}")
    right.set_title("per kind (bar: ratio of sums)")
    right.legend(fontsize=8)
    return save_figure(fig, path)


# ---------------------------------------------------------------------- rebuilding a table

@dataclass
class Rebuild:
    """What rebuilding a table changed against the previous file at the same path."""

    added: list[str] = field(default_factory=list)  # keys the previous table lacked
    removed: list[str] = field(default_factory=list)  # keys only the previous table had
    changed: int = 0  # shared keys whose median_ms moved
    max_change: float = 0.0  # largest relative move of a shared key's median_ms
    settings_changed: list[str] = field(default_factory=list)  # identity fields that differ
    correction: str = "none"  # kept | dropped | replaced | not kept (other settings) | none

    @property
    def rows_changed(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self) -> str:
        """One line: keys added/removed/changed, settings that differ, what became of the correction."""
        parts = [f"{len(self.added)} keys added, {len(self.removed)} removed, {self.changed} changed"
                 + (f" (up to {self.max_change:.1%})" if self.changed else "")]
        if self.settings_changed:
            parts.append("settings differ in " + ", ".join(self.settings_changed))
        parts.append(f"correction {self.correction}")
        return "; ".join(parts)


def carry_over(previous: LatencyTable, table: LatencyTable, keep_correction: bool = True) -> Rebuild:
    """Compare `table` with the `previous` table of the same file, and give `table` the previous
    correction when `keep_correction`, `table` has none of its own, and both were measured under
    the same settings (a correction of another device or runtime would be wrong, not stale).

    Mutates `table`'s correction only; returns what changed.
    """
    common = previous.frame.index.intersection(table.frame.index)
    old = previous.frame.loc[common, "median_ms"].to_numpy(dtype=float)
    new = table.frame.loc[common, "median_ms"].to_numpy(dtype=float)
    moved = np.abs(new - old) / np.where(old > 0, old, 1.0)
    result = Rebuild(added=sorted(table.frame.index.difference(previous.frame.index)),
                     removed=sorted(previous.frame.index.difference(table.frame.index)),
                     changed=int((moved > CHANGE_TOLERANCE).sum()),
                     max_change=float(moved.max()) if moved.size else 0.0,
                     settings_changed=[k for k in IDENTITY if
                                       str(previous.settings.get(k)) != str(table.settings.get(k))])
    result.correction = _correction_fate(previous, table, keep_correction, result.settings_changed)
    if result.correction == "kept":
        table.set_correction(previous.correction)
    return result


def _correction_fate(previous: LatencyTable, table: LatencyTable, keep: bool,
                     settings_changed: list[str]) -> str:
    old: dict[str, Any] | None = previous.correction
    if table.correction:
        return "replaced" if old else "added"
    if not old:
        return "none"
    if not keep:
        return "dropped"
    if settings_changed:
        return "not kept (the previous table was measured under other settings)"
    return "kept"
