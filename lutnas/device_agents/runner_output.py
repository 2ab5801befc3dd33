"""Pure parsers for the text on-device runners print: TFLite `benchmark_model` (classic and LiteRT
CompiledModel), TF 1.x summaries, op-profiling tables, `onnxruntime_perf_test`, ExecuTorch's
`executor_runner` (at the end of this file).

The runners report statistics, not raw samples, and their format drifts between releases (line
prefixes such as `INFO: `, `INFO: [file.cc:12] `, logcat's `I tflite  : ` and timestamps;
scientific notation; percentiles only in newer builds; ms in CompiledModel's tool; the `[start]`
column of op-profiling tables dropped; XNNPACK node names with spaces). So every parser strips any
prefix first (`strip_prefixes`), looks for labelled fields and reads tables by their header row,
never by position. Every time becomes microseconds through `to_us`, the one place units are
converted. A line that looks like a timing but that no rule reads is an error naming the line:
a format change must never be read silently as something else.

Families read (and what each yields): classic `benchmark_model` count lines (`count= first= curr=
min= max= avg= std= [p5= median= p95=]`) and its `Inference timings in us:` line; TF 1.x
`Average inference timings in us: Warmup:, Init:, no stats:`; LiteRT CompiledModel `Inference
(avg|min|max|std|median|p5|p95): X ms`; op-profiling tables of every layout; `onnxruntime_perf_test`
summaries in whatever unit each line names; memory (`Peak memory footprint`, `Memory footprint
delta`, `Peak working set size`); delegation lines (`Created ... delegate`, `Replacing N out of M
node(s) ... yielding P partitions`, `Though X delegate is explicitly applied ... not executed`,
`Explicitly applied X delegate ... completely/partially executed`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lutnas.errors import RunnerOutputError

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# Prefixes a runner or logcat puts before the text (stripped repeatedly: a timestamp, then a level):
# logcat threadtime "06-01 12:00:00.000  123  123 I tflite  : ", logcat brief "I tflite  : ",
# TFLite's logger "INFO: " (LiteRT adds "[benchmark_litert_model.h:92] "), ISO timestamps.
_PREFIX = re.compile(
    r"^(?:\d\d-\d\d\s+\d[\d:.]*\s+\d+\s+\d+\s+[VDIWEF]\s+[\w.-]+\s*:\s?"
    r"|[VDIWEF]\s+[\w.-]+\s+:\s?|[VDIWEF]/[\w.-]+\s*(?:\(\s*\d+\))?:\s?"
    r"|(?:INFO|WARNING|WARN|ERROR|VERBOSE|DEBUG|FATAL):\s?"
    r"|\[[\w./-]+\.(?:cc|h|cpp|c):\d+\]\s?"
    r"|\[?\d{4}-\d\d-\d\d[ T]\d[\d:.,]*Z?\]?\s+)")
_KEY_VALUE = re.compile(rf"(\w+)=({_NUMBER})")
_TIMINGS = re.compile(r"inference timings in us:\s*(.*)$", re.IGNORECASE)
_TIMING_FIELD = re.compile(rf"([A-Za-z][A-Za-z ()]*?)\s*:\s*({_NUMBER})")
_LITERT = re.compile(rf"^(Inference|Warmup) \((\w+)\):\s*({_NUMBER})\s*(ms|us|µs|s|ns)?\b")
_LITERT_INIT = re.compile(rf"^Model initialization:\s*({_NUMBER})\s*(ms|us|µs|s|ns)\b")
_MEMORY = re.compile(rf"(Peak memory footprint|Memory footprint delta).*?init=({_NUMBER})\s+"
                     rf"overall=({_NUMBER})")
# A line that looks like a timing: a `count=` line, or a timing word followed by a number.
_TIMING_LIKE = re.compile(r"^count=\d|\b(?:inference|timings?|latency|warmup|time cost)\b[^:=\[]*[:=]"
                          rf"\s*{_NUMBER}", re.IGNORECASE)
# Timing-looking lines that are known and deliberately not read (the op profiler's own totals).
_KNOWN_IGNORED = re.compile(r"^(?:Timings \(microseconds\):|Throughput:|Number of inferences per second)")
_HEAD_LINES = 8
UNITS_TO_US = {"s": 1e6, "sec": 1e6, "ms": 1e3, "us": 1.0, "µs": 1.0, "microseconds": 1.0, "ns": 1e-3}
# Which statistic a measurement's median_ms holds.
STAT_RUNNER_MEDIAN = "median"  # the runner printed a median (or P50)
STAT_SAMPLE_MEDIAN = "median-of-samples"  # lutnas computed it from the raw samples
STAT_AVERAGE = "average"  # only an average was printed: a last resort, flagged


def to_us(value: float, unit: str | None) -> float:
    """`value` in `unit` (s, ms, us, µs, ns) -> microseconds. The one unit conversion of the parsers.

    Raises RunnerOutputError for a unit it does not know."""
    if unit is None:
        raise RunnerOutputError(f"a runner time {value:g} has no unit; report this runner's output")
    scale = UNITS_TO_US.get(unit.lower() if unit != "µs" else unit)
    if scale is None:
        raise RunnerOutputError(f"unknown time unit {unit!r} in runner output; report this output")
    return value * scale


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
class Delegation:
    """What the runner said about one delegate (GPU, NNAPI, NPU; XNNPACK for the CPU).

    `applied`: True (it runs some or all nodes), False (created but runs nothing, or failed),
    None (created, nothing more said). `nodes` of `total` nodes went to it, in `partitions`.
    `line`: the runner's line that decided `applied`, quoted in errors.
    """

    delegate: str  # "GPU", "NNAPI", "XNNPACK", or the delegate node's name
    applied: bool | None = None
    nodes: int | None = None
    total: int | None = None
    partitions: int | None = None
    line: str = ""

    @property
    def partial(self) -> bool:
        return self.nodes is not None and self.total is not None and 0 < self.nodes < self.total


@dataclass(frozen=True)
class BenchmarkOutput:
    """What one `benchmark_model` run reported. Microseconds throughout."""

    stats: RunStats | None  # the timed-runs count line (or CompiledModel's Inference lines)
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    tables: tuple[OpTable, ...] = ()
    extra: dict[str, float] = field(default_factory=dict)
    delegations: tuple[Delegation, ...] = ()
    format: str = "classic"  # "classic", "tf1" or "litert-compiled-model"
    # `Peak memory footprint (MB): ... overall=X` when printed (a "footprint delta" is not a peak).
    peak_memory_mb: float | None = None

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

    def median(self) -> tuple[float | None, str]:
        """(median in us, which statistic it is): the runner's median, else its average (flagged)."""
        values = self.stats.values_us if self.stats else {}
        if "median" in values:
            return values["median"], STAT_RUNNER_MEDIAN
        return values.get("avg", self.inference_avg_us), STAT_AVERAGE

    def delegation_for(self, accelerator: str) -> Delegation | None:
        """The delegation record of `accelerator` (gpu, nnapi, npu), None when the runner said nothing."""
        names = _DELEGATE_NAMES.get(accelerator, ())
        found = [d for d in self.delegations if any(n in d.delegate.lower() for n in names)]
        if not found:
            return None
        # The later lines decide (created -> replaced N of M -> explicitly applied or not).
        merged = found[0]
        for record in found[1:]:
            merged = Delegation(
                merged.delegate, record.applied if record.applied is not None else merged.applied,
                record.nodes if record.nodes is not None else merged.nodes,
                record.total if record.total is not None else merged.total,
                record.partitions if record.partitions is not None else merged.partitions,
                record.line or merged.line)
        return merged


