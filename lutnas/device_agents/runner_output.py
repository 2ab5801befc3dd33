"""Pure parsers for the text on-device runners print: TFLite `benchmark_model`, `onnxruntime_perf_test`.

The runners report statistics, not raw samples, and their format drifts between releases (extra
lines, memory lines, logcat prefixes, scientific notation, percentiles only in newer builds, the
`[start]` column of op-profiling tables dropped, XNNPACK node names with spaces). So every parser
looks for labelled fields (`key=value`, `Label: value`) and reads tables by their header row, never
by position. Times stay in microseconds here, as the runners print them; the agent converts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lutnas.errors import RunnerOutputError

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# Android's logcat prefix ("I tflite  : ", "06-01 12:00:00.000  123  123 I tflite  : ").
_LOGCAT_PREFIX = re.compile(r"^(?:[\d-]+\s+[\d:.]+\s+\d+\s+\d+\s+)?[VDIWEF]\s+[\w.-]+\s*:\s?")
_KEY_VALUE = re.compile(rf"(\w+)=({_NUMBER})")
_TIMINGS = re.compile(r"Inference timings in us:\s*(.*)$")
_TIMING_FIELD = re.compile(rf"([A-Za-z][A-Za-z ()]*?)\s*:\s*({_NUMBER})")
_HEAD_LINES = 8


@dataclass(frozen=True)
class RunStats:
    """One `count=... first=... min=... avg=...` line (values in microseconds)."""

    count: int
    values_us: dict[str, float]

    def get(self, name: str) -> float | None:
        return self.values_us.get(name)


@dataclass(frozen=True)
class OpTable:
    """One op-profiling table: its title, its section and its rows keyed by the header's names."""

    section: str  # e.g. "Operator-wise Profiling Info for Regular Benchmark Runs:"
    title: str  # e.g. "Run Order", "Summary by node type"
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class BenchmarkOutput:
    """What one `benchmark_model` run reported. Microseconds throughout."""

    stats: RunStats | None  # the timed-runs count line
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    tables: tuple[OpTable, ...] = ()
    extra: dict[str, float] = field(default_factory=dict)

    def node_type_ms(self) -> dict[str, float] | None:
        """Average ms per node type over the regular runs (the "Summary by node type" table)."""
        table = _regular_table(self.tables, "summary by node type")
        if table is None:
            return None
        kind_col = _find_column(table.columns, "node type")
        avg_col = _find_column(table.columns, "avg ms")
        if kind_col is None or avg_col is None:
            return None
        return {row[kind_col]: float(row[avg_col]) for row in table.rows if row.get(avg_col)}

    def node_ms(self) -> dict[str, float] | None:
        """Average ms per node (the "Run Order" table of the regular runs), keyed `TYPE name`."""
        table = _regular_table(self.tables, "run order")
        if table is None:
            return None
        kind_col = _find_column(table.columns, "node type")
        avg_col = _find_column(table.columns, "avg ms")
        name_col = _find_column(table.columns, "name")
        if kind_col is None or avg_col is None:
            return None
        return {f"{row[kind_col]} {row.get(name_col or '', '')}".strip(): float(row[avg_col])
                for row in table.rows if row.get(avg_col)}


@dataclass(frozen=True)
class PerfTestOutput:
    """What one `onnxruntime_perf_test` run reported. Microseconds throughout."""

    runs: int | None
    avg_us: float | None
    min_us: float | None = None
    max_us: float | None = None
    percentiles_us: dict[str, float] = field(default_factory=dict)  # "p50", "p90", ...
    first_inference_us: float | None = None
    session_creation_us: float | None = None


def strip_logcat(text: str) -> list[str]:
    return [_LOGCAT_PREFIX.sub("", line.rstrip("\r")) for line in text.splitlines()]


def first_lines(text: str, count: int = _HEAD_LINES) -> str:
    lines = [line for line in text.splitlines() if line.strip()][:count]
    return " | ".join(lines) if lines else "(no output)"


def parse_count_line(line: str) -> RunStats | None:
    """`count=50 first=.. curr=.. min=.. max=.. avg=.. std=.. [p5=.. median=.. p95=..]` or None."""
    line = _LOGCAT_PREFIX.sub("", line.strip())
    if not line.startswith("count="):
        return None
    values = {key: float(value) for key, value in _KEY_VALUE.findall(line)}
    count = int(values.pop("count"))
    return RunStats(count=count, values_us=values)


def parse_timings_line(line: str) -> dict[str, float] | None:
    """`Inference timings in us: Init: 1, First inference: 2, Warmup (avg): 3, Inference (avg): 4`."""
    match = _TIMINGS.search(line)
    if match is None:
        return None
    return {name.strip().lower(): float(value) for name, value in _TIMING_FIELD.findall(match.group(1))}


