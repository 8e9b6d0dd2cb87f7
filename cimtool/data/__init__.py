"""Datasets: a registry of loaders (embedded and --data-dir) and the seeded stratified split."""

from cimtool.data.registry import DATASETS, RawDataset, load_dataset
from cimtool.data.split import Split, Splits, make_splits

__all__ = ["DATASETS", "RawDataset", "Split", "Splits", "load_dataset", "make_splits"]
