"""Data sets of the user's own files: --dataset folder:PATH (an image tree) and npz:PATH."""

import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from cimtool import artifacts
from cimtool.data import load_dataset, make_splits, mnist_idx
from cimtool.errors import CimtoolError
from cimtool.models.io import model_splits


def write_tree(root, x, y, names=None):
    """Images [N, C, H, W] as PNGs root/<class>/<index>.png (numbered: the loader keeps that order)."""
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / (names[label] if names else str(label))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png", compress_level=1)


def _train(cli, out, *args):
    result = cli("train-ann", "--method", "avgpool_8x8", "--epochs", "1", "--out", out, "--quiet", "--json",
                 *args)
    assert result.code == 0, result.err
    return artifacts.load(json.loads(result.out)["artifact"], "model")


def _one_line_error(result, out, *needles):
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert result.err.startswith("cimtool: error: ") and "Traceback" not in result.err
    for needle in needles:
        assert str(needle) in result.err, (needle, result.err)
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


# --- the floor: Fashion-MNIST as PNGs is Fashion-MNIST ----------------------------------------------

@pytest.fixture(scope="module")
def fashion_png(tmp_path_factory):
    """Fashion-MNIST's 70,000 images as PNGs in train/ and test/ (about 7 s on 2 cores)."""
    if not mnist_idx.FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"{mnist_idx.FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)")
    raw = load_dataset("fashion-mnist")
    root = tmp_path_factory.mktemp("fashion-png")
    start = time.perf_counter()
    write_tree(root / "train", raw.x, raw.y)
    write_tree(root / "test", *raw.test)
    print(f"wrote 70,000 PNGs in {time.perf_counter() - start:.1f} s")
    return raw, root


def test_folder_of_fashion_mnist_pngs_is_the_idx_data_set(fashion_png, cli, tmp_path):
    idx, root = fashion_png
    start = time.perf_counter()
    raw = load_dataset(f"folder:{root}")
    print(f"read 70,000 PNGs in {time.perf_counter() - start:.1f} s")
    np.testing.assert_array_equal(raw.x, idx.x)
    np.testing.assert_array_equal(raw.y, idx.y)
    np.testing.assert_array_equal(raw.test[0], idx.test[0])  # train/ and test/: the official test set
    np.testing.assert_array_equal(raw.test[1], idx.test[1])
    assert raw.sha256() == idx.sha256() and raw.num_classes == 10
    assert make_splits(raw.x, raw.y, 0, 0.1, 0.2, raw.test).indices_sha256 == \
        make_splits(idx.x, idx.y, 0, 0.1, 0.2, idx.test).indices_sha256

    a = _train(cli, tmp_path / "idx", "--dataset", "fashion-mnist")
    b = _train(cli, tmp_path / "png", "--dataset", f"folder:{root}")
    assert b.summary["test_accuracy"] == a.summary["test_accuracy"] > 0.7
    assert (b.summary["n_train"], b.summary["n_val"], b.summary["n_test"]) == (54000, 6000, 10000)
    for name in ("weights.safetensors", "metrics.parquet", "arch.json"):
        assert (tmp_path / "idx" / name).read_bytes() == (tmp_path / "png" / name).read_bytes(), name
    (da,), (db,) = a.manifest["inputs"], b.manifest["inputs"]
    assert (da["data_sha256"], da["split_sha256"]) == (db["data_sha256"], db["split_sha256"])
    assert db["source"].startswith(f"image folder {root}, classes (sorted subfolder names) 0, 1, 2")


# --- folder:PATH ---------------------------------------------------------------------------------------

def test_folder_classes_order_and_colour(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 3, 5, 7), dtype=np.uint8)
    y = np.array([1, 0, 1, 0, 0, 1])
    write_tree(tmp_path, x, y, names=["cat", "dog"])
    Image.fromarray(x[2, 0]).save(tmp_path / "dog" / "00002.png")  # one grey image among colour ones
    raw = load_dataset(f"folder:{tmp_path}")
    assert raw.x.shape == (6, 3, 5, 7) and raw.test is None  # read as colour: grey is R = G = B
    assert raw.y.tolist() == y.tolist()  # classes by sorted name, images by file name across classes
    np.testing.assert_array_equal(raw.x[[0, 1, 3, 4, 5]], x[[0, 1, 3, 4, 5]])
    np.testing.assert_array_equal(raw.x[2], np.repeat(x[2, :1], 3, axis=0))
    assert raw.source == f"image folder {tmp_path}, classes (sorted subfolder names) cat, dog"
    assert load_dataset(f"folder:{tmp_path}").sha256() == raw.sha256()


