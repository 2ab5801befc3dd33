"""Headless matplotlib for every PNG lutnas writes (tables, evaluation, search).

Imported lazily by the plotting functions so that commands which draw nothing never pay for
matplotlib's import, and forced to the Agg backend because lutnas runs on machines with no screen.
"""

from __future__ import annotations

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
