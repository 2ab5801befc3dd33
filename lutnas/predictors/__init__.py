"""Latency predictors: one contract (`base`), one registry (`registry`), one whole-model correction
(`correction`), accuracy metrics (`metrics`).

- `lut`: the sum of a table's block latencies (vectorised over a space's configs for search);
- `analytic`, `learned`, `transfer`: block latencies from MACs/bytes, trees, or another device's
  table (`blocksum` sums and corrects them, `features` and `trees` serve them);
- `baselines`: the MACs-linear baseline reported next to them;
- `adaptive`: which blocks adaptive profiling measures next (pure policy);
- `evaluate`: scoring against measured whole subnets; `serialize`: pickle-free predictor files.

Nothing here measures: whole subnets are measured by `lutnas.profiler.subnets`. Importing this
package imports none of its modules (each pulls pandas or numpy as it needs).
"""