def parse_op_tables(lines: list[str]) -> tuple[OpTable, ...]:
    """Every `===== TITLE =====` table: header row of `[names]`, then tab-separated rows."""
    tables: list[OpTable] = []
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        if "Profiling Info for" in line:
            section = line.strip()
        title_match = re.match(r"^=+\s*(.*?)\s*=+$", line.strip())
        if title_match and index + 1 < len(lines) and "[" in lines[index + 1]:
            columns = tuple(cell.strip().strip("[]").strip() for cell in lines[index + 1].split("\t")
                            if cell.strip())
            rows: list[dict[str, str]] = []
            index += 2
            while index < len(lines) and lines[index].strip() and "\t" in lines[index]:
                cells = [cell.strip() for cell in lines[index].split("\t")]
                if cells and cells[0] == "":
                    cells = cells[1:]
                rows.append(dict(zip(columns, cells)))
                index += 1
            tables.append(OpTable(section, title_match.group(1), columns, tuple(rows)))
            continue
        index += 1
    return tuple(tables)


def parse_benchmark_model(text: str) -> BenchmarkOutput:
    """Parse benchmark_model's output; RunnerOutputError (with the first lines) when nothing matches.

    The timed-runs count line is the last one before the `Inference timings` line that has an
    `avg=` (the warm-up phase prints `count=1 curr=...` without one); `Timings (microseconds):`
    lines belong to the op profiler and are ignored here.
    """
    lines = strip_logcat(text)
    stats: RunStats | None = None
    timings: dict[str, float] | None = None
    extra: dict[str, float] = {}
    for line in lines:
        if timings is None:
            parsed = parse_count_line(line)
            if parsed is not None and "avg" in parsed.values_us:
                stats = parsed
        found = parse_timings_line(line)
        if found is not None and timings is None:
            timings = found
        memory = re.search(rf"(Peak memory footprint|Memory footprint delta).*?init=({_NUMBER})\s+"
                           rf"overall=({_NUMBER})", line)
        if memory:
            extra["memory_init_mb"] = float(memory.group(2))
            extra["memory_overall_mb"] = float(memory.group(3))
    if stats is None and timings is None:
        raise RunnerOutputError(f"benchmark_model output has no timings: {first_lines(text)}")
    timings = timings or {}
    if stats is None and "inference (avg)" not in timings:
        raise RunnerOutputError(f"benchmark_model output has no inference time: {first_lines(text)}")
    return BenchmarkOutput(
        stats=stats,
        init_us=timings.get("init"),
        first_inference_us=timings.get("first inference"),
        warmup_avg_us=timings.get("warmup (avg)"),
        inference_avg_us=timings.get("inference (avg)"),
        tables=parse_op_tables(lines),
        extra=extra,
    )


_PERF_FIELDS = {
    "session creation time cost": ("session_creation_us", 1e6),
    "first inference time cost": ("first_inference_us", 1e3),
    "average inference time cost": ("avg_us", 1e3),
    "min latency": ("min_us", 1e6),
    "max latency": ("max_us", 1e6),
}


def parse_onnxruntime_perf_test(text: str) -> PerfTestOutput:
    """Parse onnxruntime_perf_test's summary.

    Written from the format its source (`performance_runner.cc`) documents, not from captured
    output (no real sample was available): `Average inference time cost: X ms`, `Total inference
    requests: N`, `Min Latency: X s`, `Max Latency: X s`, `P50 Latency: X s` ... `P999 Latency: X s`.
    Each field's unit is read from the line when present and otherwise assumed as above.
    """
    values: dict[str, float] = {}
    percentiles: dict[str, float] = {}
    runs: int | None = None
    units = {"s": 1e6, "ms": 1e3, "us": 1.0, "µs": 1.0}
    for line in strip_logcat(text):
        match = re.match(rf"^\s*([A-Za-z][A-Za-z0-9 ]*?)\s*:\s*({_NUMBER})\s*(s|ms|us|µs)?\b", line)
        if not match:
            continue
        label, value, unit = match.group(1).strip().lower(), float(match.group(2)), match.group(3)
        if label in ("total inference requests", "runs"):
            runs = int(value)
        elif label in _PERF_FIELDS:
            name, default_scale = _PERF_FIELDS[label]
            values[name] = value * (units[unit] if unit else default_scale)
        elif re.fullmatch(r"p\d+ latency", label):
            percentiles[label.split()[0]] = value * (units[unit] if unit else 1e6)
    if "avg_us" not in values and "p50" not in percentiles:
        raise RunnerOutputError(f"onnxruntime_perf_test output has no latency: {first_lines(text)}")
    return PerfTestOutput(runs=runs, avg_us=values.get("avg_us"), min_us=values.get("min_us"),
                          max_us=values.get("max_us"), percentiles_us=percentiles,
                          first_inference_us=values.get("first_inference_us"),
                          session_creation_us=values.get("session_creation_us"))


def _find_column(columns: tuple[str, ...], name: str) -> str | None:
    for column in columns:
        if column.lower() == name:
            return column
    return None


def _regular_table(tables: tuple[OpTable, ...], title: str) -> OpTable | None:
    """The last table with this title: the regular runs come after the initialization section."""
    found = [t for t in tables if t.title.lower() == title]
    regular = [t for t in found if "regular" in t.section.lower()]
    return (regular or found or [None])[-1]
