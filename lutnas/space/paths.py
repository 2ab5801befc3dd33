"""Telling a file name from a built-in name, for the space layer's error messages.

The space layer imports only the standard library, numpy, yaml and lutnas.errors (DESIGN.md's
layer table; tests/test_architecture.py), so these helpers live here, not in lutnas.fileio.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_file(path: Path) -> bool:
    """`path.is_file()`, False instead of OSError for a name that cannot be a path (too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


def is_dir(path: Path) -> bool:
    """`path.is_dir()`, False instead of OSError for a name that cannot be a path (too long)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def looks_like_path(text: str, suffixes: tuple[str, ...]) -> bool:
    """Whether a name given for a built-in thing or a file is meant as a file: it holds a path
    separator or ends in one of `suffixes` (lower case, with the dot). Tells "no such file" apart
    from "no such built-in" in error messages."""
    return any(sep in text for sep in ("/", "\\", os.sep)) or text.lower().endswith(suffixes)