def test_folder_image_size_resizes_and_later_stages_rebuild_it(cli, tmp_path):
    digits = load_dataset("digits")
    tree = tmp_path / "digits"
    write_tree(tree, digits.x, digits.y)
    big = tree / str(digits.y[5]) / "00005.png"
    Image.fromarray(np.kron(digits.x[5, 0], np.ones((2, 2), np.uint8))).save(big)  # 16x16
    out = tmp_path / "m"
    _one_line_error(cli("train-ann", "--dataset", f"folder:{tree}", "--out", out), out,
                    f"{big}: 16x16 pixels, the first image", "8x8", "--image-size")
    art = _train(cli, out, "--dataset", f"folder:{tree}", "--image-size", "12")
    assert art.params["image_size"] == 12 and art.path.name == "m"
    assert "resized to 12x12 (bilinear)" in art.manifest["inputs"][0]["source"]
    splits = model_splits(art)  # a later stage: the same tree, resized again
    assert splits["train"].x.shape[1:] == (1, 12, 12)
    assert sum(len(s.y) for s in splits.values()) == len(digits.y)

    moved = tmp_path / "moved"
    tree.rename(moved)
    with pytest.raises(CimtoolError, match="no such directory.*pass --data-dir with its new folder"):
        model_splits(art)
    assert len(model_splits(art, str(moved))["test"].y) == len(splits["test"].y)
    Image.fromarray(255 - digits.x[0, 0]).save(moved / str(digits.y[0]) / "00000.png")
    with pytest.raises(CimtoolError, match="differs from the one the model was trained on"):
        model_splits(art, str(moved))


def test_folder_with_train_and_test_keeps_the_test_split(cli, tmp_path):
    digits = load_dataset("digits")
    write_tree(tmp_path / "d" / "train", digits.x[:1500], digits.y[:1500])
    write_tree(tmp_path / "d" / "test", digits.x[1500:], digits.y[1500:])
    art = _train(cli, tmp_path / "m", "--dataset", f"folder:{tmp_path / 'd'}", "--val-frac", "0.2")
    assert art.summary["n_test"] == len(digits.y) - 1500
    assert art.summary["n_train"] + art.summary["n_val"] == 1500
    assert artifacts.load(tmp_path / "m").params["dataset"] == f"folder:{tmp_path / 'd'}"


def _corrupt(tree):
    (tree / "1" / "00003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tree / "1" / "00003.png"


def _empty_class(tree):
    (tree / "2").mkdir()
    return tree / "2"


@pytest.mark.parametrize("spoil, needle", [
    (_corrupt, "not a readable PNG or JPEG image"),
    (_empty_class, "no PNG or JPEG images (class 2)"),
    (lambda tree: shutil.rmtree(tree) or tree, "no such directory"),
    (lambda tree: (shutil.rmtree(tree), tree.mkdir()) and tree, "no class subfolders"),
])
def test_bad_folder_is_one_line(cli, tmp_path, spoil, needle):
    tree = tmp_path / "tree"
    write_tree(tree, np.zeros((4, 1, 3, 3), np.uint8), np.array([0, 1, 0, 1]))
    named = spoil(tree)
    out = tmp_path / "out"
    _one_line_error(cli("train-ann", "--dataset", f"folder:{tree}", "--out", out), out, named, needle)


# --- npz:PATH ------------------------------------------------------------------------------------------

def test_npz_is_the_digits_data_set(cli, tmp_path):
    digits = load_dataset("digits")
    np.savez(tmp_path / "digits.npz", x=digits.x, y=digits.y)
    raw = load_dataset(f"npz:{tmp_path / 'digits.npz'}")
    assert raw.sha256() == digits.sha256() and raw.test is None and raw.num_classes == 10
    assert raw.source == f"npz file {tmp_path / 'digits.npz'}"
    a = _train(cli, tmp_path / "a", "--dataset", "digits")
    b = _train(cli, tmp_path / "b", "--dataset", f"npz:{tmp_path / 'digits.npz'}")
    assert a.summary["test_accuracy"] == b.summary["test_accuracy"]
    assert (tmp_path / "a" / "weights.safetensors").read_bytes() == \
        (tmp_path / "b" / "weights.safetensors").read_bytes()
    assert b.manifest["inputs"][0]["split_sha256"] == a.manifest["inputs"][0]["split_sha256"]
    assert len(model_splits(b)["test"].y) == b.summary["n_test"]


def test_npz_official_test_and_grey_images(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 4, 4), dtype=np.uint8)  # [N, H, W]: grayscale
    np.savez(tmp_path / "d.npz", x=x[:15], y=np.arange(15) % 3, x_test=x[15:], y_test=np.arange(5) % 3)
    monkeypatch.setenv("HOME", str(tmp_path))
    raw = load_dataset("npz:~/d.npz")  # the ~ the shell leaves alone after 'npz:'
    assert raw.x.shape == (15, 1, 4, 4) and raw.test[0].shape == (5, 1, 4, 4)
    np.testing.assert_array_equal(raw.test[0][:, 0], x[15:])
    assert raw.num_classes == 3


