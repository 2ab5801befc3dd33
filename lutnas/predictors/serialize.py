"""Save and load predictors as JSON + numeric arrays in one .npz file: no pickle, no code on load.

Users share predictors like tables, so loading one from someone else must execute nothing and must
survive the next scikit-learn release. A file holds a JSON header (kind of predictor, fitted
constants, per-kind choices) and flat numeric arrays (the trees); `np.load(allow_pickle=False)`
refuses object arrays, every array's dtype is checked against a short list, a SHA-256 digest over
header and arrays detects any edit, and tree arrays are checked structurally (children after their
parent, features in range) so even a file whose digest was recomputed cannot make prediction loop
or index out of bounds.
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


def _registry() -> dict[str, Any]:
    from lutnas.predictors.analytic import AnalyticPredictor
    from lutnas.predictors.learned import LearnedPredictor
    from lutnas.predictors.transfer import TransferPredictor

    return {"learned": LearnedPredictor, "analytic": AnalyticPredictor, "transfer": TransferPredictor}


def save_predictor(predictor: Any, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `predictor` (anything with `state()` and a registered `name`) atomically."""
    name = getattr(predictor, "name", "")
    if name not in _registry():
        raise PredictorError(f"cannot save a {type(predictor).__name__}; savable: {sorted(_registry())}")
    header, arrays = predictor.state()
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


def load_predictor_file(path: str | Path, space: SearchSpace | None = None) -> Any:
    document, arrays = read_predictor_file(path)
    registry = _registry()
    name = document.get("predictor")
    if name not in registry:
        raise PredictorError(f"{path}: unknown predictor {name!r}; known: {sorted(registry)}")
    try:
        return registry[name].from_state(document["state"], arrays, space)
    except PredictorError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PredictorError(f"{path}: predictor file is incomplete or malformed ({type(exc).__name__}: "
                             f"{str(exc)[:100]}); rebuild it with lutnas") from None


def check_tree_arrays(parts: dict[str, np.ndarray], n_features: int, prefix: str) -> None:
    """Refuse tree arrays whose walk could loop or index out of range."""
    def bad(why: str) -> PredictorError:
        return PredictorError(f"predictor file's trees ({prefix}) are malformed: {why}; rebuild it")

    n = len(parts["value"])
    if not all(len(parts[k]) == n for k in ("left", "right", "feature", "threshold")):
        raise bad("node arrays differ in length")
    if n == 0 or len(parts["member"]) != len(parts["offsets"]) or len(parts["base"]) == 0:
        raise bad("no trees or inconsistent tree counts")
    if parts["member"].min() < 0 or parts["member"].max() >= len(parts["base"]):
        raise bad("tree member index out of range")
    if parts["offsets"].min() < 0 or parts["offsets"].max() >= n:
        raise bad("tree offset out of range")
    index = np.arange(n)
    inner = parts["feature"] >= 0
    if parts["feature"].max() >= n_features:
        raise bad("feature index out of range")
    for side in ("left", "right"):
        child = parts[side][inner]
        # Children come after their parent (depth-first build): every walk ends at a leaf.
        if child.size and (np.any(child <= index[inner]) or np.any(child >= n)):
            raise bad(f"{side} child index out of order or range")
    if not (np.all(np.isfinite(parts["value"])) and np.all(np.isfinite(parts["threshold"]))):
        raise bad("non-finite values")


# ------------------------------------------------------------------------------------------------
# Entry points for `lutnas build-table --predictor` and `lutnas predict --predictor`.

FITTABLE = ("learned", "analytic")


def fit_and_save_predictors(table: Any, space: SearchSpace | None, kinds: str | list[str],
                            table_path: str | Path) -> dict[str, Path]:
    """Fit the predictors named by `kinds` ("learned", "analytic", "all" or a list) on `table`'s
    measured blocks and save each beside the table file; returns name -> path."""
    from lutnas.predictors.analytic import AnalyticPredictor
    from lutnas.predictors.learned import LearnedPredictor

    names = list(FITTABLE) if kinds == "all" else ([kinds] if isinstance(kinds, str) else list(kinds))
    unknown = [n for n in names if n not in FITTABLE]
    if unknown:
        raise PredictorError(f"unknown predictor {unknown[0]!r}; use learned, analytic or all")
    makers = {"learned": LearnedPredictor, "analytic": AnalyticPredictor}
    calibration: tuple[list[Any], list[float]] = ([], [])
    if space is not None and table.correction:
        from lutnas.predictors.evaluate import calibration_of

        calibration = calibration_of(table, space)
    saved = {}
    for name in names:
        predictor = makers[name](space).fit_blocks(table)
        if calibration[0]:
            # The whole-model overhead from the table's calibration subnets, as `lutnas evaluate`
            # fits it: the saved predictor is then the one evaluate scored.
            predictor.fit_overhead(*calibration)
        extra = {"table": str(table_path), "device_id": table.device.device_id,
                 "settings": table.settings, "space": table.space}
        saved[name] = save_predictor(predictor, predictor_path(table_path, name), extra=extra)
    return saved


def load_predictor(table_path: str | Path, name: str, space: SearchSpace | None = None) -> Any:
    """The predictor `name` saved beside the table at `table_path`."""
    if name not in _registry():
        raise PredictorError(f"unknown predictor {name!r}; saved predictors are {sorted(_registry())}")
    return load_predictor_file(predictor_path(table_path, name), space)
