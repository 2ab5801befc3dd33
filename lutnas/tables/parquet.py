"""A latency table's file: Parquet rows plus its context as JSON in the schema metadata.

The context sits under one metadata key, so a table is one self-describing file that loads without
executing code (no pickle). Reading checks that key and its schema version first and refuses, in
one line, anything it does not understand. This module moves frames and metadata dicts; it knows
nothing of `LatencyTable`, which calls it (so the two never import each other).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import lutnas
from lutnas.errors import TableError
from lutnas.fileio import atomic_path
from lutnas.tables.frame import COLUMNS, SCHEMA_VERSION

METADATA_KEY = b"lutnas.latency_table"


def json_default(value: Any) -> Any:
    """`json.dumps(default=...)` for numpy scalars and tuples/sets found in table metadata."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_parquet(frame: pd.DataFrame, metadata: dict[str, Any], path: str | Path) -> Path:
    """Write rows (index `key`) and metadata atomically: an interrupted save never leaves half a table."""
    path = Path(path)
    arrow = pa.Table.from_pandas(frame.reset_index(), preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(metadata, sort_keys=True, default=json_default)
    arrow = arrow.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)
    return path


def read_parquet(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows (index `key`, operator_ms JSON text or None) and the metadata of a lutnas table file.

    Raises TableError, in one line naming the fix, for a missing, unreadable or foreign file,
    damaged metadata, a schema newer than this lutnas reads, or missing columns.
    """
    path = Path(path)
    if not path.is_file():
        raise TableError(f"table {path} does not exist; build one with `lutnas build-table`")
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise TableError(f"{path} is not a readable Parquet file ({first}); "
                         f"rebuild it with `lutnas build-table`") from None
    meta = _metadata(arrow, path)
    frame = arrow.to_pandas()
    missing = [c for c in ("key", *COLUMNS) if c not in frame.columns]
    if missing:
        raise TableError(f"{path} lacks table columns {missing}; rebuild the table")
    frame = frame.set_index("key")
    frame["operator_ms"] = pd.Series([v if isinstance(v, str) else None for v in frame["operator_ms"]],
                                     index=frame.index, dtype=object)
    return frame, meta


def _metadata(arrow: pa.Table, path: Path) -> dict[str, Any]:
    raw = (arrow.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise TableError(f"{path} is a Parquet file but not a lutnas latency table "
                         f"(no lutnas metadata); build tables with `lutnas build-table`")
    try:
        meta = json.loads(raw)
        version = int(meta["schema_version"])
    except (ValueError, KeyError, TypeError):
        raise TableError(f"{path}: the lutnas metadata is damaged; rebuild the table") from None
    if version > SCHEMA_VERSION:
        raise TableError(f"{path} has table schema {version}, newer than this lutnas "
                         f"{lutnas.__version__} reads (<= {SCHEMA_VERSION}); upgrade lutnas")
    if version < 1:
        raise TableError(f"{path} has an unknown table schema version {version}; rebuild the table")
    return meta