_DELEGATE_NAMES = {"gpu": ("gpu",), "nnapi": ("nnapi",), "npu": ("npu", "dispatch", "qnn", "neuron"),
                   "cpu": ("xnnpack",)}


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
    peak_memory_mb: float | None = None


def strip_prefixes(line: str) -> str:
    """`line` without the prefixes runners and logcat add (levels, `[file.cc:N]`, timestamps)."""
    line = line.rstrip("\r")
    while True:
        stripped = _PREFIX.sub("", line, count=1)
        if stripped == line:
            return line
        line = stripped


def strip_logcat(text: str) -> list[str]:
    """The lines of `text`, each without its prefixes (`strip_prefixes`)."""
    return [strip_prefixes(line) for line in text.splitlines()]


def first_lines(text: str, count: int = _HEAD_LINES) -> str:
    lines = [line for line in text.splitlines() if line.strip()][:count]
    return " | ".join(lines) if lines else "(no output)"


def parse_count_line(line: str) -> RunStats | None:
    """`count=50 first=.. curr=.. min=.. max=.. avg=.. std=.. [p5=.. median=.. p95=..]` or None."""
    line = strip_prefixes(line.strip())
    if not line.startswith("count="):
        return None
    values = {key: float(value) for key, value in _KEY_VALUE.findall(line)}
    count = int(values.pop("count"))
    return RunStats(count=count, values_us=values)


