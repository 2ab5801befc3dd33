"""`lutnas cache info|prune`: the exported-model cache (where it is, how big, and trimming it).

Every block and subnet that lutnas measures is exported once into a content-addressed cache
(`lutnas.profiler.export.ModelCache`): `$LUTNAS_CACHE` when set, else
`$XDG_CACHE_HOME/lutnas/models`, else `~/.cache/lutnas/models`. It grows with every space, runtime
and tool version (gigabytes after a few full profiles); deleting any of it is safe, as a missing
file is exported again when next needed.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from lutnas.cli._common import add_json_flag, console, json_aware, print_json, require
from lutnas.errors import BadInputError

# A cache entry: a model file (or its check record) named by a hex digest, e.g. 3f2a...c1.tflite or
# 0d0a464e8660-9cd1b04b91c2.tflite. Nothing else is ever deleted, even if LUTNAS_CACHE is pointed
# at a folder holding other files.
_ENTRY = re.compile(r"^[0-9a-f]{8,}(-[0-9a-f]{8,})?\.(tflite|onnx|pt|json)$")
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def cache_dir() -> tuple[Path, str]:
    """The model cache and why it is there (which variable or default chose it).

    Must agree with `lutnas.profiler.export.default_cache_dir` (a test checks it); repeated here
    because that module imports torch (5 s), and `cache info` should answer at once."""
    env = os.environ.get("LUTNAS_CACHE")
    if env:
        return Path(env), "LUTNAS_CACHE"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "lutnas" / "models", "XDG_CACHE_HOME"
    return Path.home() / ".cache" / "lutnas" / "models", "default"


@dataclass(frozen=True)
class Entry:
    """One cached file: path, size in bytes, last modification (the export time, epoch seconds)."""

    path: Path
    size: int
    mtime: float


def entries(root: Path) -> list[Entry]:
    """Every cache file under `root` (the root and one level of format folders), oldest first."""
    found = []
    for folder in [root, *(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
        for path in folder.iterdir():
            if path.is_file() and _ENTRY.match(path.name):
                stat = path.stat()
                found.append(Entry(path, stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda e: (e.mtime, str(e.path)))


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5G', '1024' (bytes) -> bytes. Raises argparse.ArgumentTypeError."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 500M or 2G")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cache", help="show or trim the exported-model cache",
        description="The exported-model cache: $LUTNAS_CACHE if set, else $XDG_CACHE_HOME/lutnas/models, "
                    "else ~/.cache/lutnas/models. Deleting from it is safe: a missing model is "
                    "exported again when next needed.")
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="where the cache is, its size and files per format")
    add_json_flag(info, "path, source, files and bytes per format")
    info.set_defaults(handler=json_aware(cache_info))
    prune = sub.add_parser("prune", help="delete cached models by age and/or total size (oldest first)")
    prune.add_argument("--older-than", type=float, metavar="DAYS",
                       help="delete files exported more than DAYS days ago")
    prune.add_argument("--max-size", type=parse_size, metavar="SIZE",
                       help="then delete the oldest files until the cache is at most SIZE (e.g. 2G)")
    prune.add_argument("--all", action="store_true", help="delete every cached model")
    prune.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    prune.set_defaults(handler=cache_prune)


def cache_info(args: argparse.Namespace) -> int:
    root, source = cache_dir()
    found = entries(root)
    per_format: dict[str, list[int]] = {}
    for entry in found:
        folder = entry.path.parent.name if entry.path.parent != root else "subnets"
        counts = per_format.setdefault(folder, [0, 0])
        counts[0] += 1
        counts[1] += entry.size
    total = sum(e.size for e in found)
    if args.json:
        print_json({"path": str(root), "source": source, "exists": root.is_dir(), "files": len(found),
                    "bytes": total, "formats": {k: {"files": n, "bytes": b}
                                                for k, (n, b) in sorted(per_format.items())}})
        return 0
    why = "(set by LUTNAS_CACHE)" if source == "LUTNAS_CACHE" else (
        "(under XDG_CACHE_HOME)" if source == "XDG_CACHE_HOME" else "(default; LUTNAS_CACHE moves it)")
    console.print(f"model cache: {root} {why}", markup=False)
    if not found:
        console.print("empty: nothing exported yet" if root.is_dir() else "not created yet")
        return 0
    table = Table()
    for column in ("folder", "files", "size"):
        table.add_column(column, justify="left" if column == "folder" else "right")
    for folder, (count, size) in sorted(per_format.items()):
        table.add_row(folder, str(count), human(size))
    table.add_row("[bold]all[/]", f"[bold]{len(found)}[/]", f"[bold]{human(total)}[/]")
    console.print(table)
    console.print(f"oldest {_date(found[0].mtime)}, newest {_date(found[-1].mtime)}; trim with "
                  f"`lutnas cache prune --older-than DAYS` or `--max-size SIZE`")
    return 0


def cache_prune(args: argparse.Namespace) -> int:
    require(args.all or args.older_than is not None or args.max_size is not None,
            "say what to delete: --older-than DAYS, --max-size SIZE or --all")
    if args.older_than is not None and args.older_than < 0:
        raise BadInputError(f"--older-than {args.older_than}: must be 0 days or more")
    root, _ = cache_dir()
    found = entries(root)
    doomed = choose(found, args.older_than, args.max_size, args.all, time.time())
    freed = sum(e.size for e in doomed)
    if not args.dry_run:
        for entry in doomed:
            entry.path.unlink(missing_ok=True)  # another process may have pruned it already
    verb = "would delete" if args.dry_run else "deleted"
    console.print(f"{verb} {len(doomed)} of {len(found)} files ({human(freed)}) from {root}; "
                  f"{human(sum(e.size for e in found) - freed)} left", markup=False)
    return 0


def choose(found: list[Entry], older_than_days: float | None, max_size: int | None, everything: bool,
           now: float) -> list[Entry]:
    """The entries to delete: all; or those older than the age, then oldest first past max_size.

    `found` is oldest first (as `entries` returns it)."""
    if everything:
        return list(found)
    doomed = [e for e in found if older_than_days is not None and now - e.mtime > older_than_days * 86400]
    if max_size is not None:
        gone = {e.path for e in doomed}
        left = sum(e.size for e in found if e.path not in gone)
        for entry in found:
            if left <= max_size:
                break
            if entry.path not in gone:
                doomed.append(entry)
                left -= entry.size
    return doomed


def _date(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
