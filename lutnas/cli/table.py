"""`lutnas build-table` and `lutnas table show|diff|export|import-ofa`: latency tables for users.

Parsing and printing only; pandas, pyarrow and `lutnas.tables` are imported by the handler that
runs, so `lutnas table show` does not pay for what `build-table --calibrate` needs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from lutnas.cli._common import LazyChoices, add_host_change_flag, console, err_console, positive_int
from lutnas.cli.device_options import DEVICE_FORMS, add_accelerator_flag, add_device_flags, agent_options
from lutnas.device_agents.base import PRECISIONS, RUNTIMES
from lutnas.errors import BadInputError, PredictorError, TableError
from lutnas.space.vocabulary import ACTIVATIONS

DEFAULT_STORE = "measurements.sqlite"


def core_mask_of(text: str | None) -> str | None:
    """--cores as the store keeps it: 'all', a hex mask '0x3', or a core list '0,1' / '0-1'."""
    if text is None:
        return None
    text = text.strip()
    if text == "all" or text.lower().startswith("0x"):
        return text.lower()
    from lutnas.cli.profile import parse_cores
    from lutnas.device_agents.base import RunSettings

    return RunSettings(cores=parse_cores(text)).core_mask


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_build(subparsers)
    parser = subparsers.add_parser("table", help="inspect, compare, export and import latency tables")
    sub = parser.add_subparsers(dest="table_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="device, coverage of the space, slowest and flagged blocks")
    show.add_argument("table", type=Path)
    show.add_argument("--space", help="space to measure coverage against (default: the table's)")
    show.add_argument("--top", type=positive_int, default=10)
    show.set_defaults(handler=show_command)
    diff = sub.add_parser("diff", help="per-key and per-kind latency ratios B / A")
    diff.add_argument("a", type=Path)
    diff.add_argument("b", type=Path)
    diff.add_argument("--plot", type=Path, metavar="PNG", help="write a ratio plot")
    diff.add_argument("--top", type=positive_int, default=10)
    diff.set_defaults(handler=diff_command)
    export = sub.add_parser("export", help="write the table as a plain CSV (metadata in a sidecar "
                                           "NAME.meta.json) and/or one JSON document")
    export.add_argument("table", type=Path)
    export.add_argument("--csv", type=Path, help="rows only, header key,median_ms,...; the table's "
                                                 "context goes beside it as NAME.meta.json")
    export.add_argument("--json", type=Path, help="rows and metadata in one JSON document")
    export.set_defaults(handler=export_command)
    ofa = sub.add_parser("import-ofa", help="import Once-for-All / ProxylessNAS style YAML tables "
                                            "{key: {count, mean, std|var}}")
    ofa.add_argument("yaml", nargs="+", type=Path)
    ofa.add_argument("--out", required=True, type=Path)
    ofa.add_argument("--device-id", default="imported:ofa", help="device id to record")
    ofa.add_argument("--activation", choices=ACTIVATIONS,
                     help="activation of the blocks whose keys state none (ProxylessNAS tables: "
                          "relu6); required when a key needs it and the file does not say")
    ofa.add_argument("--drop-unmapped", action="store_true",
                     help="drop keys with no lutnas counterpart instead of keeping them as 'foreign'")
    ofa.set_defaults(handler=import_ofa_command)
    nnm = sub.add_parser("import-nnmeter", help="import an nn-Meter block LUT (ElasticViT's phone "
                                                "tables: JSON key -> ms)")
    nnm.add_argument("json", type=Path, metavar="FILE.json")
    nnm.add_argument("--space", required=True, help="space of the table: elasticvit or a space YAML")
    nnm.add_argument("--device-name", required=True, help="device to record, e.g. pixel1")
    nnm.add_argument("--runtime", help="runtime the phone measured with, when known (tflite for "
                                       "ElasticViT's tables); default unknown")
    nnm.add_argument("--out", required=True, type=Path, help="table file to write (.parquet)")
    nnm.set_defaults(handler=import_nnmeter_command)


def _fittable_and_all() -> tuple[str, ...]:
    from lutnas.predictors.registry import fittable_names  # the one list of predictor names

    return (*fittable_names(), "all")


def _register_build(subparsers: argparse._SubParsersAction) -> None:
    b = subparsers.add_parser("build-table", help="build a latency table from a measurement store")
    b.add_argument("--store", default=DEFAULT_STORE, help=f"measurement store (default {DEFAULT_STORE})")
    b.add_argument("--device", help="device id in the store (needed when it holds several)")
    b.add_argument("--runtime", choices=RUNTIMES, help="only this runtime's measurements (needed when "
                                                       "the store holds several)")
    b.add_argument("--threads", type=int)
    b.add_argument("--cores", help="core mask (0x1, all) or core list (0 / 0,1 / 4-7)")
    add_accelerator_flag(b, "only measurements taken on this accelerator (needed when the store "
                            "holds several)")
    b.add_argument("--precision", choices=PRECISIONS,
                   help="only this precision's measurements (needed when the store holds several)")
    b.add_argument("--space", help="space of the table (default: the space of its profiling runs)")
    b.add_argument("--out", required=True, type=Path,
                   help="table file to write (.parquet); rebuilding an existing one keeps its "
                        "correction and predictor files (see --fresh) and prints what changed")
    b.add_argument("--calibrate", type=int, default=0, metavar="K",
                   help="measure K random whole subnets end to end and store the fitted correction")
    b.add_argument("--calibrate-on", default="local", metavar="ADDRESS",
                   help=f"device to measure the calibration subnets on, under the table's settings: "
                        f"{DEVICE_FORMS} (default local)")
    b.add_argument("--trials", type=positive_int, help="trials per calibration subnet "
                   "(default: the table's typical trial count)")
    b.add_argument("--resolution", type=int, action="append", metavar="R",
                   help="calibration subnets at these resolutions (default: those the table covers)")
    b.add_argument("--seed", type=int, default=1, help="seed of the calibration subnets (default 1)")
    add_host_change_flag(b)
    b.add_argument("--predictor", choices=LazyChoices(_fittable_and_all), metavar="NAME",
                   help="also fit this predictor (learned, analytic, ...; all: every one) on the "
                        "table's measured blocks and save it beside it (TABLE.<name>.predictor.npz)")
    b.add_argument("--fresh", action="store_true",
                   help="with an existing --out: keep nothing of it (drop its correction, remove "
                        "predictor files beside it that this run does not refit)")
    add_device_flags(b, "--calibrate-on device options")
    b.set_defaults(handler=build_table_command)


def build_table_command(args: argparse.Namespace) -> int:
    from lutnas.tables.diff import carry_over
    from lutnas.tables.store import MeasurementStore
    from lutnas.tables.table import build_table

    if not Path(args.store).is_file():
        raise BadInputError(f"store {args.store} does not exist; "
                            f"run profile-device --store {args.store} first")
    if args.calibrate < 0:
        raise BadInputError(f"--calibrate must be 0 or more, got {args.calibrate}")
    previous = _previous_table(args.out)
    predictor_files = _predictor_files(args.out) if previous is not None else []
    with MeasurementStore(args.store) as store:
        table = build_table(store, device_id=args.device, runtime=args.runtime, threads=args.threads,
                            core_mask=core_mask_of(args.cores), accelerator=args.accelerator,
                            space=args.space, precision=args.precision)
        console.print(f"{len(table)} keys  {table.describe_settings()}  space={table.space or '?'}")
        if len(table.metadata.get("runners", [])) > 1:
            err_console.print(f"[yellow]warning:[/] measurements come from several runner builds: "
                              f"{', '.join(table.metadata['runners'])}")
        mixed = table.metadata.get("mixed_pace_statistics") or []
        if mixed:
            err_console.print(f"[yellow]warning:[/] {len(mixed)} key(s) mix paced trials stored before "
                              f"store schema 5 (run median / pace median) with paired ones (each run "
                              f"against its own pace invoke), e.g. {mixed[0]}; they differ by ~1%: "
                              f"profile into a fresh store for one statistic")
        if args.calibrate:
            _calibrate(args, table, store)
    rebuild = carry_over(previous, table, keep_correction=not args.fresh) if previous else None
    table.save(args.out)
    console.print(f"wrote {args.out}")
    refit: list[Path] = []
    if args.predictor:
        from lutnas.predictors.serialize import fit_and_save_predictors

        space = table.load_space() if table.space else None
        for name, path in fit_and_save_predictors(table, space, args.predictor, args.out).items():
            console.print(f"wrote {path} ({name} predictor)")
            refit.append(Path(path))
    if rebuild is not None:
        _print_rebuild(args, rebuild, [p for p in predictor_files if p not in refit])
    return 0


def _previous_table(out: Path) -> Any:
    """The table already at --out (what a rebuild keeps), or None; a file that is not one is
    overwritten after a warning, since the user asked for a table there."""
    from lutnas.tables.table import LatencyTable

    if not out.exists():
        return None
    try:
        return LatencyTable.load(out)
    except TableError as exc:
        err_console.print(f"[yellow]warning:[/] {out} is not a readable table ({exc}); overwriting it",
                          soft_wrap=True)  # one line, whatever the terminal width
        return None


def _predictor_files(out: Path) -> list[Path]:
    from lutnas.predictors.serialize import predictor_path

    return sorted(out.parent.glob(predictor_path(out, "*").name))


def _print_rebuild(args: argparse.Namespace, rebuild: Any, other_predictors: list[Path]) -> None:
    """What the rebuild changed, what it kept of the previous table, and how to refit it."""
    console.print(f"rebuilt {args.out}: {rebuild.summary()}")
    stale = " (fitted on the previous rows)" if rebuild.rows_changed else ""
    if rebuild.correction == "kept" and rebuild.rows_changed:
        console.print("the kept correction was fitted on the previous rows; --calibrate K refits it")
    if not other_predictors:
        return
    names = ", ".join(p.name for p in other_predictors)
    if args.fresh:
        for path in other_predictors:
            path.unlink()
        console.print(f"removed {names} (--fresh)")
    else:
        console.print(f"kept {names}{stale}; --predictor NAME refits, --fresh removes them")


def _calibrate(args: argparse.Namespace, table: Any, store: object) -> None:
    from lutnas.cli.evaluate import measuring_progress
    from lutnas.device_agents.factory import open_agent
    from lutnas.predictors.correction import Correction
    from lutnas.profiler.subnets import calibrate

    space = table.load_space()
    with open_agent(args.calibrate_on, agent_options(args)) as agent, measuring_progress() as progress:
        correction = calibrate(agent, table, space, args.calibrate, args.seed, store, args.trials,
                               resolutions=args.resolution,
                               argv=["build-table", "--calibrate", str(args.calibrate)],
                               progress=progress.on_loop, on_export=progress.on_export,
                               max_host_change=args.max_host_change)
    console.print(f"correction from {correction['n']} subnets: measured = "
                  f"{Correction.from_dict(correction).describe()} (fit RMSE {correction['rmse_ms']:.4f} ms)")


def show_command(args: argparse.Namespace) -> int:
    from lutnas.tables.table import LatencyTable

    table = LatencyTable.load(args.table)
    device = table.device
    console.print(f"[bold]{args.table}[/]: {len(table)} keys")
    details = ", ".join(x for x in (device.kind, f"{device.manufacturer} {device.model}".strip(),
                                    device.soc, device.cpu_model) if x and x != device.device_id)
    console.print(f"device: {device.device_id}" + (f" ({details})" if details else ""))
    counts = "".join(f"  {n}={table.settings[n]}" for n in ("warmup", "runs")
                     if table.settings.get(n) is not None)
    console.print(f"settings: {table.describe_settings()}{counts}")
    runners = ", ".join(table.metadata.get("runners") or [])
    console.print(f"space: {table.space or '?'}   lutnas {table.metadata.get('lutnas_version', '?')}"
                  + (f"   runners: {runners}" if runners else ""))
    _print_import(table.metadata)
    console.print(f"correction: {_describe_correction(table.correction)}")
    used = _print_coverage(args, table)
    _print_quality(args, table.frame, used, table.metadata.get("ci95_ms"))
    return 0


def _describe_correction(record: dict | None) -> str:
    """Every term the table's correction holds, in the words build-table and predict print it."""
    from lutnas.predictors.correction import Correction

    if not record:
        return "none (build-table --calibrate K adds one)"
    try:
        return Correction.from_dict(record).describe()
    except PredictorError as exc:  # show the rest of the table; search and predict will refuse it
        return f"unreadable: {exc}"


