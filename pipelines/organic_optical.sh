#!/usr/bin/env bash
# The organic optoelectronic synapse flow: an optical sensor front-end (inverse sRGB gamma,
# Poisson shot noise, R/G/B responsivity of the organic_ofet card) in front of organic synapse
# layers (nA read-out, C2C noise, renormalised read-out, hard clamp), trained at two light levels;
# then the trained weights mapped onto the organic card's conductance levels and simulated with
# its non-idealities; then a report. Formulas: docs/physics.md#optical-front-end and
# docs/physics.md#organic-synapse-layers.
# Produces, under $OUT (default artifacts/pipelines/organic_optical): model-bright, model-dim,
# cmap, report/report.html. Rerunning skips stages whose artifacts exist and verify.
#   usage: [QUICK=1] [OUT=dir] [DATASET=mnist5k] pipelines/organic_optical.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT=${OUT:-artifacts/pipelines/organic_optical}
DATASET=${DATASET:-mnist5k}
EPOCHS=(--epochs 40)
EVAL=()
if [[ ${QUICK:-0} == 1 ]]; then
  EPOCHS=(--epochs 2)
  EVAL=(--trials 2)
fi

for light in bright:10000 dim:1; do
  name=${light%%:*}
  photons=${light##*:}
  stage "train-ann ($name, $photons photons/pixel)" "$OUT/model-$name" train-ann --dataset "$DATASET" \
    --model organic_cnn --front-end optical --max-photons "$photons" --device organic_ofet --quiet \
    "${EPOCHS[@]}"
done
stage map-weights "$OUT/cmap" map-weights --model "$OUT/model-bright" --device organic_ofet --evaluate \
  --quiet "${EVAL[@]}"
stage report "$OUT/report" report "$OUT/model-bright" "$OUT/model-dim" "$OUT/cmap" \
  --title "Organic optoelectronic synapses ($DATASET)" --quiet
echo "report: $OUT/report/report.html"
