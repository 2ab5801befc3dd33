"""Save and load predictors as JSON + numeric arrays in one .npz file: no pickle, no code on load.

Users share predictors like tables, so loading one from someone else must execute nothing and must
survive the next scikit-learn release. A file holds a JSON header (kind of predictor, fitted
constants, per-kind choices) and flat numeric arrays (the trees); `np.load(allow_pickle=False)`
refuses object arrays, every array's dtype is checked against a short list, a SHA-256 digest over
header and arrays detects any edit, and tree arrays are checked structurally (children after their
parent, features in range: `trees.check_tree_arrays`) so even a file whose digest was recomputed
cannot make prediction loop or index out of bounds. Which names can be saved is the registry's word.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lutnas.errors import PredictorError
from lutnas.fileio import atomic_path
from lutnas.predictors import registry
from lutnas.predictors.base import Predictor, PredictorContext
from lutnas.space import SearchSpace

FORMAT = "lutnas-predictor"
FORMAT_VERSION = 1
SUFFIX = ".predictor.npz"
ALLOWED_DTYPES = {np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.uint8)}
_HEADER, _DIGEST = "__header__", "__digest__"


def predictor_path(table_path: str | Path, name: str) -> Path:
    """Where the predictor `name` of a table lives: beside it, `<table stem>.<name>.predictor.npz`."""
    table_path = Path(table_path)
    return table_path.with_name(f"{table_path.stem}.{name}{SUFFIX}")


def _digest(header_bytes: bytes, arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(header_bytes)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_predictor(predictor: Predictor, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write a fitted predictor of a savable registry entry atomically; returns `path`."""
    name = getattr(predictor, "name", "")
    savable = registry.saved_names()
    if name not in savable or not isinstance(predictor, registry.entry(name).cls):
        raise PredictorError(f"cannot save a {type(predictor).__name__}; savable: {sorted(savable)}")
    header, arrays = predictor.state()  # type: ignore[attr-defined]
    return write_state(name, header, arrays, path, extra)


def write_state(name: str, header: dict[str, Any], arrays: dict[str, np.ndarray], path: str | Path,
                extra: dict[str, Any] | None = None) -> Path:
    """Write (JSON header, numeric arrays) under the predictor name `name` atomically; returns `path`
    (`save_predictor` for registered predictors, `FeatureLatencyModel.save` for the feature model)."""
    document = {"format": FORMAT, "version": FORMAT_VERSION, "predictor": name, "state": header,
                "extra": extra or {}}
    header_bytes = json.dumps(document, sort_keys=True, allow_nan=False).encode()
    clean: dict[str, np.ndarray] = {}
    for key, array in arrays.items():
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float64)
        elif array.dtype.kind in "iu" and array.dtype != np.uint8:
            array = array.astype(np.int64)
        if array.dtype not in ALLOWED_DTYPES:
            raise PredictorError(f"array {key} has dtype {array.dtype}; only numbers are saved")
        clean[key] = array
    payload = dict(clean)
    payload[_HEADER] = np.frombuffer(header_bytes, dtype=np.uint8)
    payload[_DIGEST] = np.frombuffer(_digest(header_bytes, clean).encode(), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **payload)
    return path


def read_predictor_file(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The verified (document, arrays) of a predictor file, or one PredictorError line."""
    path = Path(path)
    refuse = f"{path}: not a trustworthy lutnas predictor file"
    if not path.is_file():
        raise PredictorError(f"{path}: no such predictor file; build it with "
                             f"`lutnas build-table ... --predictor learned|analytic|all`")
    raw = path.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise PredictorError(f"{refuse} (not an .npz archive; pickled predictors are never "
                             f"loaded); rebuild it with lutnas")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:  # object arrays, truncated members, bad npy headers
        raise PredictorError(f"{refuse} ({type(exc).__name__}: {str(exc)[:120]}); rebuild it "
                             f"with lutnas") from None
    if _HEADER not in arrays or _DIGEST not in arrays:
        raise PredictorError(f"{refuse} (no header or digest); rebuild it with lutnas")
    header_bytes = arrays.pop(_HEADER).tobytes()
    stored = arrays.pop(_DIGEST).tobytes().decode(errors="replace")
    for key, array in arrays.items():
        if array.dtype not in ALLOWED_DTYPES:
            raise PredictorError(f"{refuse} (array {key} has dtype {array.dtype}); rebuild it")
    if _digest(header_bytes, arrays) != stored:
        raise PredictorError(f"{refuse} (its content does not match its digest: the file was "
                             f"altered or damaged); rebuild it or get an intact copy")
    try:
        document = json.loads(header_bytes)
    except ValueError:
        raise PredictorError(f"{refuse} (header is not JSON); rebuild it") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise PredictorError(f"{refuse} (format tag missing); rebuild it")
    if document.get("version") != FORMAT_VERSION:
        raise PredictorError(f"{path}: predictor file version {document.get('version')} is not "
                             f"{FORMAT_VERSION}, which this lutnas reads; rebuild it with this lutnas")
    return document, arrays


def load_predictor_file(path: str | Path, space: SearchSpace | None = None) -> Predictor:
    """The predictor saved at `path` (verified first), for `space`."""
    document, arrays = read_predictor_file(path)
    name = document.get("predictor")
    if name not in registry.saved_names():
        raise PredictorError(f"{path}: unknown predictor {name!r}; known: {sorted(registry.saved_names())}")
    try:
        return registry.entry(name).cls.from_state(document["state"], arrays, space)  # type: ignore[attr-defined]
    except PredictorError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PredictorError(f"{path}: predictor file is incomplete or malformed ({type(exc).__name__}: "
                             f"{str(exc)[:100]}); rebuild it with lutnas") from None


# ------------------------------------------------------------------------------------------------
# Entry points for `lutnas build-table --predictor` and `lutnas predict --predictor`.

def fit_and_save_predictors(table: Any, space: SearchSpace | None, kinds: str | list[str],
                            table_path: str | Path) -> dict[str, Path]:
    """Fit the predictors named by `kinds` (a name of `registry.fittable_names()`, "all" or a list)
    on `table`'s measured blocks, calibrate them on the table's calibration subnets as `lutnas
    evaluate` does (so the saved predictor is the one evaluate scored), and save each beside the
    table file; returns name -> path."""
    fittable = registry.fittable_names()
    names = list(fittable) if kinds == "all" else ([kinds] if isinstance(kinds, str) else list(kinds))
    unknown = [n for n in names if n not in fittable]
    if unknown:
        raise PredictorError(f"unknown predictor {unknown[0]!r}; use {', '.join(fittable)} or all")
    context = (PredictorContext.from_table(table, space) if space is not None
               else PredictorContext(table, space))  # type: ignore[arg-type]
    extra = {"table": str(table_path), "device_id": table.device.device_id,
             "settings": table.settings, "space": table.space}
    return {name: save_predictor(registry.fit_for_table(name, context),
                                 predictor_path(table_path, name), extra=extra) for name in names}


def load_predictor(table_path: str | Path, name: str, space: SearchSpace | None = None) -> Predictor:
    """The predictor `name` saved beside the table at `table_path`."""
    if name not in registry.saved_names():
        raise PredictorError(f"unknown predictor {name!r}; saved predictors are "
                             f"{sorted(registry.saved_names())}")
    return load_predictor_file(predictor_path(table_path, name), space)
