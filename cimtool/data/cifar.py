"""CIFAR-10 from a user's --data-dir: the binary version, or the python (pickle) version on opt-in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cimtool.errors import CimtoolError

RECORD = 1 + 3 * 32 * 32  # label byte + 3072 pixel bytes (CIFAR-10 binary format)
TRAIN_BIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_BIN = "test_batch.bin"


def _folder(data_dir: Path, marker: str) -> Path | None:
    for folder in (data_dir, data_dir / "cifar-10-batches-bin", data_dir / "cifar-10-batches-py"):
        if (folder / marker).is_file():
            return folder
    return None


def _read_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise CimtoolError(f"{path}: {raw.size} bytes is not a whole number of "
                           f"{RECORD}-byte CIFAR-10 records (truncated or foreign file)")
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise CimtoolError(f"{path}: label {labels.max()} out of range 0..9 (not CIFAR-10 binary)")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def _read_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pickle  # only on the user's explicit --allow-pickle

    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign file is a user error
        raise CimtoolError(f"{path}: not a CIFAR-10 python batch ({exc})") from None
    return data, labels


def _data_dir_option(folder: Path) -> str:
    return f"--data-dir {folder}"


def load_cifar10(data_dir: Path, allow_pickle: bool = False,
                 where: Callable[[Path], str] = _data_dir_option, **_: object):
    """expected the CIFAR-10 binary version: data_batch_1.bin .. data_batch_5.bin and
    test_batch.bin (in the directory or its cifar-10-batches-bin/)"""
    folder = _folder(data_dir, TRAIN_BIN[0])
    if folder is not None:
        missing = [n for n in [*TRAIN_BIN, TEST_BIN] if not (folder / n).is_file()]
        if missing:
            raise CimtoolError(f"{where(folder)}: missing CIFAR-10 files {', '.join(missing)}")
        parts = [_read_bin(folder / n) for n in TRAIN_BIN]
        test = _read_bin(folder / TEST_BIN)
        source = f"CIFAR-10 binary files in {folder}"
    else:
        folder = _folder(data_dir, "data_batch_1")
        if folder is None:
            expected = " ".join(load_cifar10.__doc__.split())
            raise CimtoolError(f"{where(data_dir)}: no CIFAR-10 found; {expected}")
        if not allow_pickle:
            raise CimtoolError(
                f"{where(folder)}: only the python (pickle) version of CIFAR-10 is there; "
                "unpickling can run code, so pass --allow-pickle if you trust it, or use the binary version"
            )
        parts = [_read_pickle(folder / f"data_batch_{i}") for i in range(1, 6)]
        test = _read_pickle(folder / "test_batch")
        source = f"CIFAR-10 python batches in {folder} (--allow-pickle)"
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y, test, source
