"""`lutnas predict --table T --config subnet.json [--explain]`: a subnet's latency from a table."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lutnas.errors import ConfigError

# Keys are ~60 characters: when piped, print wide rather than cut them at rich's 80 columns.
console = Console(highlight=False, width=None if Console().is_terminal else 200)

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="predict a subnet's latency from a latency table")
    p.add_argument("--table", required=True, type=Path)
    p.add_argument("--config", required=True,
                   help="subnet config: a JSON file, a JSON string, or 'smallest' / 'largest'")
    p.add_argument("--space", help="space of the config (default: the table's)")
    p.add_argument("--explain", action="store_true", help="list every block with its latency")
    p.set_defaults(handler=predict_command)


def read_config(text: str, space: object) -> object:
    from lutnas.supernet.space import SearchSpace

    assert isinstance(space, SearchSpace)
    if text in ("smallest", "largest"):
        return getattr(space, text)()
    path = Path(text)
    if path.is_file():
        text = path.read_text()
    elif not text.lstrip().startswith("{"):
        raise ConfigError(f"--config {text!r} is neither a file nor a JSON object")
    return space.config_from_json(text)


def predict_command(args: argparse.Namespace) -> int:
    from lutnas.predictors.lut import LutPredictor
    from lutnas.supernet.space import SearchSpace
    from lutnas.tables.table import LatencyTable

    table = LatencyTable.load(args.table)
    space = SearchSpace.load(args.space) if args.space else table.load_space()
    config = read_config(args.config, space)
    predictor = LutPredictor(table, space)
    raw = float(predictor.predict([config])[0])
    if args.explain:
        frame = predictor.explain(config)
        out = Table(title=f"{len(frame)} blocks of the subnet")
        for column in ("#", "key", "ms", "cv", "flag"):
            out.add_column(column, justify="left" if column in ("key", "flag") else "right")
        for _, row in frame.iterrows():
            out.add_row(str(row["position"]), row["key"], f"{row['ms']:.4f}", f"{row['cv']:.3f}",
                        str(row["flag"]))
        console.print(out)
    console.print(f"LUT sum: {raw:.4f} ms  ({table.describe_settings()})")
    if table.correction:
        corrected = float(predictor.as_corrected().predict([config])[0])
        from lutnas.cli.table import describe_correction

        console.print(f"LUT + correction: {corrected:.4f} ms  (= {describe_correction(table.correction)}, "
                      f"fitted on {table.correction.get('n', '?')} measured subnets)")
    return 0
