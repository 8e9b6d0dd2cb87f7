"""Summary statistics that artifacts record: Monte Carlo mean and spread, paired differences."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std, exact (``statistics``): identical values give exactly that value and 0."""
    values = [float(v) for v in values]
    return float(statistics.mean(values)), float(statistics.pstdev(values))


@dataclass(frozen=True)
class Difference:
    """``a − b`` in accuracy points, paired over the same images and chips, with its standard error."""

    mean: float
    se: float


def paired_difference(a, b) -> Difference:
    """Mean accuracy difference a − b (points) and its standard error over images and chips, of two
    scores with ``accuracies`` (per chip) and ``hits`` (per image: chips right; ``cimtool.nn.snn_chip``).

    The images are the sampling unit of the val split: per image the difference of the fractions
    of chips right, d_i, gives SE_img² = var(d_i)/N (the paired t statistic's denominator; Student
    1908). The chips are a second, independent sample: per chip the difference of accuracies, e_k,
    gives SE_chip² = var(e_k)/K (0 with one chip). SE = sqrt(SE_img² + SE_chip²): conservative, as
    d_i already carries part of the chip spread (docs/physics.md#energy-model)."""
    ka, kb = len(a.accuracies), len(b.accuracies)
    d = np.asarray(a.hits, dtype=np.float64) / ka - np.asarray(b.hits, dtype=np.float64) / kb
    n = len(d)
    se_img2 = float(d.var(ddof=1)) / n if n > 1 else 0.0
    se_chip2 = 0.0
    if ka == kb and ka > 1:
        e = np.asarray(a.accuracies) - np.asarray(b.accuracies)
        se_chip2 = float(e.var(ddof=1)) / ka
    return Difference(100 * float(d.mean()), 100 * math.sqrt(se_img2 + se_chip2))