def _print_import(meta: dict) -> None:
    """Where an imported table came from and what its import could not map."""
    if not meta.get("imported_from"):
        return
    files = ", ".join(Path(p).name for p in meta["imported_from"])
    unmapped = meta.get("unmapped_reasons")
    if unmapped is None:  # OFA-style imports count them only
        console.print(f"imported from {files}; {meta.get('unmapped_keys', 0)} keys had no lutnas "
                      f"counterpart")
        return
    console.print(f"imported from {files}: {meta.get('entries', '?')} keys, "
                  f"{sum(unmapped.values())} unmapped, {len(meta.get('collisions') or {})} collisions")
    for reason, count in unmapped.items():
        console.print(f"  {count:6d}  unmapped: {reason}")


def _print_coverage(args: argparse.Namespace, table: Any) -> Any:
    """Print the table's coverage of its space; returns (space name, the table's keys the space
    uses), or None when the space is not known."""
    from lutnas.space import SearchSpace

    if not (args.space or table.space):
        return None
    try:
        space = SearchSpace.load(args.space) if args.space else table.load_space()
    except BadInputError as exc:
        err_console.print(f"[yellow]coverage not computed:[/] {exc}")
        return None
    cov = table.coverage(space)
    console.print(f"coverage of {space.name}: {cov['present']}/{cov['total']} unique blocks "
                  f"({cov['share']:.1%}); " + ", ".join(
                      f"{k} {v['present']}/{v['total']}" for k, v in cov["by_kind"].items()))
    outside = len(table) - cov["present"]
    if outside:
        console.print(f"{outside} keys are not blocks of {space.name}")
    return (space.name, {b.key for b in space.unique_blocks()} & set(table.keys))


