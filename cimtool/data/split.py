"""Seeded, stratified train/val/test split (val is for choosing, test is touched once)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # uint8 [N, C, H, W]
    y: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    indices_sha256: str  # hash of the index lists, recorded in the manifest


def stratified_indices(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Split indices into parts with the given fractions, class by class (the rest is the last)."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        bounds = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        for k, chunk in enumerate(np.split(idx, bounds)):
            parts[k].append(chunk)
    # sort each part, then shuffle it once so it is not ordered by label
    return [rng.permutation(np.sort(np.concatenate(p))) for p in parts]


def make_splits(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    val_frac: float,
    test_frac: float,
    official_test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Splits:
    """Carve val (and test, unless the data set has an official test set) out of the data."""
    if official_test is None:
        test_idx, val_idx, train_idx = stratified_indices(y, [test_frac, val_frac], seed)
        test = Split(x[test_idx], y[test_idx])
        index_lists = [train_idx, val_idx, test_idx]
    else:
        val_idx, train_idx = stratified_indices(y, [val_frac], seed)
        test = Split(*official_test)
        index_lists = [train_idx, val_idx, np.arange(len(official_test[1]))]
    digest = hashlib.sha256()
    for idx in index_lists:
        digest.update(np.asarray(idx, dtype=np.int64).tobytes())
        digest.update(b"|")
    return Splits(
        train=Split(x[train_idx], y[train_idx]),
        val=Split(x[val_idx], y[val_idx]),
        test=test,
        indices_sha256=digest.hexdigest(),
    )
