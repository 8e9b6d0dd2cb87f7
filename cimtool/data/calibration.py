"""The calibration sample: the train items that set converter ranges and spiking thresholds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cimtool.checks import check_range

if TYPE_CHECKING:
    from cimtool.data.tensors import TensorData

# train samples that set converter ranges and thresholds: enough for the 99.9th percentile of
# millions of activations; calibrating on the whole split moves accuracy by less than the Monte
# Carlo error (docs/scale.md)
CALIBRATION_SAMPLES = 2048


def check_calibration_samples(n: int) -> None:
    check_range("--calibration-samples", n, 1)


def calibration_sample(train: TensorData, n: int, seed: int) -> tuple[TensorData, dict[str, Any]]:
    """(sample, record): a stratified, seeded sample of ``n`` train items (the whole split when ``n``
    is at least its size) and what the manifest records of it (size and index hash)."""
    import hashlib

    import numpy as np

    from cimtool.data.split import stratified_indices
    from cimtool.data.tensors import TensorData

    check_calibration_samples(n)
    if n >= len(train):
        idx = np.arange(len(train))
    else:
        # per-class rounding can give a few more than n: the part comes shuffled, so keep its first n
        idx = np.sort(stratified_indices(train.y.numpy(), [n / len(train)], seed)[0][:n])
    record = {"calibration_samples": int(len(idx)),
              "calibration_indices_sha256": hashlib.sha256(idx.astype(np.int64).tobytes()).hexdigest()}
    return TensorData(train.x[idx], train.y[idx]), record