def parse_timings_line(line: str) -> dict[str, float] | None:
    """`Inference timings in us: Init: 1, First inference: 2, Warmup (avg): 3, Inference (avg): 4`.

    TF 1.x's `Average inference timings in us: Warmup: W, Init: I, no stats: X` is read with
    `no stats` (its inference average) as `inference (avg)` and `warmup` as `warmup (avg)`."""
    match = _TIMINGS.search(line)
    if match is None:
        return None
    values = {name.strip().lower(): float(value) for name, value in _TIMING_FIELD.findall(match.group(1))}
    if "no stats" in values:
        values.setdefault("inference (avg)", values.pop("no stats"))
    if "warmup" in values:
        values.setdefault("warmup (avg)", values.pop("warmup"))
    return values


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


_DELEGATION_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Created TensorFlow Lite (?:(\w+) )?delegate for (\w+)"), "created"),
    (re.compile(r"Created (\d+) (\w+) delegate kernels"), "kernels"),
    (re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]+)\) node, yielding "
                r"(\d+) partitions"), "replacing"),
    (re.compile(r"Though (\w+) delegate is explicitly applied, the model graph will not be executed"),
     "not-applied"),
    (re.compile(r"Explicitly applied (\w+) delegate, and the model graph will be (completely|partially) "
                r"executed"), "applied"),
    (re.compile(r"(?:Failed to (?:apply|create|initialize) (\w+) delegate|(\w+) delegate (?:is )?not "
                r"supported)", re.IGNORECASE), "failed"),
)


def parse_delegation_line(line: str) -> Delegation | None:
    """One line about a delegate -> a Delegation record (partial: later lines complete it), or None."""
    for pattern, kind in _DELEGATION_RULES:
        match = pattern.search(line)
        if match is None:
            continue
        groups = match.groups()
        if kind == "created":  # "XNNPACK delegate for CPU" names the delegate; "delegate for GPU" too
            return Delegation(groups[0] or groups[1])
        if kind == "kernels":
            return Delegation(groups[1], applied=int(groups[0]) > 0, line=line.strip())
        if kind == "replacing":
            nodes, total = int(groups[0]), int(groups[1])
            return Delegation(groups[2], applied=nodes > 0, nodes=nodes, total=total,
                              partitions=int(groups[3]), line=line.strip())
        if kind == "not-applied":
            return Delegation(groups[0], applied=False, nodes=0, line=line.strip())
        if kind == "applied":
            return Delegation(groups[0], applied=True, line=line.strip())
        return Delegation(groups[0] or groups[1], applied=False, line=line.strip())
    return None


