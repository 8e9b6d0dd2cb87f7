"""Data sets in MNIST's IDX layout (MNIST, Fashion-MNIST): the four official files in a folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cimtool.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from cimtool.errors import CimtoolError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Where Debian's dataset-fashion-mnist package installs the four gzipped files (its file list).
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"


@dataclass(frozen=True)
class IdxSet:
    """One data set in the IDX layout: its name in messages and the manifest, and the folder
    torchvision downloads it into (``<data_dir>/<raw_dir>/raw``), also searched."""

    title: str
    raw_dir: str


MNIST = IdxSet("MNIST", "MNIST")
FASHION_MNIST = IdxSet("Fashion-MNIST", "FashionMNIST")


def _data_dir_option(folder: Path) -> str:
    return f"--data-dir {folder}"


def _find(data_dir: Path, stem: str, dataset: IdxSet,
          where: Callable[[Path], str] = _data_dir_option) -> Path:
    # accept the official names, gzipped or not, and the common 'idx3.ubyte' variant
    alt = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        for folder in (data_dir, data_dir / dataset.raw_dir / "raw"):
            if (folder / name).is_file():
                return folder / name
    raise CimtoolError(
        f"{where(data_dir)}: missing {stem}[.gz]; expected the four {dataset.title} IDX files "
        f"{', '.join(FILES.values())} (gzipped or not)"
    )


def _pair(data_dir: Path, images_key: str, labels_key: str, dataset: IdxSet,
          where: Callable[[Path], str] = _data_dir_option) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find(data_dir, FILES[images_key], dataset, where)
    labels_path = _find(data_dir, FILES[labels_key], dataset, where)
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.ndim != 3 or labels.ndim != 1:
        raise CimtoolError(f"{images_path}: expected [N, H, W] images and [N] labels")
    if len(images) != len(labels):
        raise CimtoolError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}"
        )
    if labels.max(initial=0) > 9:
        raise CimtoolError(f"{labels_path}: label {labels.max()} out of range 0..9")
    return images[:, None].copy(), labels.astype(np.int64)


def load_idx_set(dataset: IdxSet, data_dir: Path, where: Callable[[Path], str] = _data_dir_option
                 ) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    """Train images/labels, the official test pair, and where they came from (for the manifest).
    ``where`` names the folder in messages (how the user gave it)."""
    x, y = _pair(data_dir, "train_images", "train_labels", dataset, where)
    test = _pair(data_dir, "test_images", "test_labels", dataset, where)
    return x, y, test, f"{dataset.title} IDX files in {data_dir}"


def load_mnist(data_dir: Path, where: Callable[[Path], str] = _data_dir_option,
               **_: object) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    """expected the MNIST IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (gzipped or not)"""
    return load_idx_set(MNIST, data_dir, where)


def load_fashion_mnist(data_dir: Path, where: Callable[[Path], str] = _data_dir_option,
                       **_: object) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    """expected the Fashion-MNIST IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (gzipped or not)"""
    return load_idx_set(FASHION_MNIST, data_dir, where)


def fashion_mnist_default_dir() -> Path:
    """The folder read when --data-dir is not given (looked up at call time: tests move it)."""
    return FASHION_MNIST_DIR
