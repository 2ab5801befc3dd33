"""Latency predictors: one contract (`base`), one registry (`registry`), one whole-model correction
(`correction`), accuracy metrics (`metrics`).

- `lut`: the sum of a table's block latencies (vectorised over a space's configs for search);
- `analytic`, `learned`, `transfer`: block latencies from MACs/bytes, trees, or another device's
  table (`blocksum` sums and corrects them, `features` and `trees` serve them);
- `baselines`: the MACs-linear baseline reported next to them;
- `feature_model`: `FeatureLatencyModel`, latency from any feature table (scikit-learn contract);
- `adaptive`: which blocks adaptive profiling measures next (pure policy);
- `evaluate`: scoring against measured whole subnets; `serialize`: pickle-free predictor files.

Nothing here measures: whole subnets are measured by `lutnas.profiler.subnets`. Importing this
package imports none of its modules (each pulls pandas or numpy as it needs).
"""

from typing import Any

__all__ = ["FeatureLatencyModel", "LearnedPredictor", "load_predictor_file", "save_predictor"]

_PUBLIC = {"FeatureLatencyModel": "lutnas.predictors.feature_model",
           "LearnedPredictor": "lutnas.predictors.learned",
           "load_predictor_file": "lutnas.predictors.serialize",
           "save_predictor": "lutnas.predictors.serialize"}


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (the package itself stays import-free)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lutnas.predictors' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)
