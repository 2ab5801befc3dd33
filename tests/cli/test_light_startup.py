"""Light commands load no heavy library they do not need (issue 18: <= 1 s wall for `measurements`).

`lutnas measurements` on a store with trials used to import scipy.stats (~0.8 s) for the binomial
tail of the median's confidence interval; the interval is now exact integer arithmetic. These
tests run the real command in a fresh interpreter and check both what it loaded and that the
interval it prints is still scipy's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lutnas.device_agents.base import RunSettings
from lutnas.tables.store import MeasurementStore
from tests.tables.synthetic import KEY_A, KEY_B, add_trials, device

ROOT = Path(__file__).resolve().parents[2]

# Runs the CLI as the installed script does and, at exit, prints the heavy modules it loaded to
# stderr (the last line), so stdout stays the command's own JSON.
_WRAPPER = """
import atexit, sys
atexit.register(lambda: print(sorted(m for m in ("scipy", "scipy.stats", "torch", "sklearn")
                                     if m in sys.modules), file=sys.stderr))
from lutnas.cli import run
sys.argv[0] = "lutnas"
run()
"""


def _scipy_interval(values: list[float], level: float = 0.95) -> list[float]:
    """The order-statistic interval computed with scipy.stats.binom, as lutnas did before."""
    from scipy.stats import binom

    values, n = sorted(values), len(values)
    tail = binom.cdf(range(n), n, 0.5)
    low = max(1, sum(1 for t in tail if t <= (1 - level) / 2))
    return [values[low - 1], values[n - low]]


def test_measurements_with_trials_imports_no_scipy_and_keeps_its_interval(tmp_path) -> None:
    store_path = tmp_path / "m.sqlite"
    many = [1.0 + 0.01 * i for i in (5, 3, 9, 1, 7, 0, 8, 2, 6, 4, 11, 10)]  # 12 trials: a true 95% CI
    few = [0.5, 0.52, 0.6]  # below six trials: the range
    with MeasurementStore(store_path) as store:
        settings = RunSettings(runtime="tflite", threads=1)
        store.upsert_device(device())
        run = store.start_run("host-test", settings, "tiny", "block", ["test"])
        add_trials(store, run, "host-test", settings, KEY_A, many)
        add_trials(store, run, "host-test", settings, KEY_B, few)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", _WRAPPER, "measurements", "--store", str(store_path),
                             "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr
    rows = {row["key"]: row for row in json.loads(result.stdout)}
    for key, medians in ((KEY_A, many), (KEY_B, few)):
        assert [rows[key]["ci_low_ms"], rows[key]["ci_high_ms"]] == _scipy_interval(medians)
    assert _scipy_interval(many) != [min(many), max(many)]  # the 12-trial case is not the range
