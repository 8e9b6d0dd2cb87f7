"""Data sets of the user's own files: ``--dataset folder:PATH`` (an image tree) and ``npz:PATH``.

Both give what every loader gives (uint8 images [N, C, H, W], int64 labels 0..K-1, an official
test set where the files have one), so the split and every later stage treat them like the
built-in data sets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cimtool.errors import CimtoolError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# --image-size resamples with one fixed filter, so the same tree always gives the same bytes;
# bilinear (area-aware when shrinking) is what torchvision's Resize uses
RESAMPLE = "BILINEAR"
NPZ_ARRAYS = ("x", "y", "x_test", "y_test")


def _dataset_option(name: str) -> Callable[[Path], str]:
    return lambda path: f"--dataset {name}:{path}"


# --- folder:PATH -------------------------------------------------------------------------------------

def load_folder(path: Path, image_size: int | None = None,
                where: Callable[[Path], str] = _dataset_option("folder"), **_: object):
    """expected a folder with one subfolder of PNG or JPEG images per class (or train/ and test/
    folders, each with the class subfolders)"""
    if not path.is_dir():
        raise CimtoolError(f"{where(path)}: {'not a directory' if path.exists() else 'no such directory'}; "
                           f"{' '.join(load_folder.__doc__.split())}")
    train, test = path / "train", path / "test"
    official = train.is_dir() and test.is_dir()  # the tree's own test split, kept apart like IDX's t10k
    classes = _classes(train if official else path, where)
    files = _files(train if official else path, classes, where)
    test_files = _files(test, classes, where) if official else []
    x, y = _read_images([f for f, _ in files + test_files], [c for _, c in files + test_files], image_size)
    n = len(files)
    listed = ", ".join(classes)
    source = f"image folder {path}, classes (sorted subfolder names) {listed}"
    if image_size is not None:
        source += f", resized to {image_size}x{image_size} ({RESAMPLE.lower()})"
    return x[:n], y[:n], (x[n:], y[n:]) if official else None, source


def _classes(folder: Path, where: Callable[[Path], str]) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise CimtoolError(f"{where(folder)}: no class subfolders; {' '.join(load_folder.__doc__.split())}")
    return classes


def _files(folder: Path, classes: list[str], where: Callable[[Path], str]) -> list[tuple[Path, int]]:
    """(image, class index) in file-name order across the class folders (ties: by class), so
    that a tree of numbered files keeps its numbering: the order fixes the split."""
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    extra = sorted(set(found) - set(classes))
    if extra:
        raise CimtoolError(f"{where(folder)}: class folder {extra[0]} is not among the train classes "
                           f"({', '.join(classes)})")
    files = []
    for index, name in enumerate(classes):
        if name not in found:
            continue  # a test split may lack a class (a train split lists them all)
        images = [p for p in (folder / name).iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
        if not images:
            raise CimtoolError(f"{folder / name}: no PNG or JPEG images (class {index})")
        files += [(p, index) for p in images]
    if not files:
        raise CimtoolError(f"{where(folder)}: no PNG or JPEG images")
    return sorted(files, key=lambda item: (item[0].name, item[1]))


def _read_images(paths: list[Path], labels: list[int], image_size: int | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The images as uint8 [N, C, H, W]: grayscale (L, 1, LA) stays one channel, any other mode
    becomes RGB (alpha dropped); a tree mixing both is read as colour (grey as R = G = B)."""
    # one after another: for small images a thread pool is slower (measured 3.2 s sequentially,
    # 8.5 s on 2 threads for Fashion-MNIST's 60,000 28x28 PNGs: decoding them is mostly Python)
    arrays = [_read_image(p, image_size) for p in paths]
    first = arrays[0].shape[:2]
    for path, arr in zip(paths, arrays, strict=True):
        if arr.shape[:2] != first:
            h, w = arr.shape[:2]
            raise CimtoolError(f"{path}: {w}x{h} pixels, the first image ({paths[0]}) {first[1]}x{first[0]}; "
                               "pass --image-size N to resize all to NxN")
    channels = max(arr.shape[2] for arr in arrays)
    x = np.stack([np.broadcast_to(arr, (*first, channels)) for arr in arrays]).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), np.asarray(labels, dtype=np.int64)


