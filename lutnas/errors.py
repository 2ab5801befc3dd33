"""One exception family so the CLI can turn any failure into one line and the right exit code.

Exit code 2 means the user gave something wrong (a config, a file, a flag) and can fix it;
exit code 1 means the device or the environment failed under a correct request.
"""

from __future__ import annotations


class LutnasError(Exception):
    """Base of every error lutnas raises on purpose; its message is one line that names the fix."""

    exit_code = 1


class BadInputError(LutnasError):
    """Something the user passed (flag, file, config, key) is wrong."""

    exit_code = 2


class UnknownSpaceError(BadInputError):
    """A search space name that is neither built in nor a readable YAML file."""


class SpaceFileError(BadInputError):
    """A search-space YAML that does not parse or does not describe a valid space."""


class ConfigError(BadInputError):
    """A SubnetConfig that is malformed or outside its space."""


class BlockKeyError(BadInputError):
    """A block key that does not parse, or names an unknown block kind."""


class StoreError(BadInputError):
    """A measurement store that is not a lutnas store, is corrupt, or is of a newer schema."""


class TableError(BadInputError):
    """A latency table that cannot be read, mixes settings, or misses keys."""


class PredictorError(BadInputError):
    """A predictor file that cannot be trusted or a prediction that cannot be made."""


class ExportError(LutnasError):
    """A block or subnet that could not be exported, or whose export disagrees with PyTorch."""


class DeviceError(LutnasError):
    """The device (host or phone) failed: disconnect, timeout, missing runner, garbled output."""


class RunnerOutputError(DeviceError):
    """Runner output that matches none of the known formats."""


class SearchError(BadInputError):
    """A search request that cannot be satisfied (e.g. a target outside the achievable range)."""


class DataError(BadInputError):
    """A training data set that cannot be found or read (`--data`)."""
