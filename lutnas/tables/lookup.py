"""A table's key -> median ms and its context, read without pandas: what `lutnas predict` needs.

`lutnas predict` prices one subnet, a millisecond of work, yet reading the Parquet file costs
pandas and pyarrow (about 0.5 s of imports on a 2-core host). So saving a table (and the first read
of one saved elsewhere) writes a compact JSON sidecar beside it, `.<table name>.lookup.json`,
holding the table's context and its key -> median ms, keyed by the sha256 of the table file's
bytes: a read checks that digest (milliseconds) and parses the JSON. A table that changed gets a
new digest and the sidecar is rebuilt; a sidecar that cannot be written (a read-only directory)
only costs the speed. The table file stays the one contract (DESIGN.md): the sidecar is a cache
and is never read without it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lutnas
from lutnas.device_agents.base import DeviceInfo
from lutnas.errors import TableError
from lutnas.fileio import atomic_write_text, sha256_of
from lutnas.tables.context import TableContext, split_metadata

SIDECAR_FORMAT = 1


def sidecar_path(table_path: str | Path) -> Path:
    """Where the lookup cache of a table lives: beside it, `.<name>.lookup.json`."""
    table_path = Path(table_path)
    return table_path.with_name(f".{table_path.name}.lookup.json")




@dataclass
class TableLookup(TableContext):
    """A table's context (device, settings, space, metadata) and key -> median ms, no rows frame."""

    device: DeviceInfo
    settings: dict[str, Any]
    space: str
    metadata: dict[str, Any]
    latency: dict[str, float]

    @classmethod
    def load(cls, path: str | Path) -> "TableLookup":
        """The table at `path`, from its sidecar when that matches the file's digest, else read in
        from the Parquet file (`read_parquet`: the same TableError for a missing or foreign file)
        and the sidecar written for next time (`LatencyTable.save` writes it too)."""
        path = Path(path)
        if not path.is_file():
            raise TableError(f"table {path} does not exist; build one with `lutnas build-table`")
        digest = sha256_of(path)
        cached = _read_sidecar(sidecar_path(path), digest)
        if cached is not None:
            return cached
        from lutnas.tables.parquet import read_parquet  # pandas, pyarrow: only without a sidecar

        frame, meta = read_parquet(path)
        latency = dict(zip(frame.index, frame["median_ms"].astype(float)))
        _write(sidecar_path(path), digest, meta, latency)
        return cls(*split_metadata(meta, path), latency)

    def missing(self, keys: list[str]) -> list[str]:
        """Those of `keys` the table has no finite figure for."""
        return [k for k in keys if not math.isfinite(self.latency.get(k, math.nan))]


def _read_sidecar(path: Path, digest: str) -> TableLookup | None:
    """The lookup a sidecar holds, or None when it is missing, damaged, of another table or written
    by another lutnas version (whose idea of a table may differ)."""
    try:
        data = json.loads(path.read_text())
        if (data.get("format") != SIDECAR_FORMAT or data.get("table_sha256") != digest
                or data.get("lutnas_version") != lutnas.__version__):
            return None
        latency = {str(k): float(v) for k, v in data["median_ms"].items()}
        return TableLookup(*split_metadata(dict(data["metadata"]), path), latency)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, TableError):
        return None


def write_sidecar(table_path: str | Path, metadata: dict[str, Any], latency: dict[str, float]) -> None:
    """Write the lookup sidecar of the table file just written at `table_path` from its metadata
    (`full_metadata`) and key -> median ms; a directory that refuses it only costs speed."""
    try:
        digest = sha256_of(Path(table_path))
    except OSError:
        return
    _write(sidecar_path(table_path), digest, metadata, latency)


def _write(path: Path, digest: str, metadata: dict[str, Any], latency: dict[str, float]) -> None:
    from lutnas.tables.parquet import json_default

    data = {"format": SIDECAR_FORMAT, "table_sha256": digest, "lutnas_version": lutnas.__version__,
            "metadata": metadata, "median_ms": latency}
    try:
        atomic_write_text(path, json.dumps(data, default=json_default, separators=(",", ":")))
    except OSError:
        pass  # a read-only directory: the next read is slow again, nothing else changes
