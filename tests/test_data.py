import gzip
import json
import shutil

import numpy as np
import pytest

from cimtool import artifacts
from cimtool.data import load_dataset, make_splits, mnist_idx
from cimtool.data.idx import IMAGES_MAGIC, read_idx
from cimtool.errors import CimtoolError
from tests.conftest import write_idx


def test_mnist5k_is_the_real_embedded_subset():
    raw = load_dataset("mnist5k")
    assert raw.x.shape == (5000, 1, 28, 28) and raw.x.dtype == np.uint8
    assert np.bincount(raw.y).tolist() == [500] * 10
    assert raw.x.max() == 255 and raw.test is None
    assert 0.1 < raw.x.mean() / 255 < 0.2  # MNIST's ink coverage


def test_digits():
    raw = load_dataset("digits")
    assert raw.x.shape == (1797, 1, 8, 8) and raw.num_classes == 10


def test_split_is_stratified_disjoint_and_seeded():
    raw = load_dataset("mnist5k")
    s = make_splits(raw.x, raw.y, seed=0, val_frac=0.1, test_frac=0.2)
    assert (len(s.train), len(s.val), len(s.test)) == (3500, 500, 1000)
    assert np.bincount(s.test.y).tolist() == [100] * 10
    assert np.bincount(s.val.y).tolist() == [50] * 10
    # the split is shuffled, not sorted by label
    assert (np.diff(s.train.y) != 0).mean() > 0.5
    again = make_splits(raw.x, raw.y, seed=0, val_frac=0.1, test_frac=0.2)
    other = make_splits(raw.x, raw.y, seed=1, val_frac=0.1, test_frac=0.2)
    assert again.indices_sha256 == s.indices_sha256 != other.indices_sha256
    rows = {r.tobytes() for r in s.test.x.reshape(len(s.test), -1)}
    assert not any(r.tobytes() in rows for r in s.train.x.reshape(len(s.train), -1)[:500])


def test_official_test_set_is_kept(mnist_idx_dir):
    raw = load_dataset("mnist", mnist_idx_dir)
    assert raw.x.shape == (4000, 1, 28, 28) and raw.test[0].shape == (1000, 1, 28, 28)
    s = make_splits(raw.x, raw.y, 0, 0.1, 0.2, raw.test)
    assert len(s.test) == 1000 and len(s.train) + len(s.val) == 4000


def test_idx_plain_and_gzip_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(read_idx(tmp_path / name, IMAGES_MAGIC), arr)


