#!/usr/bin/env bash
# Trains the crossbar model with each off-array front-end (docs/physics.md#front-ends) on one
# data set and prints the test accuracy of each. Produces one model artifact per front-end under
# $ROOT/models/.
#   usage: pipelines/compare_frontends.sh [DATASET] [extra train-ann options...]
set -euo pipefail
DATASET=${1:-mnist5k}
shift || true
ROOT=${CIMTOOL_ARTIFACTS:-artifacts}
for method in proj_sup_64 proj_pca_64 avgpool_8x8 bilinear_8x8; do
  out="$ROOT/models/compare-$DATASET-$method"
  if cimtool inspect "$out" --json >/dev/null 2>&1; then
    echo "skip $method: $out exists and verifies" >&2
  else
    cimtool train-ann --dataset "$DATASET" --method "$method" --out "$out" --force --quiet "$@"
  fi
  cimtool inspect "$out" --json | python3 -c \
    "import json,sys; s=json.load(sys.stdin)['summary']; print(f\"$method\ttest {s['test_accuracy']:.4f}\tval {s['val_accuracy']:.4f}\")"
done
