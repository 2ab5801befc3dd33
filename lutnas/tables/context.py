"""What a latency table says about itself besides its rows: settings, precision, correction, space.

Shared by `LatencyTable` (rows in a pandas frame) and `TableLookup` (key -> ms only, read without
pandas for `lutnas predict`), so both describe a table the same way. Imports neither pandas nor
numpy: the light path must stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lutnas.device_agents.base import DeviceInfo
from lutnas.errors import SpaceFileError, TableError
from lutnas.space import SearchSpace
from lutnas.tables.spaces import FROM_TABLE, short_digest, space_digest, space_yaml

# A table's settings name its precision only when it is not fp32: every table written before
# precision existed was fp32, so those files keep their meaning (and their exact settings).
DEFAULT_PRECISION = "fp32"


def split_metadata(meta: dict[str, Any], path: str | Path) -> tuple[DeviceInfo, dict[str, Any], str,
                                                                   dict[str, Any]]:
    """(device, settings, space name, the rest) of a table file's metadata; TableError naming the
    file when the lutnas part is incomplete."""
    try:
        device = DeviceInfo.from_dict(meta["device"])
        settings = dict(meta["settings"])
        space = str(meta.get("space", ""))
    except (KeyError, TypeError) as exc:
        raise TableError(f"{path}: the lutnas metadata lacks {exc}; rebuild the table") from None
    rest = {k: v for k, v in meta.items() if k not in ("device", "settings", "space")}
    return device, settings, space, rest


class TableContext:
    """Methods over `device`, `settings`, `space` (name) and `metadata`, which subclasses hold."""

    device: DeviceInfo
    settings: dict[str, Any]
    space: str
    metadata: dict[str, Any]

    @property
    def precision(self) -> str:
        """fp32, fp16 or int8: the precision of the models this table's latencies were measured on."""
        return str(self.settings.get("precision") or DEFAULT_PRECISION)

    def describe_settings(self) -> str:
        """`device runtime=.. threads=.. cores=.. accelerator=..`; a value the table does not know
        (an imported table's threads) is left out rather than printed as None."""
        s = self.settings
        values = {"runtime": s.get("runtime"), "threads": s.get("threads"),
                  "cores": s.get("core_mask"), "accelerator": s.get("accelerator", "cpu"),
                  "precision": self.precision}
        if s.get("cache", "warm") != "warm":
            values["cache"] = s.get("cache")
        if s.get("pace"):  # figures in the pace model's units (RunSettings.pace)
            values["paced"] = "yes"
        return " ".join([self.device.device_id] + [f"{k}={v}" for k, v in values.items()
                                                   if v is not None])

    @property
    def correction(self) -> dict[str, Any] | None:
        """Whole-model correction {"scale", "intercept", ...} fitted by `--calibrate`, if any."""
        return self.metadata.get("correction")

    def set_correction(self, correction: dict[str, Any] | None) -> None:
        self.metadata["correction"] = correction

    # ------------------------------------------------------------------ the embedded space
    @property
    def space_digest(self) -> str | None:
        """Digest of the embedded space YAML (`spaces.space_digest`); None when none is embedded."""
        text = self.metadata.get("space_yaml")
        if not text:
            return None
        return str(self.metadata.get("space_digest") or space_digest(text))

    def load_space(self) -> SearchSpace:
        """The space the table was profiled for: its embedded YAML text if it has one (so the
        space's file may be gone), else the built-in space of its name. Raises UnknownSpaceError /
        SpaceFileError when neither is there, or when the embedded text fails the strict reading
        (the message then points to --space)."""
        text = self.metadata.get("space_yaml")
        if not text:
            return SearchSpace.load(self.space)
        try:
            return SearchSpace.from_yaml(text, source=f"{self.space} {FROM_TABLE}")
        except SpaceFileError as exc:
            # A table written before space files were read strictly (unknown keys were ignored
            # then) still holds its measurements: say how to go on without rebuilding it.
            raise SpaceFileError(f"{exc}; the table's embedded space no longer reads: give --space "
                                 f"with the space's YAML file, corrected") from None

    def space_mismatch(self, space: SearchSpace, given: str) -> str | None:
        """One line when `space` (named `given` by the user) is not the space embedded in this
        table, naming both and which to use; None when they agree or the table embeds none."""
        mine = self.space_digest
        if mine is None:
            return None
        text = space_yaml(space)
        theirs = space_digest(text) if text else None
        if theirs == mine or (theirs is None and space == self.load_space()):
            return None  # a space made in code has no text: compared by value
        return (f"--space {given} (digest {short_digest(theirs)}) is not the space this table was "
                f"built on ({self.space}, digest {short_digest(mine)}); keys may be missing or mean "
                f"other blocks: drop --space to use the table's own")