def _read_line(line: str, state: dict) -> bool:
    """Apply every benchmark_model rule to one (prefix-free) line; True when one read it."""
    parsed = parse_count_line(line)
    if parsed is not None:
        # The timed-runs count line is the last with an `avg=` before the timings line (the warm-up
        # phase may print `count=1 curr=...` without one).
        if state["timings"] is None and "avg" in parsed.values_us:
            state["stats"] = parsed
        return True
    found = parse_timings_line(line)
    if found is not None:
        if state["timings"] is None:
            state["timings"] = found
            state["format"] = "tf1" if line.lower().startswith("average") else state["format"]
        return True
    litert = _LITERT.match(line)
    if litert:
        phase, name, value, unit = litert.groups()
        # CompiledModel prints "Inference (std): 0.01" without a unit: the ms of its other lines.
        state["litert"][f"{phase.lower()} {name.lower()}"] = to_us(float(value), unit or "ms")
        state["format"] = "litert-compiled-model"
        return True
    init = _LITERT_INIT.match(line)
    if init:
        state["litert"]["init"] = to_us(float(init.group(1)), init.group(2))
        return True
    memory = _MEMORY.search(line)
    if memory:
        state["extra"]["memory_init_mb"] = float(memory.group(2))
        state["extra"]["memory_overall_mb"] = float(memory.group(3))
        if memory.group(1).startswith("Peak"):
            state["peak_mb"] = float(memory.group(3))
        return True
    delegation = parse_delegation_line(line)
    if delegation is not None:
        state["delegations"].append(delegation)
        return True
    return False


def _check_unread(lines: list[str], read: list[bool], program: str) -> None:
    """RunnerOutputError naming the first timing-looking line no rule read (a format change)."""
    for line, was_read in zip(lines, read):
        text = line.strip()
        if was_read or "\t" in line or not _TIMING_LIKE.search(text) or _KNOWN_IGNORED.match(text):
            continue
        raise RunnerOutputError(f"{program} printed a timing line lutnas does not read: {text!r}; "
                                "report it with the runner's version so a rule can be added")


def parse_benchmark_model(text: str) -> BenchmarkOutput:
    """Parse benchmark_model's output (classic, TF 1.x or LiteRT CompiledModel), in microseconds.

    Raises RunnerOutputError (one line, with the first lines of the output) when it holds no
    timings, and naming the line when a timing-looking line matches no rule.
    """
    lines = strip_logcat(text)
    state: dict = {"stats": None, "timings": None, "litert": {}, "extra": {}, "delegations": [],
                   "format": "classic", "peak_mb": None}
    read = [_read_line(line.strip(), state) for line in lines]
    _check_unread(lines, read, "benchmark_model")
    stats, timings, litert = state["stats"], state["timings"] or {}, state["litert"]
    if litert:
        values = {name.split()[1]: value for name, value in litert.items() if name.startswith("inference ")}
        count = 0
        for line in lines:  # "Inference (avg): 7.43 ms (10 runs)"
            runs = re.search(r"^Inference \(avg\):.*\((\d+) runs\)", line.strip())
            count = int(runs.group(1)) if runs else count
        stats = RunStats(count=count, values_us=values) if values else stats
        timings = {"init": litert.get("init"), "first inference": litert.get("warmup first"),
                   "warmup (avg)": litert.get("warmup avg"), "inference (avg)": values.get("avg")}
    if stats is None and not timings:
        raise RunnerOutputError(f"benchmark_model output has no timings: {first_lines(text)}")
    if stats is None and timings.get("inference (avg)") is None:
        raise RunnerOutputError(f"benchmark_model output has no inference time: {first_lines(text)}")
    return BenchmarkOutput(
        stats=stats, init_us=timings.get("init"), first_inference_us=timings.get("first inference"),
        warmup_avg_us=timings.get("warmup (avg)"), inference_avg_us=timings.get("inference (avg)"),
        tables=parse_op_tables(lines), extra=state["extra"], delegations=tuple(state["delegations"]),
        format=state["format"], peak_memory_mb=state["peak_mb"])


# label -> (field, unit assumed when the line names none), per performance_runner.cc.
_PERF_FIELDS = {
    "session creation time cost": ("session_creation_us", "s"),
    "first inference time cost": ("first_inference_us", "ms"),
    "average inference time cost": ("avg_us", "ms"),
    "min latency": ("min_us", "s"),
    "max latency": ("max_us", "s"),
}
# Timing-looking perf_test lines that are known and not stored (totals over all runs).
_PERF_IGNORED = ("total inference time cost", "total inference run time",
                 "number of inferences per second")


