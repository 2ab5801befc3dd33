"""The one reader of subnet configs from the command line, and ElasticViT's released models.

`read_config(space, source)` accepts every form a user may hold a subnet in (see `ACCEPTED`); the
CLI passes each `--config` (and the trainer each `--eval-config`) through it. The 9 released
ElasticViT models ship in `builtin/elasticvit-released.json` (MIT, microsoft/Moonlit) and are named
`elasticvit:S1` or `elastic_S1`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from lutnas.errors import ConfigError
from lutnas.space.config import SubnetConfig, loads_json
from lutnas.space.paths import is_dir, is_file, looks_like_path
from lutnas.space.searchspace import SearchSpace

RELEASED_FILE = "elasticvit-released.json"
RELEASED_PREFIX = "elasticvit:"  # elasticvit:S1 names the released model elastic_S1
ACCEPTED = ("a SubnetConfig as JSON text or a .json file; a JSON object holding one under \"config\" "
            "(search's best.json); ElasticViT's 10-tuple as a JSON list; smallest; largest; or a "
            "released ElasticViT model (elasticvit:T1 .. elasticvit:L3, or elastic_T1 ..)")


@lru_cache(maxsize=1)
def released_models() -> dict[str, list[Any]]:
    """Released ElasticViT model name (`elastic_S1`) -> its 10-tuple, in the file's order."""
    text = resources.files("lutnas.space.builtin").joinpath(RELEASED_FILE).read_text()
    return dict(json.loads(text)["models"])


def released_name(text: str) -> str | None:
    """`elastic_S1` for `elasticvit:S1`, `elasticvit:elastic_S1` or `elastic_S1` (any case of the
    model part); None when `text` is not of a released-model form. Raises ConfigError for a
    released-model form that names no released model."""
    if text.startswith(RELEASED_PREFIX):
        short = text[len(RELEASED_PREFIX):]
    elif text.startswith("elastic_"):
        short = text
    else:
        return None
    short = short.removeprefix("elastic_")
    for name in released_models():
        if name.removeprefix("elastic_").lower() == short.lower():
            return name
    known = ", ".join(n.removeprefix("elastic_") for n in released_models())
    raise ConfigError(f"no released ElasticViT model {text!r}; known: {RELEASED_PREFIX}{{{known}}}")


def released_config(name: str, space: SearchSpace) -> SubnetConfig:
    """The released model `name` (`S1`, `elastic_S1` or `elasticvit:S1`) as a config of `space`.

    Raises ConfigError for an unknown name (listing the known ones) or a space it does not fit."""
    full = released_name(name if name.startswith(("elastic_", RELEASED_PREFIX))
                         else RELEASED_PREFIX + name)
    assert full is not None  # both forms above are released-model forms
    try:
        return SubnetConfig.from_elasticvit(released_models()[full], space)
    except ConfigError as exc:
        raise ConfigError(f"released model {full} does not fit space {space.name!r} "
                          f"(use --space elasticvit): {exc}") from None


def read_config(space: SearchSpace, source: str) -> SubnetConfig:
    """A config of `space` from any accepted form (`ACCEPTED`), validated.

    A file of that name wins over a released-model name. Raises ConfigError naming what was wrong
    and the accepted forms; a name that looks like a path (a path separator, or ending in .json)
    and is no file is reported as a missing file."""
    text, origin = source.strip(), "subnet config"
    if text in ("smallest", "largest"):
        return getattr(space, text)()
    if not text.startswith(("{", "[")):
        path = Path(text)
        if is_file(path):
            text, origin = _read_text(path), f"config file {text!r}"
        elif released_name(text) is not None:
            return released_config(text, space)
        elif looks_like_path(text, (".json",)):
            what = "is a directory, not a file" if is_dir(path) else "does not exist"
            raise ConfigError(f"config file {text!r} {what}; check the path, or give the config "
                              f"itself (accepted: {ACCEPTED})")
        else:
            raise ConfigError(f"config {source!r} is neither a JSON file nor JSON text nor a known "
                              f"name; accepted: {ACCEPTED}")
    data = loads_json(text, f"config {source!r}", hint=f"; accepted: {ACCEPTED}")
    return config_from_data(space, data, origin)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read as text ({exc})") from None


def config_from_data(space: SearchSpace, data: Any, source: str = "subnet config") -> SubnetConfig:
    """A config of `space` from parsed JSON: a SubnetConfig object, {"config": ...} or a 10-tuple.

    Raises ConfigError as `SubnetConfig.from_dict` (naming `source`), `from_elasticvit` and
    `SearchSpace.validate` do."""
    if isinstance(data, dict) and "config" in data and "stem" not in data:
        data = data["config"]  # search's best.json and similar records
    if isinstance(data, list):
        return SubnetConfig.from_elasticvit(data, space)
    if isinstance(data, dict):
        return space.validate(SubnetConfig.from_dict(data, source))
    raise ConfigError(f"a config is a JSON object or list, got {type(data).__name__}; "
                      f"accepted: {ACCEPTED}")
