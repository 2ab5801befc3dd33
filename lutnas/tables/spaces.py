"""A search space as stores and tables keep it: its YAML text and a digest of that text.

A table is shared and outlives the file its space came from (DESIGN.md: "a table embeds the space's
YAML text and digest, so everything downstream works without the file"), so the profiling run
records the text of its space and the table built from the run carries it on.

The digest is taken over the parsed YAML (canonical JSON), not the bytes: a copy of the file that
differs in comments, key order or layout is the same space and has the same digest.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from lutnas.errors import LutnasError
from lutnas.space import BUILTIN_SPACES, SearchSpace

# Where a space read back from a table's metadata says it came from (`LatencyTable.load_space`).
FROM_TABLE = "(from table metadata)"


def space_yaml(space: SearchSpace) -> str | None:
    """The YAML text `space` was read from: a built-in's text, or its file's text while the file
    still holds this space; None when neither is known (a space made in code, a file since changed
    or deleted)."""
    if space.source in BUILTIN_SPACES:
        return resources.files("lutnas.space.builtin").joinpath(f"{space.source}.yaml").read_text()
    path = Path(space.source) if space.source else None
    if path is None or not path.is_file():
        return None
    text = path.read_text()
    try:
        same = SearchSpace.from_yaml(text, source=space.source) == space
    except LutnasError:
        return None
    return text if same else None


def space_digest(text: str) -> str:
    """sha256 (hex) of the space YAML `text`, taken over its parsed content (canonical JSON), so
    comments and layout do not change it; over the raw text when it is not valid YAML."""
    import yaml

    try:
        canonical = json.dumps(yaml.safe_load(text), sort_keys=True, separators=(",", ":"), default=str)
    except yaml.YAMLError:
        canonical = text
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def short_digest(digest: str | None) -> str:
    """The first 12 hex digits, for messages."""
    return (digest or "?")[:12]
