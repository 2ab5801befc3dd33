"""`lutnas predict --table T --config subnet.json [--explain]`: a subnet's latency from a table.

Parsing and printing only; predictors and tables are imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from lutnas.cli._common import LazyChoices, add_json_flag, console, json_aware, print_json, space_of_table
from lutnas.errors import PredictorError


def _predictor_names() -> tuple[str, ...]:
    from lutnas.predictors.registry import saved_names  # the one list of predictor names

    return ("lut", *saved_names())


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="predict a subnet's latency from a latency table")
    p.add_argument("--table", required=True, type=Path)
    p.add_argument("--config", required=True,
                   help="subnet config: a JSON file or string, search's best.json, ElasticViT's "
                        "10-tuple, 'smallest' / 'largest', or a released model (elasticvit:S1)")
    p.add_argument("--space", help="space of the config (default: the table's)")
    # read when used: importing the registry costs pandas and every predictor (~0.5 s here)
    p.add_argument("--predictor", choices=LazyChoices(_predictor_names), default="lut", metavar="NAME",
                   help="lut (default), or a predictor saved beside the table by build-table "
                        "--predictor or lutnas transfer")
    p.add_argument("--explain", action="store_true", help="list every block with its latency")
    add_json_flag(p, "the prediction (ms, predictor, settings; blocks with --explain)")
    p.set_defaults(handler=json_aware(predict_command))


def read_config(text: str, space: object) -> object:
    """`--config` through the CLI's one config reader (`_common.read_config`: every form)."""
    from lutnas.cli._common import read_config as read_any_config
    from lutnas.space import SearchSpace

    assert isinstance(space, SearchSpace)
    return read_any_config(space, text)


def predict_command(args: argparse.Namespace) -> int:
    space = None
    if args.predictor == "lut" and not args.explain:
        space = _predict_lut_light(args)
        if space is None:
            return 0
    from lutnas.predictors.lut import LutPredictor
    from lutnas.tables.table import LatencyTable

    table = LatencyTable.load(args.table)
    space = space or space_of_table(table, args.space)
    config = read_config(args.config, space)
    if args.predictor != "lut":
        return _predict_saved(args, table, space, config)
    predictor = LutPredictor(space).fit(table)
    raw = float(predictor.predict([config])[0])
    if args.explain:
        frame = predictor.explain(config)
        out = Table(title=f"{len(frame)} blocks of the subnet")
        for column in ("#", "key", "ms", "cv", "flag"):
            out.add_column(column, justify="left" if column in ("key", "flag") else "right")
        for _, row in frame.iterrows():
            out.add_row(str(row["position"]), row["key"], f"{row['ms']:.4f}",
                        f"{row['cv']:.3f}" if row["cv"] == row["cv"] else "-",  # imported: no CV
                        str(row["flag"]))
        console.print(out)
    corrected = predictor.as_corrected() if table.correction else None
    _print_lut(args, table, config, raw, corrected.correction_ if corrected else None,
               float(corrected.predict([config])[0]) if corrected else None,
               predictor.explain(config) if args.explain and args.json else None)
    return 0


def _predict_lut_light(args: argparse.Namespace) -> Any:
    """Print the LUT sum of one subnet without pandas or pyarrow (`TableLookup`: a JSON sidecar
    beside the table, ~0.3 s instead of ~0.9 s): the same sum, block by block in `blocks_of` order,
    that `LutPredictor` takes for a few configs. None when done; the space, having printed
    nothing, when the table lacks a block (the full path then raises LutPredictor's own error)."""
    from lutnas.tables.lookup import TableLookup

    table = TableLookup.load(args.table)
    space = space_of_table(table, args.space)
    config = read_config(args.config, space)
    specs = space.blocks_of(config)
    if table.missing([spec.key for spec in specs]):
        return space
    raw = 0.0
    for spec in specs:
        raw += table.latency[spec.key]
    correction, corrected_ms = None, None
    if table.correction:
        from lutnas.predictors.correction import Correction  # numpy: only for a calibrated table

        correction = Correction.from_dict(table.correction)
        weights = None
        if correction.weight_ms_per_mib:  # the same weight MiB as LutPredictor's, torch-free
            from lutnas.space.complexity import weight_mib

            weights = [weight_mib(specs, table.precision)]
        corrected_ms = float(correction.apply([raw], [len(specs)], weights)[0])
    _print_lut(args, table, config, raw, correction, corrected_ms, None)
    return None


def _print_lut(args: argparse.Namespace, table: Any, config: Any, raw: float, correction: Any,
               corrected_ms: float | None, blocks: Any) -> None:
    """The LUT sum (and the corrected figure of a calibrated table), as text or `--json`."""
    console.print(f"LUT sum: {raw:.4f} ms  ({table.describe_settings()})")
    result: dict[str, Any] = {"predictor": "lut", "ms": raw, "settings": table.describe_settings()}
    if correction is not None and corrected_ms is not None:
        result["corrected_ms"] = corrected_ms
        result["correction"] = correction.describe()
        console.print(f"LUT + correction: {corrected_ms:.4f} ms  (= {result['correction']})")
    if args.json:
        print_json({**result, "config": config.to_dict(),
                    **({"blocks": _records(blocks)} if blocks is not None else {})})


def _records(frame: Any) -> list[dict[str, Any]]:
    """An explain frame as JSON-ready rows (NaN, e.g. an imported row's unknown CV, becomes null)."""
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def _predict_saved(args: argparse.Namespace, table: Any, space: Any, config: Any) -> int:
    """A predictor saved beside the table: its whole-model figure and, with --explain, its blocks."""
    from lutnas.predictors.registry import entry
    from lutnas.predictors.serialize import load_predictor, predictor_path

    path = predictor_path(args.table, args.predictor)
    if not path.is_file():
        how = (f"lutnas build-table ... --out {args.table} --predictor {args.predictor}"
               if entry(args.predictor).from_table else f"lutnas transfer ... --out {args.table}")
        raise PredictorError(f"no {args.predictor} predictor beside {args.table} ({path} is missing); "
                             f"run `{how}` first")
    predictor = load_predictor(args.table, args.predictor, space)
    ms = float(predictor.predict([config])[0])
    if args.explain:
        frame = predictor.explain(config)
        bounds = "bound" in frame.columns  # the analytic predictor says which bound each block hits
        out = Table(title=f"{len(frame)} blocks of the subnet ({args.predictor} predictor)")
        for column in ("#", "key", "ms", "± ms", *(("bound",) if bounds else ())):
            out.add_column(column, justify="left" if column in ("key", "bound") else "right")
        for position, (_, row) in enumerate(frame.iterrows()):
            out.add_row(str(position), str(row["key"]), f"{row['ms']:.4f}", f"{row['spread_ms']:.4f}",
                        *((str(row["bound"]),) if bounds else ()))
        console.print(out)
    correction = predictor.correction
    note = f"= {correction.describe()}" if correction.fitted else "block sum, no whole-model correction"
    console.print(f"{args.predictor}: {ms:.4f} ms  ({note}; {table.describe_settings()})")
    if args.json:
        print_json({"predictor": args.predictor, "ms": ms, "correction": note,
                    "settings": table.describe_settings(), "config": config.to_dict(),
                    **({"blocks": _records(predictor.explain(config))} if args.explain else {})})
    return 0