def _read_image(path: Path, image_size: int | None) -> np.ndarray:
    """One image as uint8 [H, W, C]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format not in ("PNG", "JPEG"):
                raise CimtoolError(f"{path}: a {im.format} image; cimtool reads PNG and JPEG")
            if im.mode in ("I", "I;16", "I;16B", "F"):  # converting would clip, not scale
                raise CimtoolError(f"{path}: a {im.mode} (16-bit or float) image; save it as 8-bit")
            im = im.convert("L" if im.mode in ("L", "1", "LA") else "RGB")
            if image_size is not None:
                im = im.resize((image_size, image_size), getattr(Image.Resampling, RESAMPLE))
            arr = np.asarray(im)
    except CimtoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a broken file
        raise CimtoolError(f"{path}: not a readable PNG or JPEG image ({exc})") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


# --- npz:PATH ------------------------------------------------------------------------------------------

def load_npz(path: Path, where: Callable[[Path], str] = _dataset_option("npz"), **_: object):
    """expected an .npz file (numpy.savez) with arrays x (uint8 images [N, C, H, W] or [N, H, W])
    and y (integer labels 0..K-1), optionally x_test and y_test (the official test set)"""
    expected = " ".join(load_npz.__doc__.split())
    if not path.is_file():
        raise CimtoolError(f"{where(path)}: {'not a file' if path.exists() else 'no such file'}; {expected}")
    try:
        archive = np.load(path, allow_pickle=False)  # never unpickle a user's file
    except Exception as exc:  # noqa: BLE001 - numpy raises many types for a foreign file
        raise CimtoolError(f"{path}: not a readable .npz file ({exc}); {expected}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CimtoolError(f"{path}: a single .npy array, not an .npz archive; {expected}")
    with archive:
        names = sorted(archive.files)
        unknown = [n for n in names if n not in NPZ_ARRAYS]
        if unknown:
            raise CimtoolError(f"{path}: unexpected array '{unknown[0]}'; {expected}")
        required = ["x", "y"] + (["x_test", "y_test"] if {"x_test", "y_test"} & set(names) else [])
        missing = [n for n in required if n not in names]
        if missing:
            raise CimtoolError(f"{path}: no array '{missing[0]}'; {expected}")
        arrays = {name: _npz_array(archive, path, name) for name in names}
    x, y = _npz_pair(path, arrays, "x", "y")
    test = _npz_pair(path, arrays, "x_test", "y_test") if "x_test" in arrays else None
    if test is not None and test[0].shape[1:] != x.shape[1:]:
        raise CimtoolError(f"{path}: array 'x_test' holds images {list(test[0].shape[1:])}, "
                           f"'x' holds {list(x.shape[1:])}")
    labels = np.concatenate([y, test[1]]) if test is not None else y
    missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.tolist()))
    if missing:
        raise CimtoolError(f"{path}: labels must be 0..K-1, but class {missing[0]} of 0..{labels.max()} "
                           "never occurs in 'y'" + (" or 'y_test'" if test is not None else ""))
    return x, y, test, f"npz file {path}"


def _npz_array(archive, path: Path, name: str) -> np.ndarray:
    try:
        return archive[name]
    except ValueError:  # numpy refuses object arrays without allow_pickle
        raise CimtoolError(f"{path}: array '{name}' holds Python objects (pickled); cimtool reads only "
                           "numeric arrays, never unpickles") from None
    except Exception as exc:  # noqa: BLE001 - a damaged member
        raise CimtoolError(f"{path}: array '{name}' is not readable ({exc})") from None


def _npz_pair(path: Path, arrays: dict[str, np.ndarray], xn: str, yn: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = arrays[xn], arrays[yn]
    if x.dtype != np.uint8:
        raise CimtoolError(f"{path}: array '{xn}' is {x.dtype}; cimtool reads uint8 images 0..255 "
                           "(scale floats in [0, 1] with np.round(x * 255).astype(np.uint8))")
    if x.ndim == 3:  # [N, H, W]: grayscale
        x = x[:, None]
    if x.ndim != 4 or 0 in x.shape:
        raise CimtoolError(f"{path}: array '{xn}' has shape {list(x.shape)}; expected images [N, C, H, W] "
                           "or [N, H, W]")
    if x.shape[1] not in (1, 3):
        hint = f" (channels last? use {xn}.transpose(0, 3, 1, 2))" if x.shape[3] in (1, 3) else ""
        raise CimtoolError(f"{path}: array '{xn}' has shape {list(x.shape)}: {x.shape[1]} channels, "
                           f"expected 1 (grayscale) or 3 (RGB) in [N, C, H, W]{hint}")
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise CimtoolError(f"{path}: array '{yn}' is {y.dtype} of shape {list(y.shape)}; expected "
                           "integer labels [N]")
    if len(y) != len(x):
        raise CimtoolError(f"{path}: array '{yn}' has {len(y)} labels for the {len(x)} images of '{xn}'")
    if y.min() < 0:
        raise CimtoolError(f"{path}: array '{yn}' holds label {y.min()}; labels are 0..K-1")
    return np.ascontiguousarray(x), y.astype(np.int64)
