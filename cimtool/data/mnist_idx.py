"""The official MNIST IDX files from a user's --data-dir."""

from __future__ import annotations

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


def _find(data_dir: Path, stem: str) -> Path:
    # accept the official names, gzipped or not, and the common 'idx3.ubyte' variant
    alt = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        for folder in (data_dir, data_dir / "MNIST" / "raw"):
            if (folder / name).is_file():
                return folder / name
    raise CimtoolError(
        f"--data-dir {data_dir}: missing {stem}[.gz]; expected the four MNIST IDX files "
        f"{', '.join(FILES.values())} (gzipped or not)"
    )


def _pair(data_dir: Path, images_key: str, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find(data_dir, FILES[images_key])
    labels_path = _find(data_dir, FILES[labels_key])
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


def load_mnist(data_dir: Path, **_: object) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    """expected the MNIST IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (gzipped or not)"""
    x, y = _pair(data_dir, "train_images", "train_labels")
    test = _pair(data_dir, "test_images", "test_labels")
    return x, y, test, f"MNIST IDX files in {data_dir}"
