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

Writes results/host_check_tracking.json and prints a table. Reads only: nothing is measured.
Proof files that rerun another's measurements with another rule (`_tablecheck`) are left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
PREDICTOR = "LUT + correction"
SAME_MEASUREMENTS = ("_tablecheck",)  # reruns of another proof's measurements


def _normalised(check: dict[str, Any]) -> bool:
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


def main() -> None:
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
    measured = np.array([r["bias_as_measured"] for r in rows])
    both = np.array([r["bias_both_normalised"] for r in rows])
    shift = np.array([r["shift_by_references"] for r in rows])
    summary = {
        "proofs": len(rows),
        # Half a point either way counts as no change.
        "better_normalised": int(np.sum(np.abs(both) < np.abs(measured) - 0.005)),
        "worse_normalised": int(np.sum(np.abs(both) > np.abs(measured) + 0.005)),
        "mean_abs_bias_as_measured_pct": float(100 * np.mean(np.abs(measured))),
        "mean_abs_bias_both_normalised_pct": float(100 * np.mean(np.abs(both))),
        "correlation_bias_with_references_shift": float(np.corrcoef(measured, shift)[0, 1]),
        # Least squares bias = slope * shift + offset: 1 if the subnets moved as the references did.
        "slope_bias_on_references_shift": float(np.polyfit(shift, measured, 1)[0]),
    }
    console = Console(highlight=False, width=160)
    console.print(table)
    console.print(f"normalising both sessions always: better in {summary['better_normalised']}, worse in "
                  f"{summary['worse_normalised']} of {summary['proofs']} proofs; mean |bias| "
                  f"{summary['mean_abs_bias_as_measured_pct']:.2f}% as measured, "
                  f"{summary['mean_abs_bias_both_normalised_pct']:.2f}% normalised; correlation of the "
                  f"bias with the references' shift {summary['correlation_bias_with_references_shift']:.2f}, "
                  f"slope {summary['slope_bias_on_references_shift']:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "host_check_tracking.json"
    out.write_text(json.dumps({"summary": summary, "proofs": rows}, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