def _print_quality(args: argparse.Namespace, frame: Any, used: Any, intervals: Any = None) -> None:
    frame = frame.copy()
    intervals = intervals or {}
    # relative half-width of each figure's 95% interval (built tables keep it in their metadata)
    frame["ci"] = [(intervals[k][1] - intervals[k][0]) / 2 / m if k in intervals and m > 0
                   else float("nan") for k, m in zip(frame.index, frame["median_ms"])]
    flags = frame["flag"].value_counts()
    line = "quality: " + ", ".join(f"{k} {v}" for k, v in flags.items())
    if frame["cv"].notna().any():
        line += f"; CV median {float(frame['cv'].median()):.3f}"
    if frame["ci"].notna().any():
        line += (f"; 95% CI of the figures: median +-{float(frame['ci'].median()):.1%}, "
                 f"widest +-{float(frame['ci'].max()):.1%}")
    console.print(line)
    if "peak_mem_mb" in frame.columns and frame["peak_mem_mb"].notna().any():
        peak = frame["peak_mem_mb"].dropna()
        console.print(f"peak memory (the runner's footprint, median over trials): {len(peak)} keys, "
                      f"median {float(peak.median()):.1f} MB, largest {float(peak.max()):.1f} MB "
                      f"({peak.idxmax()})", soft_wrap=True)
    title = "slowest blocks"
    if used is not None:
        name, keys = used
        frame = frame[frame.index.isin(list(keys))]
        title = f"slowest blocks {name} uses"
    slowest = frame.sort_values("median_ms", ascending=False).head(args.top)
    console.print(_rows_table(title, slowest))
    flagged = frame[frame["flag"].isin(["never-settled", "re-measured"])]
    if len(flagged):
        # the same flag words and counts as the quality line, so the two never seem to disagree
        parts = ", ".join(f"{k} {v}" for k, v in flagged["flag"].value_counts().items())
        among = f" among those {used[0]} uses" if used is not None else ""
        console.print(_rows_table(f"flagged blocks{among}: {len(flagged)} ({parts})",
                                  flagged.sort_values("cv", ascending=False).head(args.top)))


