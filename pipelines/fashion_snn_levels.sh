#!/usr/bin/env bash
# Spiking mnist_cnn on full Fashion-MNIST at L = 4, 8, 16 levels: train-ann (float) → per L,
# calibrate-threshold converted only and with the quantized-ANN twin trained → report (accuracy vs
# levels: float, converted only, trained twin).
# Produces, under $OUT (default artifacts/pipelines/fashion_snn_levels): model, snn-L<L>,
# snn-L<L>-trained, report/report.html. Rerunning skips stages whose artifacts exist and verify.
#   usage: [DATA_DIR=/usr/share/datasets/fashion-mnist] [EPOCHS=15] [TWIN_EPOCHS=5] [QUICK=1]
#          pipelines/fashion_snn_levels.sh
#   QUICK=1: one epoch each (a smoke test of the flow, not the figures).
# About 15 minutes on 2 cores (the L = 4 twin reaches 0.9144 with TWIN_EPOCHS=15, 0.9099 with 5).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT=${OUT:-artifacts/pipelines/fashion_snn_levels}
EPOCHS=${EPOCHS:-15}
TWIN_EPOCHS=${TWIN_EPOCHS:-5}
[[ ${QUICK:-0} == 1 ]] && EPOCHS=1 && TWIN_EPOCHS=1
DATA=(--dataset fashion-mnist)
[[ -n ${DATA_DIR:-} ]] && DATA+=(--data-dir "$DATA_DIR")
GRID=(--percentiles 99.9,99.99 --ratios 0.8,1.0,1.25)

stage train-ann "$OUT/model" train-ann "${DATA[@]}" --model mnist_cnn --epochs "$EPOCHS" --quiet
snns=()
for L in 4 8 16; do
  stage calibrate-threshold "$OUT/snn-L$L" calibrate-threshold --model "$OUT/model" --levels "$L" "${GRID[@]}" \
    --quiet
  stage calibrate-threshold "$OUT/snn-L$L-trained" calibrate-threshold --model "$OUT/model" --levels "$L" \
    "${GRID[@]}" --train-epochs "$TWIN_EPOCHS" --quiet
  snns+=("$OUT/snn-L$L" "$OUT/snn-L$L-trained")
done
stage report "$OUT/report" report "$OUT/model" "${snns[@]}" \
  --title "Spiking mnist_cnn on Fashion-MNIST: accuracy vs levels" --quiet
echo "report: $OUT/report/report.html"
