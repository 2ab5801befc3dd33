"""Do the host check's reference blocks track the whole subnets' session shifts?

A proof (`predictor_accuracy.py`) calibrates in one session and scores the held-out subnets in
another; each session measures the table's reference blocks next to its subnets (the host check).
If the references' session ratios r (now / table) moved with the subnets, the correction's bias on
the held-out subnets taken as measured would be about r_cal / r_eval - 1, and normalising both
sessions by their own r would take it out. This reads every proof's result file and reports:

- the bias of "LUT + correction" as measured (any normalisation the check applied backed out:
  a normalised calibration divided its subnets by r_cal, scaling predictions by 1 / r_cal;
  a normalised evaluation divided the measured figures by r_eval);
- the bias had both sessions always been normalised: (1 + as measured) * r_eval / r_cal - 1;
- how many proofs that would make better or worse, and the correlation and least-squares slope of
  the as-measured bias on r_cal / r_eval - 1 across proofs (both 1 if the references tracked the
  subnets exactly).

    .venv/bin/python benchmarks/host_check_tracking.py

The summary is given over all proofs and without the ones whose references moved more than
10% between the sessions (two, one of them a single-reference check), which dominate a least-squares
slope; scipy's Theil-Sen slope (the median of pairwise slopes, chosen as the maintained robust
estimator) is given as well.

Writes results/host_check_tracking.json and prints a table. Reads only: nothing is measured.
Proof files that rerun another proof's subnet sessions are left out (`_tablecheck`: the same
sessions under another rule; `_blocks20`: `_subnets20`'s sessions against a topped-up table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.stats import theilslopes

RESULTS = Path(__file__).parent / "results"
PREDICTOR = "LUT + correction"
SAME_MEASUREMENTS = ("_tablecheck", "_blocks20")  # reruns of another proof's subnet sessions
LARGE_SHIFT = 0.10  # references moved more than this between the sessions: reported apart


def _normalised(check: dict[str, Any]) -> bool:
    """Whether a host check divided its session's subnets by its ratio (older files: "applied")."""
    return bool(check.get("normalised", check.get("applied", False)))


def proof_row(path: Path) -> dict[str, Any] | None:
    """One proof's sessions and biases (fractions), or None without a host check in both."""
    record = json.loads(path.read_text())
    calibration = (record.get("host_checks") or [None])[0]
    evaluation = (record.get("evaluation_host_checks") or [None])[0]
    bias = (record.get("bias_pct") or {}).get(PREDICTOR)
    if not calibration or not evaluation or bias is None:
        return None
    r_cal, r_eval = float(calibration["ratio"]), float(evaluation["ratio"])
    as_run = bias / 100.0
    as_measured = ((1 + as_run) * (r_cal if _normalised(calibration) else 1.0)
                   / (r_eval if _normalised(evaluation) else 1.0) - 1)
    return {"proof": path.stem.removeprefix("predictor_accuracy_"),
            "references": len(calibration.get("ratios") or [calibration["ratio"]]),
            "r_calibration": r_cal, "r_evaluation": r_eval,
            "shift_by_references": r_cal / r_eval - 1, "bias_as_run": as_run,
            "bias_as_measured": as_measured,
            "bias_both_normalised": (1 + as_measured) * r_eval / r_cal - 1}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Over `rows`: how often always normalising helps, and how the bias follows the references'
    shift (slopes of 1 if the subnets moved as the references did)."""
    measured = np.array([r["bias_as_measured"] for r in rows])
    both = np.array([r["bias_both_normalised"] for r in rows])
    shift = np.array([r["shift_by_references"] for r in rows])
    return {
        "proofs": len(rows),
        # Half a point either way counts as no change.
        "better_normalised": int(np.sum(np.abs(both) < np.abs(measured) - 0.005)),
        "worse_normalised": int(np.sum(np.abs(both) > np.abs(measured) + 0.005)),
        "mean_abs_bias_as_measured_pct": float(100 * np.mean(np.abs(measured))),
        "mean_abs_bias_both_normalised_pct": float(100 * np.mean(np.abs(both))),
        "correlation": float(np.corrcoef(measured, shift)[0, 1]),
        "slope_least_squares": float(np.polyfit(shift, measured, 1)[0]),
        "slope_theil_sen": float(theilslopes(measured, shift)[0]),
    }


def main() -> None:
    """Print the proofs' table and the summaries; write results/host_check_tracking.json."""
    paths = sorted(p for p in RESULTS.glob("predictor_accuracy_*.json")
                   if not any(tag in p.stem for tag in SAME_MEASUREMENTS))
    rows = [row for row in map(proof_row, paths) if row is not None]
    table = Table(title=f"{PREDICTOR}: held-out bias by how the sessions are taken ({len(rows)} proofs)")
    for column in ("proof", "refs", "r cal", "r eval", "refs' shift", "bias as measured",
                   "both normalised"):
        table.add_column(column, justify="left" if column == "proof" else "right")
    for row in rows:
        table.add_row(row["proof"], str(row["references"]), f"{row['r_calibration']:.3f}",
                      f"{row['r_evaluation']:.3f}", f"{100 * row['shift_by_references']:+.2f}%",
                      f"{100 * row['bias_as_measured']:+.2f}%",
                      f"{100 * row['bias_both_normalised']:+.2f}%")
    summary = {"all": _summary(rows),
               f"references_shift_within_{LARGE_SHIFT:.0%}": _summary(
                   [r for r in rows if abs(r["shift_by_references"]) <= LARGE_SHIFT])}
    console = Console(highlight=False, width=160)
    console.print(table)
    for name, part in summary.items():
        console.print(f"{name} ({part['proofs']} proofs): normalising both sessions always: better in "
                      f"{part['better_normalised']}, worse in {part['worse_normalised']}; mean |bias| "
                      f"{part['mean_abs_bias_as_measured_pct']:.2f}% as measured, "
                      f"{part['mean_abs_bias_both_normalised_pct']:.2f}% normalised; bias on the "
                      f"references' shift: correlation {part['correlation']:.2f}, least-squares slope "
                      f"{part['slope_least_squares']:.2f}, Theil-Sen slope {part['slope_theil_sen']:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "host_check_tracking.json"
    out.write_text(json.dumps({"summary": summary, "proofs": rows}, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