def parse_onnxruntime_perf_test(text: str) -> PerfTestOutput:
    """Parse onnxruntime_perf_test's summary (1.3 to current), in microseconds.

    `Average inference time cost: X ms`, `Total inference requests: N` (or `Runs: N`), `Min/Max
    Latency: X s`, `P50 ... P999 Latency: X s`, `Peak working set size: B bytes`. Each line's unit
    is read from it when present and otherwise the one the source documents. RunnerOutputError
    when no latency is found, or naming a timing-looking line no rule reads.
    """
    values: dict[str, float] = {}
    percentiles: dict[str, float] = {}
    runs: int | None = None
    peak_mb: float | None = None
    for line in strip_logcat(text):
        match = re.match(rf"^\s*([A-Za-z][A-Za-z0-9 ]*?)\s*:\s*({_NUMBER})\s*(s|ms|us|µs|ns|bytes)?\b",
                         line)
        if not match:
            continue
        label, value, unit = match.group(1).strip().lower(), float(match.group(2)), match.group(3)
        if label in ("total inference requests", "runs"):
            runs = int(value)
        elif label in _PERF_FIELDS:
            name, default_unit = _PERF_FIELDS[label]
            values[name] = to_us(value, unit or default_unit)
        elif re.fullmatch(r"p\d+ latency", label):
            percentiles[label.split()[0]] = to_us(value, unit or "s")
        elif label == "peak working set size" and unit == "bytes":
            peak_mb = value / 2**20
        elif label not in _PERF_IGNORED and _TIMING_LIKE.search(line.strip()):
            raise RunnerOutputError(f"onnxruntime_perf_test printed a timing line lutnas does not "
                                    f"read: {line.strip()!r}; report it with the runner's version")
    if "avg_us" not in values and "p50" not in percentiles:
        raise RunnerOutputError(f"onnxruntime_perf_test output has no latency: {first_lines(text)}")
    return PerfTestOutput(runs=runs, avg_us=values.get("avg_us"), min_us=values.get("min_us"),
                          max_us=values.get("max_us"), percentiles_us=percentiles,
                          first_inference_us=values.get("first_inference_us"),
                          session_creation_us=values.get("session_creation_us"), peak_memory_mb=peak_mb)


# Lines that say a failure will repeat on every try (a property of the runner, model or phone).
_DETERMINISTIC = re.compile(
    r"Didn't find (?:op for builtin opcode|custom op)|Registration failed|not executable|"
    r"cannot execute|Exec format error|No such file or directory|inaccessible or not found|"
    r"not found|Failed to (?:mmap|open|load|apply|create) |Could not open|not a valid|"
    r"Invalid model|Unsupported|not supported|is not supported|model identifier|"
    r"Failed to initialize the interpreter|Load model from .* failed", re.IGNORECASE)


