#!/usr/bin/env bash
# The main job end to end on the embedded default (the host CPU), on the `tiny` space.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${DEMO_OUT:-out/demo}
mkdir -p "$OUT"
"$BIN/lutnas" space show tiny
