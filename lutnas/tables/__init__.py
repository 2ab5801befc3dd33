"""Measurements and latency tables (no torch; imports only space, device_agents' data types, errors,
fileio and plotting).

- `store.py`: the measurement store (SQLite, WAL): devices, runs, measurements, quality flags.
- `frame.py`: a table's columns and `make_frame`, the one place a table's rows are made.
- `table.py`: `LatencyTable` (`from_latencies`, `completed_with`, `run_settings`, `settings_from`,
  `save`/`load`) and `build_table` (a table from a store).
- `parquet.py`: the table file (Parquet rows + JSON metadata), read with checks.
- `export.py` (plain CSV + sidecar, JSON), `ofa.py` (OFA YAML import), `diff.py` (two tables).
"""
