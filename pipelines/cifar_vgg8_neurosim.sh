#!/usr/bin/env bash
# DNN+NeuroSim's VGG8 on CIFAR-10: train-ann (vgg8, binary CIFAR-10 from DATA_DIR) → neurosim-trace
# (8/8 bits) → run-neurosim (128×128 subarrays, the card's cells and ADC) → report.
# Produces, under $OUT (default artifacts/pipelines/cifar_vgg8_neurosim): model, trace, neurosim,
# report/report.html. Rerunning skips stages whose artifacts exist and verify.
#   usage: DATA_DIR=~/data/cifar-10-batches-bin [EPOCHS=30] [DEVICE=rram_seed003] [QUICK=1]
#          pipelines/cifar_vgg8_neurosim.sh
#   QUICK=1: one epoch (a smoke test of the flow, not a trained network).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -z ${DATA_DIR:-} ]]; then
  echo "cifar_vgg8_neurosim.sh: set DATA_DIR to the folder with CIFAR-10's data_batch_*.bin files" >&2
  exit 2
fi
OUT=${OUT:-artifacts/pipelines/cifar_vgg8_neurosim}
DEVICE=${DEVICE:-rram_seed003}
EPOCHS=${EPOCHS:-30}
[[ ${QUICK:-0} == 1 ]] && EPOCHS=1

stage train-ann "$OUT/model" train-ann --dataset cifar10 --data-dir "$DATA_DIR" --model vgg8 \
  --epochs "$EPOCHS" --quiet
stage neurosim-trace "$OUT/trace" neurosim-trace --model "$OUT/model" --weight-bits 8 --input-bits 8 --quiet
stage run-neurosim "$OUT/neurosim" run-neurosim --trace "$OUT/trace" --device "$DEVICE" --quiet
stage report "$OUT/report" report "$OUT/model" "$OUT/trace" "$OUT/neurosim" \
  --title "VGG8 on CIFAR-10 with NeuroSim ($DEVICE)" --quiet
echo "report: $OUT/report/report.html"
