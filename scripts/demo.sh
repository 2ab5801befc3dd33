#!/usr/bin/env bash
# The main job end to end on the embedded default, the host CPU, on the `tiny` space:
# profile every block -> build the latency table (with a whole-model correction) -> prove it
# against whole subnets measured end to end -> train a small supernet -> search under a
# millisecond target -> export the winner and measure it on the host.
# Everything lands in $DEMO_OUT (default out/demo); a rerun reuses what is already measured.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${DEMO_OUT:-out/demo}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/6 the search space"
"$BIN/lutnas" space show tiny

step "2/6 profile every block of tiny on this CPU (LiteRT, 1 thread, fresh process per trial)"
"$BIN/profile-device" --device local --space tiny --runtime tflite --threads 1 \
  --trials 5 --warmup 10 --runs 50 --store "$OUT/host.sqlite"

step "3/6 build the latency table, with a correction fitted on 5 whole subnets"
"$BIN/lutnas" build-table --store "$OUT/host.sqlite" --out "$OUT/tiny-host.parquet" --calibrate 5
"$BIN/lutnas" table show "$OUT/tiny-host.parquet"

step "4/6 how good is the table? 10 held-out subnets measured end to end"
"$BIN/lutnas" evaluate --device local --table "$OUT/tiny-host.parquet" --samples 10 \
  --store "$OUT/host.sqlite" --plot "$OUT/evaluate.png"

step "5/6 train a small supernet on scikit-learn's digits (short budget)"
if [ -f "$OUT/supernet/checkpoint.json" ]; then
  echo "trained already: $OUT/supernet (delete it to train again)"
else
  "$BIN/lutnas" train-supernet --space tiny --data builtin:digits --epochs 2 --steps-per-epoch 20 \
    --batch-size 32 --sampler ca+pa --threads 1 --out "$OUT/supernet"
fi

step "6/6 search under a millisecond target, export the winner and measure it here"
# Latency depends on the host: aim at 60% of the way from this table's fastest to slowest subnet.
read -r TARGET WINDOW < <("$BIN/python" - "$OUT/tiny-host.parquet" <<'PY'
import sys
from lutnas.predictors.lut import LutPredictor
from lutnas.space import SearchSpace
space = SearchSpace.load("tiny")
fast, slow = LutPredictor.load(sys.argv[1], space).predict([space.smallest(), space.largest()])
print(f"{fast + 0.6 * (slow - fast):.4f} {0.15 * (slow - fast):.4f}")
PY
)
"$BIN/lutnas" search --space tiny --table "$OUT/tiny-host.parquet" --target-ms "$TARGET" \
  --window-ms "$WINDOW" --supernet "$OUT/supernet" --data builtin:digits \
  --population 64 --generations 10 --parents 32 --mutations 16 --crossovers 16 --seed 0 \
  --out "$OUT/search" --verify-on local

step "done: $OUT/search/best.json, best.tflite, best.onnx, pareto.png; $OUT/evaluate.png"
