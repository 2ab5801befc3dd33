#!/usr/bin/env bash
# The main job end to end on the embedded default, the host CPU, on `evmini` (a real-scale slice of
# ElasticViT: its structure at 64 px, narrow widths, 10 classes; lutnas/space/builtin/evmini.yaml):
# profile every block -> build the latency table (with a whole-model correction) -> prove it
# against held-out whole subnets measured end to end -> train the supernet of the same space ->
# search under a millisecond target -> export the winner and measure it on the host.
# Everything lands in $DEMO_OUT (default out/demo); a rerun reuses what is already measured/trained.
# Exported models go to $LUTNAS_CACHE (default ~/.cache/lutnas/models) and are reused across runs.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${DEMO_OUT:-out/demo}
SPACE=evmini
TABLE="$OUT/$SPACE-host.parquet"
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# bold step titles on a terminal only: a log file gets plain text
if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
step() { printf '\n%s== %s  (%s)%s\n' "$BOLD" "$*" "$(date +%T)" "$PLAIN"; }
START=$SECONDS

step "1/7 the search space"
"$BIN/lutnas" space show "$SPACE"

step "2/7 profile every block of $SPACE on this CPU (LiteRT, 1 thread, fresh process per trial, paced)"
# --pace: every timed invoke runs next to one of a fixed pace model and is normalised by it, so the
# host's changes of speed (up to 2x within seconds on a virtual host) cancel; calibration,
# evaluation and verification follow the store's setting.
"$BIN/profile-device" --device local --space "$SPACE" --runtime tflite --threads 1 \
  --trials 5 --warmup 20 --runs 100 --pace --store "$OUT/host.sqlite"

step "3/7 build the latency table, with a correction fitted on 6 whole subnets"
# A rerun refits on the subnets measured before (the store keeps them): no export, no measuring.
"$BIN/lutnas" build-table --store "$OUT/host.sqlite" --out "$TABLE" --calibrate 6
"$BIN/lutnas" table show "$TABLE"

step "4/7 how good is the table? 16 held-out subnets measured end to end"
"$BIN/lutnas" evaluate --device local --table "$TABLE" --samples 16 \
  --store "$OUT/host.sqlite" --plot "$OUT/evaluate.png"

# Training and the search's accuracy evaluation use both cores: nothing else runs during them.
step "5/7 train the supernet of $SPACE on scikit-learn's digits (upscaled to 64 px)"
if [ -f "$OUT/supernet/checkpoint.json" ]; then
  echo "trained already: $OUT/supernet (delete it to train again)"
else
  "$BIN/lutnas" train-supernet --space "$SPACE" --data builtin:digits --epochs 6 --batch-size 64 \
    --lr 4e-3 --sampler ca+pa --threads 2 --out "$OUT/supernet"
fi

step "6/7 search under a millisecond target, export the winner and measure it here"
# Latency depends on the host: aim at 60% of the way from this table's fastest to slowest subnet,
# priced as search prices them (the LUT with the table's correction).
read -r TARGET WINDOW < <("$BIN/python" - "$TABLE" "$SPACE" <<'PY'
import sys
from lutnas.predictors.lut import LutPredictor
from lutnas.space import SearchSpace
from lutnas.tables.table import LatencyTable
space, table = SearchSpace.load(sys.argv[2]), LatencyTable.load(sys.argv[1])
predictor = LutPredictor(space, corrected=bool(table.correction)).fit(table)
fast, slow = predictor.predict([space.smallest(), space.largest()])
print(f"{fast + 0.6 * (slow - fast):.4f} {0.15 * (slow - fast):.4f}")
PY
)
"$BIN/lutnas" search --space "$SPACE" --table "$TABLE" --target-ms "$TARGET" \
  --window-ms "$WINDOW" --supernet "$OUT/supernet" --data builtin:digits \
  --population 64 --generations 8 --parents 32 --mutations 16 --crossovers 16 --seed 0 --eval-threads 2 \
  --out "$OUT/search" --verify-on local

step "7/7 done in $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s"
echo "$OUT/search/best.json, best.tflite, best.onnx, pareto.png; $OUT/evaluate.png"