def failure_line(text: str) -> str:
    """The runner's line that says what went wrong: the first `ERROR`-like line, else the first line."""
    lines = [strip_prefixes(raw).strip() for raw in text.splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if _DETERMINISTIC.search(line):
            return line
    for raw in text.splitlines():
        if re.match(r"^\s*(?:E\s|E/|ERROR|FATAL|Error|error:)", strip_prefixes_level_kept(raw)):
            return strip_prefixes(raw).strip()
    return lines[0] if lines else "(no output)"


def strip_prefixes_level_kept(line: str) -> str:
    """`line` with timestamps removed but its level (`ERROR:`, `E tflite:`) kept."""
    return re.sub(r"^\[?\d{4}-\d\d-\d\d[ T]\d[\d:.,]*Z?\]?\s+", "", line.rstrip("\r"))


def is_deterministic_failure(text: str, exit_status: int | None) -> bool:
    """True when a runner's failure will repeat: exit 126/127 or a line like a missing op, a
    delegate the phone lacks or a model the runtime rejects."""
    if exit_status in (126, 127):
        return True
    return any(_DETERMINISTIC.search(strip_prefixes(line)) for line in text.splitlines())


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


# ------------------------------------------------------------------------------------------------
# ExecuTorch's `executor_runner` (examples/portable/executor_runner; the XNNPACK build is the same
# source linked with the XNNPACK backend). It prints through ET_LOG, whose posix PAL writes
# `I 00:00:00.012345 executorch:executor_runner.cpp:123] message` to stderr (the Android PAL sends
# it to logcat instead, leaving nothing to read). Releases up to 1.x print one total,
# `Model executed successfully N time(s) in X ms.`; newer ones also print every execution,
# `Iteration i of N: X ms`, and `Model loaded in X ms.`. It has no warm-up option: every execution
# is in the total.

_ET_LOG = re.compile(r"^[DIWEF]\s+\d+:\d\d:\d\d\.\d+\s+executorch:[\w./-]+:\d+\]\s?")
_ET_TOTAL = re.compile(
    rf"^Model executed successfully\s+(\d+)\s+time\(s\)\s+in\s+({_NUMBER})\s*(ms|us|s)\.?$")
_ET_ITERATION = re.compile(rf"^Iteration\s+(\d+)\s+of\s+(\d+):\s*({_NUMBER})\s*(ms|us|s)$")
_ET_LOADED = re.compile(rf"^Model loaded in\s+({_NUMBER})\s*(ms|us|s)\.?$")


@dataclass(frozen=True)
class ExecutorRunnerOutput:
    """What one `executor_runner` run reported, in microseconds."""

    executions: int  # how many times it ran the method (--num_executions)
    total_us: float  # all executions together
    iterations_us: tuple[float, ...] = ()  # each execution, in order, when the runner prints them
    load_us: float | None = None  # loading the method, when printed

    @property
    def mean_us(self) -> float:
        return self.total_us / self.executions


def parse_executor_runner(text: str) -> ExecutorRunnerOutput:
    """Parse `executor_runner`'s log: its total, and its per-execution times when printed.

    RunnerOutputError when no total is found (naming the posix PAL when the output holds no
    ExecuTorch log line at all), when a line about executions or iterations matches no rule, or when
    the per-execution lines do not add up to the count the total names.
    """
    total: tuple[int, float] | None = None
    iterations: dict[int, float] = {}
    load_us: float | None = None
    logged = False
    for raw in text.splitlines():
        line, count = _ET_LOG.subn("", raw.rstrip("\r"))
        logged = logged or count > 0
        line = line.strip()
        if match := _ET_TOTAL.match(line):
            total = int(match.group(1)), to_us(float(match.group(2)), match.group(3))
        elif match := _ET_ITERATION.match(line):
            iterations[int(match.group(1))] = to_us(float(match.group(3)), match.group(4))
        elif match := _ET_LOADED.match(line):
            load_us = to_us(float(match.group(1)), match.group(2))
        elif re.match(r"^(?:Model executed|Iteration\s+\d)", line):
            raise RunnerOutputError(f"executor_runner printed a timing line lutnas does not read: "
                                    f"{line!r}; report it with the runner's version")
    if total is None:
        why = ("" if logged else "; no ExecuTorch log line at all: build executor_runner with the posix "
               "PAL (-DEXECUTORCH_PAL_DEFAULT=posix), the android PAL logs to logcat")
        raise RunnerOutputError(f"executor_runner output has no 'Model executed successfully' total"
                                f"{why}: {first_lines(text)}")
    executions, total_us = total
    if executions < 1:
        raise RunnerOutputError(f"executor_runner says it ran the model {executions} times")
    ordered: tuple[float, ...] = ()
    if iterations:
        if sorted(iterations) != list(range(1, executions + 1)):
            raise RunnerOutputError(f"executor_runner printed {len(iterations)} iteration lines for "
                                    f"{executions} executions: output cut or interleaved")
        ordered = tuple(iterations[i] for i in range(1, executions + 1))
    return ExecutorRunnerOutput(executions=executions, total_us=total_us, iterations_us=ordered,
                                load_us=load_us)
