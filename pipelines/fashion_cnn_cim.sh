#!/usr/bin/env bash
# A CNN on full-size Fashion-MNIST (60,000 train / 10,000 test) through every stage:
#   train-ann (mnist_cnn) → qat (noise-aware, 4-bit RRAM) → map-weights --evaluate (Monte Carlo
#   chips with every non-ideality) → calibrate-threshold (ST-BIF) → sweep → neurosim-trace →
#   run-neurosim (on the cmap's arrays) → report
# Produces, under $OUT (default artifacts/pipelines/fashion_cnn_cim): one artifact per stage and
# report/report.html + report.md. Rerunning skips every stage whose artifact exists and verifies;
# delete one to redo it and the stages after it. Stops at the first failing stage. Progress goes
# to stderr (plain lines every 10 s when it is a log file).
#   usage: [QUICK=1] [OUT=dir] [DATA_DIR=folder] [DEVICE=rram_seed003] [TORCH_DEVICE=auto]
#          pipelines/fashion_cnn_cim.sh
#   DATA_DIR: the four Fashion-MNIST IDX files (default: where `apt-get install
#   dataset-fashion-mnist` puts them). QUICK=1: one epoch and a tiny sweep (a smoke test).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT=${OUT:-artifacts/pipelines/fashion_cnn_cim}
DEVICE=${DEVICE:-rram_seed003}
DATA=(--dataset fashion-mnist)
[[ -n ${DATA_DIR:-} ]] && DATA+=(--data-dir "$DATA_DIR")
ON=(--torch-device "${TORCH_DEVICE:-auto}")
# One chip for accuracy and NeuroSim: 16×16 arrays (16 rows × 16 physical columns) everywhere.
# NeuroSim's floorplan takes mnist_cnn at 4-bit weights on the card's 4-bit cells (one cell per
# weight) on 16×16 or 8×8 subarrays only (its widest novel-mapped layer, the 32-output 3×3 conv,
# must span two subarrays; 32×32 would need 8-bit weights); run-neurosim --cmap takes the cmap's
# geometry and refuses one NeuroSim cannot take.
GEOMETRY=(--array-rows 16 --array-cols 16)
if [[ ${QUICK:-0} == 1 ]]; then
  TRAIN=(--epochs 1)
  QAT=(--epochs 1 --trials 2)
  EVAL=(--trials 2)
  SWEEP=(--scheme B --weight-bits 4 --adc-bits 6 --timesteps 4 --trials 1)
  SNN=(--percentiles 99.9 --ratios 1)
else
  TRAIN=(--epochs 5)
  QAT=(--epochs 2 --trials 5)
  EVAL=(--trials 10)
  # scheme A/B × 4/6-bit ADC at T = 4 on the 4-bit card: 4 configurations, 2 chips each, on the
  # 6,000 val images (each a spiking pass with every non-ideality at every step: ~30 s on 2 cores)
  SWEEP=(--scheme A,B --weight-bits 4 --adc-bits 4,6 --timesteps 4 --trials 2)
  # 2 × 4 threshold candidates (each a spiking pass over the 6,000 val images) around P99.9
  SNN=(--percentiles 99.9,99.99 --ratios 0.8,0.9,1,1.1)
fi

stage train-ann "$OUT/model" train-ann "${DATA[@]}" --model mnist_cnn "${ON[@]}" "${TRAIN[@]}"
stage qat "$OUT/qmodel" qat --model "$OUT/model" --mode noise --weight-bits 4 --device "$DEVICE" \
  "${GEOMETRY[@]}" "${ON[@]}" "${QAT[@]}"
stage map-weights "$OUT/cmap" map-weights --model "$OUT/qmodel" --device "$DEVICE" --weight-bits 4 \
  "${GEOMETRY[@]}" --evaluate "${ON[@]}" "${EVAL[@]}"
stage calibrate-threshold "$OUT/snn" calibrate-threshold --model "$OUT/qmodel" --timesteps 16 "${ON[@]}" \
  "${SNN[@]}"
stage sweep "$OUT/sweep" sweep --model "$OUT/snn" --device "$DEVICE" "${GEOMETRY[@]}" "${ON[@]}" \
  "${SWEEP[@]}"
# NeuroSim's WBITS = the mapped weights' 4 bits
stage neurosim-trace "$OUT/trace" neurosim-trace --model "$OUT/qmodel" --weight-bits 4
stage run-neurosim "$OUT/neurosim" run-neurosim --trace "$OUT/trace" --device "$DEVICE" --cmap "$OUT/cmap"
stage report "$OUT/report" report "$OUT/model" "$OUT/qmodel" "$OUT/cmap" "$OUT/snn" "$OUT/sweep" \
  "$OUT/trace" "$OUT/neurosim" --title "mnist_cnn on Fashion-MNIST, on CIM ($DEVICE)"
echo "report: $OUT/report/report.html"
