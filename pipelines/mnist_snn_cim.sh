#!/usr/bin/env bash
# The SNN-on-CIM flow (the team's SNN SoC) on the embedded mnist5k data (or DATASET), end to end:
#   train-ann → qat (noise-aware, 4-bit RRAM) → calibrate-threshold (ST-BIF) → sweep (ranked by
#   NeuroSim energy) → map-weights
#   → export-weightmap → neurosim-trace → run-neurosim → report
# Produces, under $OUT (default artifacts/pipelines/mnist_snn_cim): one artifact per stage
# (model, qmodel, snn, sweep, cmap, weightmap, trace, neurosim) and report/report.html + report.md.
# Rerunning skips every stage whose artifact exists and verifies; delete one to redo it and the
# stages after it (they notice their input changed). Stops at the first failing stage.
#   usage: [QUICK=1] [OUT=dir] [DATASET=mnist5k] [DEVICE=rram_seed003] pipelines/mnist_snn_cim.sh
#   QUICK=1: few epochs and a small sweep (a smoke test).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT=${OUT:-artifacts/pipelines/mnist_snn_cim}
DATASET=${DATASET:-mnist5k}
DEVICE=${DEVICE:-rram_seed003}
if [[ ${QUICK:-0} == 1 ]]; then
  TRAIN=(--epochs 30 --frontend-epochs 5)
  QAT=(--epochs 3 --trials 3)
  SWEEP=(--weight-bits 3,4,8 --adc-bits 4,8 --timesteps 1,8 --trials 1)
  EVAL=(--trials 3)
else
  TRAIN=()
  QAT=()
  SWEEP=()
  EVAL=()
fi

stage train-ann "$OUT/model" train-ann --dataset "$DATASET" --quiet "${TRAIN[@]}"
stage qat "$OUT/qmodel" qat --model "$OUT/model" --mode noise --weight-bits 4 --device "$DEVICE" --quiet \
  "${QAT[@]}"
stage calibrate-threshold "$OUT/snn" calibrate-threshold --model "$OUT/qmodel" --quiet
# ranked by NeuroSim's chip energy (one V1.3 run per weight bits × ADC bits, cached)
stage sweep "$OUT/sweep" sweep --model "$OUT/snn" --device "$DEVICE" --cost neurosim --quiet "${SWEEP[@]}"
stage map-weights "$OUT/cmap" map-weights --model "$OUT/qmodel" --device "$DEVICE" --weight-bits 4 \
  --evaluate --quiet "${EVAL[@]}"
stage export-weightmap "$OUT/weightmap" export-weightmap --cmap "$OUT/cmap" --quiet
stage neurosim-trace "$OUT/trace" neurosim-trace --model "$OUT/qmodel" --quiet
stage run-neurosim "$OUT/neurosim" run-neurosim --trace "$OUT/trace" --device "$DEVICE" --quiet
stage report "$OUT/report" report "$OUT/model" "$OUT/qmodel" "$OUT/snn" "$OUT/sweep" "$OUT/cmap" \
  "$OUT/trace" "$OUT/neurosim" --title "mnist SNN on CIM ($DATASET, $DEVICE)" --quiet
echo "report: $OUT/report/report.html"
