"""Pieces the benchmark scripts share: time a lutnas command run as a user runs it, and print a
list of row dicts as one rich table (whole columns in logs and pipes too)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table


def timed_command(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of `argv` run to its end; SystemExit with its stderr's tail when it fails."""
    start = time.perf_counter()
    done = subprocess.run(list(argv), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv[:3]))} failed ({done.returncode}): {done.stderr[-800:]}")
    return time.perf_counter() - start


def print_rows(title: str, rows: Sequence[dict], width: int = 200) -> None:
    """`rows` (dicts with the same keys) as a table, one column per key, right-justified."""
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console(width=width).print(table)