IMAGES = np.zeros((4, 1, 2, 2), np.uint8)
LABELS = np.array([0, 1, 0, 1])


@pytest.mark.parametrize("arrays, needle", [
    ({"x": np.array([object(), 1], dtype=object), "y": LABELS}, "array 'x' holds Python objects"),
    ({"x": IMAGES, "y": np.array([0, 1, 0, -1])}, "array 'y' holds label -1"),
    ({"x": IMAGES, "y": np.array([0, 2, 0, 2])}, "class 1 of 0..2 never occurs"),
    ({"x": IMAGES.astype(np.float32), "y": LABELS}, "array 'x' is float32; cimtool reads uint8"),
    ({"x": np.zeros((4, 10), np.uint8), "y": LABELS}, "array 'x' has shape [4, 10]"),
    ({"x": np.zeros((4, 2, 2, 3), np.uint8), "y": LABELS}, "x.transpose(0, 3, 1, 2)"),
    ({"x": IMAGES, "y": LABELS[:3]}, "array 'y' has 3 labels for the 4 images"),
    ({"x": IMAGES, "y": LABELS.astype(float)}, "array 'y' is float64"),
    ({"x": IMAGES}, "no array 'y'"),
    ({"x": IMAGES, "y": LABELS, "x_test": IMAGES}, "no array 'y_test'"),
    ({"x": IMAGES, "y": LABELS, "X": IMAGES}, "unexpected array 'X'"),
])
def test_bad_npz_is_one_line(cli, tmp_path, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    out = tmp_path / "out"
    _one_line_error(cli("train-ann", "--dataset", f"npz:{path}", "--out", out), out, path, needle)


def test_npz_that_is_not_an_npz_is_one_line(cli, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 junk")
    _one_line_error(cli("train-ann", "--dataset", f"npz:{tmp_path / 'junk.npz'}", "--out", out), out,
                    "not a readable .npz file")
    np.save(tmp_path / "one.npy", IMAGES)
    _one_line_error(cli("train-ann", "--dataset", f"npz:{tmp_path / 'one.npy'}", "--out", out), out,
                    "a single .npy array, not an .npz archive")
    _one_line_error(cli("train-ann", "--dataset", f"npz:{tmp_path / 'nope.npz'}", "--out", out), out,
                    f"--dataset npz:{tmp_path / 'nope.npz'}: no such file")


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "folder"], "--dataset folder needs its path: --dataset folder:PATH"),
    (["--dataset", "mnist:x"], "--dataset mnist takes no path"),
    (["--dataset", "pets:x"], "unknown --dataset 'pets:x' (choose from: mnist5k, digits"),
    (["--dataset", "folder:x", "--data-dir", "y"], "--data-dir does not apply to --dataset folder:PATH"),
    (["--dataset", "npz:x", "--image-size", "8"], "--image-size applies to --dataset folder:PATH, not npz:x"),
    (["--dataset", "folder:x", "--image-size", "0"], "--image-size must be at least 1 pixel"),
])
def test_dataset_names_and_options_are_checked(cli, tmp_path, args, needle):
    out = tmp_path / "out"
    _one_line_error(cli("train-ann", *args, "--out", out), out, needle)