def _rows_table(title: str, rows: Any) -> Table:
    """Rows with their figures; a statistic the table does not know (an imported table's CV and
    trials) is '-', never nan or None."""
    out = Table(title=title)
    memory = "peak_mem_mb" in rows.columns  # only tables whose runner printed it have the column
    for column in ("key", "median_ms", "95% CI +-", "cv", "trials", *(["peak MB"] if memory else []),
                   "flag"):
        out.add_column(column, justify="left" if column in ("key", "flag") else "right")
    for key, row in rows.iterrows():
        cv = f"{row['cv']:.3f}" if row["cv"] == row["cv"] else "-"
        ci = f"{row['ci']:.1%}" if "ci" in row and row["ci"] == row["ci"] else "-"
        trials = str(row["trials"]) if row["trials"] else "-"
        peak = [f"{row['peak_mem_mb']:.1f}" if row["peak_mem_mb"] == row["peak_mem_mb"] else "-"] \
            if memory else []
        out.add_row(str(key), f"{row['median_ms']:.4f}", ci, cv, trials, *peak, str(row["flag"]))
    return out


def diff_command(args: argparse.Namespace) -> int:
    import pandas as pd

    from lutnas.tables.diff import diff_tables, plot_diff
    from lutnas.tables.table import LatencyTable

    a, b = LatencyTable.load(args.a), LatencyTable.load(args.b)
    result = diff_tables(a, b)
    console.print(f"A = {args.a} ({a.describe_settings()})")
    console.print(f"B = {args.b} ({b.describe_settings()})")
    console.print(f"common keys: {len(result.per_key)}; only in A: {result.only_a}; "
                  f"only in B: {result.only_b}")
    if result.per_key.empty:
        raise TableError("the two tables share no keys; nothing to compare")
    kinds = Table(title="B / A per kind (sum of common keys; median of per-key ratios)")
    for column in ("kind", "keys", "A ms", "B ms", "ratio of sums", "median ratio", "min", "max"):
        kinds.add_column(column, justify="left" if column == "kind" else "right")
    for kind, row in result.per_kind.iterrows():
        kinds.add_row(str(kind), str(int(row["keys"])), f"{row['a_ms']:.3f}", f"{row['b_ms']:.3f}",
                      f"{row['ratio_of_sums']:.3f}", f"{row['median_ratio']:.3f}",
                      f"{row['min_ratio']:.3f}", f"{row['max_ratio']:.3f}")
    console.print(kinds)
    half = args.top // 2 or 1
    extremes = pd.concat([result.per_key.head(half), result.per_key.tail(half)])
    keys = Table(title="keys with the most extreme ratios")
    for column in ("key", "A ms", "B ms", "B / A"):
        keys.add_column(column, justify="left" if column == "key" else "right")
    for key, row in extremes.drop_duplicates().iterrows():
        keys.add_row(str(key), f"{row['a_ms']:.4f}", f"{row['b_ms']:.4f}", f"{row['ratio']:.3f}")
    console.print(keys)
    if args.plot:
        plot_diff(result, args.plot, str(args.a.name), str(args.b.name))
        console.print(f"wrote {args.plot}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    from lutnas.tables.export import export_csv, export_json
    from lutnas.tables.table import LatencyTable

    if not args.csv and not args.json:
        raise BadInputError("give --csv PATH and/or --json PATH")
    table = LatencyTable.load(args.table)
    if args.csv:
        csv_path, meta_path = export_csv(table, args.csv)
        console.print(f"wrote {csv_path} (metadata: {meta_path})")
    if args.json:
        console.print(f"wrote {export_json(table, args.json)}")
    return 0


def import_ofa_command(args: argparse.Namespace) -> int:
    from lutnas.device_agents.base import DeviceInfo
    from lutnas.tables.ofa import import_ofa_yaml

    device = DeviceInfo(device_id=args.device_id, kind="android", model="unknown")
    table = import_ofa_yaml(args.yaml, device=device, keep_unmapped=not args.drop_unmapped,
                            activation=args.activation)
    table.save(args.out)
    kinds = table.frame["kind"].value_counts()
    console.print(f"imported {len(table)} keys ({', '.join(f'{k} {v}' for k, v in kinds.items())}); "
                  f"{table.metadata['unmapped_keys']} had no lutnas counterpart, "
                  f"{table.metadata['duplicate_keys']} repeated a key; wrote {args.out}")
    if table.metadata["mbconv_without_shortcut"]:
        console.print(f"note: {table.metadata['mbconv_without_shortcut']} MBConv entries have no "
                      f"residual (idskip:0); lutnas's mbconv adds one, so those figures miss it")
    return 0


def import_nnmeter_command(args: argparse.Namespace) -> int:
    from lutnas.space import SearchSpace
    from lutnas.tables.nnmeter import import_nnmeter_json
    from lutnas.tables.spaces import space_yaml

    space = SearchSpace.load(args.space)  # the table embeds its text, built-in or not
    table = import_nnmeter_json(args.json, space, args.device_name, args.runtime, space_yaml(space))
    table.save(args.out)
    meta = table.metadata
    kinds = table.frame["kind"].value_counts()
    used = {spec.key for spec in space.unique_blocks()}
    inside = sum(key in used for key in table.keys)
    console.print(f"{args.json}: {meta['entries']} keys; {len(table)} mapped to lutnas blocks "
                  f"({', '.join(f'{k} {v}' for k, v in kinds.items())}), {inside} of them blocks "
                  f"{space.name} uses ({len(used)} in all), {len(table) - inside} outside it")
    reasons = meta["unmapped_reasons"]
    console.print(f"unmapped: {sum(reasons.values())}" + (":" if reasons else ""))
    for reason, count in reasons.items():
        console.print(f"  {count:6d}  {reason}")
    collisions = meta["collisions"]
    if collisions:
        console.print(f"{len(collisions)} lutnas keys named by several nn-Meter keys (first kept, "
                      f"all recorded in the table's metadata), e.g. {next(iter(collisions))}: "
                      f"{collisions[next(iter(collisions))]['values']}")
    console.print(f"wrote {args.out} ({table.describe_settings()}); every unmapped key and its "
                  f"reason is in its metadata (table export --json)")
    return 0

