"""Headless matplotlib for every PNG lutnas writes (tables, evaluation, search).

Imported lazily by the plotting functions so that commands which draw nothing never pay for
matplotlib's import, and forced to the Agg backend because lutnas runs on machines with no screen.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write the PNG (creating its folder) and free the figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot().close(fig)
    return path


def log_ticks(low: float, high: float, max_ticks: int = 7) -> list[float]:
    """Major ticks for a log axis from `low` to `high` (> 0): the densest of 1-2-5 steps or
    decades (every k-th over many decades) that fits `max_ticks`, and round linear steps when
    those leave fewer than three ticks (an axis spanning under a decade)."""
    if not (0 < low < high and math.isfinite(high)):
        return []
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))

    def within(ticks: list[float]) -> list[float]:
        return [t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]

    ticks: list[float] = []
    for steps in ((1, 2, 5), (1,)):
        ticks = within([s * 10.0 ** d for d in range(first, last + 1) for s in steps])
        if len(ticks) <= max_ticks:
            break
    else:
        ticks = ticks[::math.ceil(len(ticks) / max_ticks)]
    if len(ticks) < 3:
        from matplotlib.ticker import MaxNLocator

        linear = within([float(t) for t in MaxNLocator(nbins=min(max_ticks, 5)).tick_values(low, high)])
        if len(linear) > len(ticks):
            ticks = linear
    return ticks


def readable_log_axes(ax: Any, which: str = "xy", max_ticks: int = 7) -> None:
    """Put the axes named in `which` ("x", "y", "xy") on a log scale labelled in plain numbers
    (0.005, 0.01, 0.02) at `log_ticks`, minor ticks unlabelled. Call it after plotting: the ticks
    follow the limits the data gives then.

    Matplotlib's default labels every minor tick of an axis spanning about a decade, in 10^x
    notation, and those labels run into each other (`table diff`: 3×10⁻³4×10⁻³6×10⁻³...).
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    for name in which:
        getattr(ax, f"set_{name}scale")("log")
        axis = getattr(ax, f"{name}axis")
        low, high = sorted(getattr(ax, f"get_{name}lim")())
        ticks = log_ticks(low, high, max_ticks)
        if ticks:  # an empty plot keeps matplotlib's own
            axis.set_major_locator(FixedLocator(ticks))
            axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.set_minor_formatter(NullFormatter())
