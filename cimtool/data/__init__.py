"""Datasets: a registry of loaders (embedded, --data-dir, the user's own folder: or npz: files) and
the seeded stratified split.

The names below load on first use (PEP 562), so that light modules of this package (e.g.
``cimtool.data.calibration``'s constants) import without numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"DATASETS": "registry", "RawDataset": "registry", "load_dataset": "registry",
            "Split": "split", "Splits": "split", "make_splits": "split"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cimtool.data' has no attribute '{name}'")
    return getattr(importlib.import_module(f"cimtool.data.{_EXPORTS[name]}"), name)