def test_idx_wrong_magic_and_truncation(tmp_path):
    arr = np.zeros((3, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "bad", arr, magic=0x0803 + 0x100)
    with pytest.raises(CimtoolError, match="wrong IDX magic number"):
        read_idx(tmp_path / "bad", IMAGES_MAGIC)
    write_idx(tmp_path / "ok", arr)
    data = (tmp_path / "ok").read_bytes()
    (tmp_path / "cut").write_bytes(data[:-10])
    with pytest.raises(CimtoolError, match="truncated"):
        read_idx(tmp_path / "cut", IMAGES_MAGIC)
    with gzip.open(tmp_path / "cut.gz", "wb") as fh:
        fh.write(data[:100])
    with pytest.raises(CimtoolError, match="truncated"):
        read_idx(tmp_path / "cut.gz", IMAGES_MAGIC)
    (tmp_path / "notgz.gz").write_bytes(b"plain bytes")
    with pytest.raises(CimtoolError, match="cannot read IDX"):
        read_idx(tmp_path / "notgz.gz", IMAGES_MAGIC)


def test_missing_data_dir_says_what_is_expected(tmp_path):
    with pytest.raises(CimtoolError, match="needs --data-dir"):
        load_dataset("mnist")
    with pytest.raises(CimtoolError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(CimtoolError, match="data_batch_1.bin"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(CimtoolError, match="no such directory"):
        load_dataset("cifar10", tmp_path / "nope")


def _cifar_records(n, rng):
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels[:, None], pixels], axis=1), labels, pixels


def test_cifar10_binary_format(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected = []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records, labels, pixels = _cifar_records(7, rng)
        records.tofile(folder / name)
        expected.append((labels, pixels))
    raw = load_dataset("cifar10", tmp_path)
    assert raw.x.shape == (35, 3, 32, 32)
    np.testing.assert_array_equal(raw.y[:7], expected[0][0])
    # channel-major layout: the first 1024 bytes of a record are the red plane
    np.testing.assert_array_equal(raw.x[0, 0].ravel(), expected[0][1][0, :1024])
    np.testing.assert_array_equal(raw.test[1], expected[5][0])
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(CimtoolError, match="whole number"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_pickle_needs_opt_in(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"not even a pickle")
    with pytest.raises(CimtoolError, match="--allow-pickle"):
        load_dataset("cifar10", tmp_path)


@pytest.fixture
def fashion_dir():
    """The folder of Debian's dataset-fashion-mnist package; the test skips without it."""
    if not mnist_idx.FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"{mnist_idx.FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)")
    return mnist_idx.FASHION_MNIST_DIR


def test_fashion_mnist_from_the_default_folder(fashion_dir):
    raw = load_dataset("fashion-mnist")  # no --data-dir: the package's folder
    assert raw.x.shape == (60000, 1, 28, 28) and raw.x.dtype == np.uint8
    assert raw.test[0].shape == (10000, 1, 28, 28) and raw.test[0].dtype == np.uint8
    assert raw.num_classes == 10
    assert np.bincount(raw.y).tolist() == [6000] * 10
    assert np.bincount(raw.test[1]).tolist() == [1000] * 10
    # the Fashion-MNIST files, not MNIST's: first labels ankle boot, T-shirt, T-shirt, dress, ...
    assert raw.y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert raw.test[1][:5].tolist() == [9, 2, 1, 1, 6]
    assert 0.27 < raw.x.mean() / 255 < 0.30  # clothes cover far more of the frame than digits (~0.13)
    assert str(fashion_dir) in raw.source and raw.source.startswith("Fashion-MNIST IDX files")
    s = make_splits(raw.x, raw.y, 0, 0.1, 0.2, raw.test)
    assert (len(s.train), len(s.val), len(s.test)) == (54000, 6000, 10000)
    assert load_dataset("fashion-mnist", fashion_dir).sha256() == raw.sha256()


def test_fashion_mnist_missing_default_folder_names_the_package(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_idx, "FASHION_MNIST_DIR", tmp_path / "not-installed")
    with pytest.raises(CimtoolError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    root = tmp_path / "root"
    result = cli("train-ann", "--dataset", "fashion-mnist", "--artifacts-root", root)
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert result.err.startswith("cimtool: error: --dataset fashion-mnist: ")
    assert str(tmp_path / "not-installed") in result.err
    assert "`apt-get install dataset-fashion-mnist`" in result.err and "--data-dir" in result.err
    assert not root.exists()


@pytest.mark.parametrize("folder, pattern", [
    ("nope", "no such directory"),
    ("empty", "missing train-images-idx3-ubyte[.gz]; expected the four Fashion-MNIST IDX files"),
])
def test_fashion_mnist_bad_data_dir_is_one_line(cli, tmp_path, folder, pattern):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    result = cli("train-ann", "--dataset", "fashion-mnist", "--data-dir", tmp_path / folder,
                 "--out", out)
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"cimtool: error: --data-dir {tmp_path / folder}: ")
    assert pattern in result.err and "Traceback" not in result.err
    assert not out.exists() and not (tmp_path / "out.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_fashion_mnist_default_folder_is_rebuilt_by_later_stages(cli, tmp_path, monkeypatch,
                                                                 mnist_idx_dir):
    """Trained without --data-dir: the manifest names the folder, model_splits reads it again."""
    from cimtool.models.io import model_splits

    default = tmp_path / "share" / "fashion-mnist"
    shutil.copytree(mnist_idx_dir, default)  # small IDX files standing in for the package's
    monkeypatch.setattr(mnist_idx, "FASHION_MNIST_DIR", default)
    out = tmp_path / "m"
    result = cli("train-ann", "--dataset", "fashion-mnist", "--method", "avgpool_8x8", "--epochs", "1",
                 "--out", out, "--quiet", "--json")
    assert result.code == 0, result.err
    art = artifacts.load(json.loads(result.out)["artifact"], "model")
    assert art.params["dataset"] == "fashion-mnist" and art.params["data_dir"] is None
    recorded = art.manifest["inputs"][0]
    assert recorded["source"] == f"Fashion-MNIST IDX files in {default}"
    splits = model_splits(art)
    assert len(splits["test"].y) == 1000 and len(splits["train"].y) + len(splits["val"].y) == 4000
    assert art.summary["n_test"] == 1000
    (default / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(CimtoolError, match="missing t10k-labels-idx1-ubyte"):
        model_splits(art)
