"""Latency tables for other tools: a plain CSV (context in a sidecar JSON) and one JSON document.

The CSV is what `pandas.read_csv` or a spreadsheet reads without options: a header row of `key`
and the table's columns, one row per key, nothing else. The context a table carries (device,
settings, space, correction) goes beside it as `<name>.meta.json`, or into the JSON export.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lutnas.fileio import atomic_path, atomic_write_text
from lutnas.tables.frame import COLUMNS, OPTIONAL_COLUMNS
from lutnas.tables.parquet import json_default
from lutnas.tables.table import LatencyTable


def sidecar_path(csv_path: str | Path) -> Path:
    """Where a CSV export's metadata goes: `t.csv` -> `t.meta.json`."""
    path = Path(csv_path)
    return path.with_name(f"{path.stem}.meta.json")


def export_csv(table: LatencyTable, path: str | Path) -> tuple[Path, Path]:
    """Write the rows as a plain CSV (header `key,median_ms,...`; NaN and None as empty cells) and
    the table's metadata as JSON beside it; returns (csv path, metadata path)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        table.frame.reset_index().to_csv(tmp, index=False)
    meta = atomic_write_text(sidecar_path(path), json.dumps(table.full_metadata(), indent=1,
                                                            sort_keys=True, default=json_default))
    return path, meta


def to_json_dict(table: LatencyTable) -> dict[str, Any]:
    """{"metadata": ..., "entries": {key: {column: value}}}, NaN as None, breakdowns as objects."""
    entries = {}
    for key, row in table.frame.iterrows():
        entry = {}
        for column in (*COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in table.frame.columns)):
            value = row[column]
            if column == "operator_ms":
                value = json.loads(value) if isinstance(value, str) else None
            elif isinstance(value, float) and math.isnan(value):
                value = None
            elif isinstance(value, np.generic):
                value = value.item()
            entry[column] = value
        entries[str(key)] = entry
    return {"metadata": table.full_metadata(), "entries": entries}


def export_json(table: LatencyTable, path: str | Path) -> Path:
    """Rows and metadata as one JSON document (see `to_json_dict`)."""
    text = json.dumps(to_json_dict(table), indent=1, sort_keys=True, default=json_default)
    return atomic_write_text(path, text)
